"""Network-bound cost: a training step when the workers are network hosts of their own, behind
shaped links, against model size.

    sudo python benchmarks/network.py [--hidden 64,256,1024,5000] [--rates unlimited,1gbit,100mbit]

Topology (built and torn down by this script, run as root; names start with ``dfn``): a bridge
``dfnbr0`` (10.77.0.1/24) holds the Spark master; the driver (this script, re-run inside the
namespace with ``--inner``) runs in a network namespace of its own (``dfnet-d``, 10.77.0.2) and
each of --workers 1-core Spark workers in one of its own (``dfnet-w1``, 10.77.0.11, ...), each
joined to the bridge by a veth pair. Both ends of every veth get a ``tc tbf`` qdisc at the link
rate (the kernel here has tbf but no netem: bandwidth, not delay), so every host's traffic in
and out, driver included, crosses a link of that rate, as on a switched cluster.

Work: the first --rows Fashion-MNIST training rows (few, so that the network, not the
arithmetic, dominates), 784-H-10 float32 for each H of --hidden (50,890 to 3,975,010 weights),
one full-batch step per epoch (the classic schedule, every row, Adam), on each of --partitions
(2 and 4: the partial sums grow with the partitions, the broadcast with the executors), with
``--aggregate collect`` (each task's partial vector straight to the driver) and ``agg``
(the partial rows shuffled to one reduce task, its sum to the driver). The median of the
epochs after the first is reported for every (rate, network, aggregate).

The model: a step costs ``fixed + per_weight * W + b * 4W / rate + s * 8W * P / rate`` for W
weights, P partitions and a link rate in bytes/s: the broadcast of the float32 weights (4W
bytes, which every executor receives once, in parallel, over its own link: Spark's
TorrentBroadcast lets executors share pieces, so the driver's link carries about one copy) and
the float64 partial sums (8W bytes a partition), which all converge on ONE link: the driver's
with ``collect``, the reduce task's with ``agg`` (then one sum to the driver). ``b`` and ``s``
(1 for a link used perfectly) are fitted by least squares on relative error on the smallest and
the largest network, and checked on the others (points it was not fitted on); then projected for
8, 32 and 128 workers (one partition each) on a 10 Gbit/s network.
Saves benchmarks/results/<--name>.json and .html.
"""

from __future__ import annotations

import argparse
import json
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import default_data_dir, environment, save_results

from dfnet.config import TrainConfig
from dfnet.datasets import get_dataset, load_arrays, to_dataframe
from dfnet.local_spark import StandaloneCluster
from dfnet.session import get_or_create_spark
from dfnet.train import fit

BRIDGE, MASTER_IP, DRIVER_IP, PREFIX = "dfnbr0", "10.77.0.1", "10.77.0.2", "10.77.0"
DRIVER_NS = "dfnet-d"
RATES_BITS = {"unlimited": None, "10gbit": 10e9, "1gbit": 1e9, "100mbit": 100e6}


def run(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True, text=True)


def host_names(k: int) -> tuple[str, str, str, str]:
    """Namespace, bridge-side veth, namespace-side veth, address of host ``k``: 0 is the driver,
    1.. the workers."""
    if k == 0:
        return DRIVER_NS, "dfn-dh", "dfn-dn", DRIVER_IP
    return f"dfnet-w{k}", f"dfn-w{k}h", f"dfn-w{k}n", f"{PREFIX}.{10 + k}"


@contextlib.contextmanager
def topology(workers: int):
    """The bridge and one namespace + veth pair per worker; removed afterwards (by name)."""
    try:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{MASTER_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for k in range(0, workers + 1):
            ns, host_end, ns_end, address = host_names(k)
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            run("ip", "link", "set", ns_end, "netns", ns)
            run("ip", "link", "set", host_end, "master", BRIDGE)
            run("ip", "link", "set", host_end, "up")
            run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", ns_end)
            run("ip", "netns", "exec", ns, "ip", "link", "set", ns_end, "up")
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield [host_names(k)[3] for k in range(1, workers + 1)], [host_names(k)[0] for k in range(1, workers + 1)]
    finally:
        for k in range(0, workers + 1):
            ns, host_end, _, _ = host_names(k)
            run("ip", "link", "del", host_end, check=False)  # takes its peer along
            run("ip", "netns", "del", ns, check=False)
        run("ip", "link", "del", BRIDGE, check=False)


def shape(workers: int, rate: str, bridge_netns: str) -> None:
    """Every host's link (driver and workers) at ``rate``, both ends, or unshaped. The bridge-side
    ends live in ``bridge_netns`` (a /proc/PID/ns/net path): the driver calls this from inside its
    own namespace."""
    bits = RATES_BITS[rate]
    for k in range(0, workers + 1):
        ns, host_end, ns_end, _ = host_names(k)
        for prefix, dev in ((("nsenter", f"--net={bridge_netns}"), host_end), (("ip", "netns", "exec", ns), ns_end)):
            run(*prefix, "tc", "qdisc", "del", "dev", dev, "root", check=False)
            if bits is not None:
                burst = max(int(bits / 8 / 100), 32 * 1024)  # 10 ms of traffic, at least 32 KB
                run(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{int(bits)}bit",
                    "burst", str(burst), "latency", "100ms")


def terms(weights: int, partitions: int, rate_bytes: float | None) -> list[float]:
    """The model's terms: 1, W, broadcast seconds at full rate, partial-sum seconds at full rate."""
    if not rate_bytes:
        return [1.0, float(weights), 0.0, 0.0]
    return [1.0, float(weights), 4.0 * weights / rate_bytes, 8.0 * (weights + 3) * partitions / rate_bytes]


def fit_model(points: list[dict]) -> np.ndarray:
    """Least squares on relative error (each point's row divided by its seconds)."""
    A = np.array([terms(p["weights"], p["partitions"], p["rate_bytes"]) for p in points])
    y = np.array([p["seconds"] for p in points])
    coef, *_ = np.linalg.lstsq(A / y[:, None], np.ones(len(y)), rcond=None)
    return coef


def predict(coef: np.ndarray, weights: int, partitions: int, rate_bytes: float | None) -> float:
    return float(np.dot(coef, terms(weights, partitions, rate_bytes)))


def measure(args) -> dict:
    """The driver's part (``--inner``, inside the driver's namespace): every (rate, network,
    partitions, aggregate) point on the running cluster at ``args.master``."""
    images, labels = load_arrays("fashion-mnist", "train", args.data_dir)
    images, labels = images[:args.rows], labels[:args.rows]
    conf = {"spark.driver.host": DRIVER_IP, "spark.driver.bindAddress": DRIVER_IP,
            "spark.executor.memory": "4g", "spark.executor.cores": "1",
            "spark.pyspark.python": sys.executable, "spark.driver.maxResultSize": "2g",
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s"}
    os.environ["SPARK_LOCAL_IP"] = DRIVER_IP
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-network", conf=conf,
                                warehouse=Path(args.workdir) / "warehouse")
    points = []
    try:
        env = environment(spark)
        df = to_dataframe(spark, images, labels, max_value=get_dataset("fashion-mnist").max_value).cache()
        df.count()
        for rate in args.rates.split(","):
            shape(args.workers, rate, args.bridge_netns)
            for h in [int(h) for h in args.hidden.split(",")]:
                for partitions in [int(p) for p in args.partitions.split(",")]:
                    for aggregate in args.aggregates.split(","):
                        config = TrainConfig(hidden=(h,), schedule="classic", sample=1.0, optimizer="adam",
                                             lr_schedule="constant", epochs=args.epochs, partitions=partitions,
                                             aggregate=aggregate, seed=0)
                        model = fit(df, config, verbose=False)
                        seconds = statistics.median(r["seconds"] for r in model.history[1:])
                        bits = RATES_BITS[rate]
                        points.append({"rate": rate, "rate_bytes": bits / 8 if bits else None, "hidden": h,
                                       "weights": model.network.num_params, "partitions": partitions,
                                       "aggregate": aggregate, "seconds": seconds,
                                       "epochs": [r["seconds"] for r in model.history]})
                        print(f"{rate:>9s}  784-{h}-10 ({model.network.num_params:>9,} weights)  P={partitions}  "
                              f"{aggregate:7s}  {seconds:7.3f} s", flush=True)
    finally:
        shape(args.workers, "unlimited", args.bridge_netns)
        spark.stop()
    return {"environment": env, "points": points}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", default="64,256,1024,5000")
    parser.add_argument("--rates", default="unlimited,1gbit,100mbit")
    parser.add_argument("--partitions", default="2,4")
    parser.add_argument("--aggregates", default="collect,agg")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="network")
    parser.add_argument("--inner", default=None, help=argparse.SUPPRESS)  # the driver's part writes here
    parser.add_argument("--master", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bridge-netns", default=f"/proc/{os.getpid()}/ns/net", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        Path(args.inner).write_text(json.dumps(measure(args)))
        return 0
    if os.geteuid() != 0 or not shutil.which("tc"):
        print("benchmarks/network.py builds network namespaces and tc qdiscs: run it as root, with iproute2")
        return 2

    with tempfile.TemporaryDirectory(prefix="dfnet-network-") as tmp, topology(args.workers) as (hosts, spaces):
        cluster = StandaloneCluster(Path(tmp), worker_memory="6g", host=MASTER_IP,
                                    worker_hosts=list(zip(hosts, spaces)))
        try:
            cluster.start_master()
            cluster.set_workers(args.workers)
            out = Path(tmp) / "points.json"
            inner = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--inner", str(out),
                     "--master", cluster.url, "--workdir", tmp, "--bridge-netns", f"/proc/{os.getpid()}/ns/net"]
            subprocess.run(["ip", "netns", "exec", DRIVER_NS, *inner], check=True)
            measured = json.loads(out.read_text())
        finally:
            cluster.stop()
    points = measured["points"]

    # The model: fitted on the smallest and the largest network, checked on the rest.
    hidden_sizes = sorted({p["hidden"] for p in points})
    edge = {hidden_sizes[0], hidden_sizes[-1]}
    coef = fit_model([p for p in points if p["hidden"] in edge])
    for p in points:
        p["predicted"] = predict(coef, p["weights"], p["partitions"], p["rate_bytes"])
        p["error"] = p["predicted"] / p["seconds"] - 1
        p["fitted"] = p["hidden"] in edge
    checked = [abs(p["error"]) for p in points if not p["fitted"]]
    projection = []
    rate_10g = 10e9 / 8
    for name, weights in (("784-256-128-10", 235_146), ("4M weights", 4_000_000)):
        for workers in (8, 32, 128):
            t = terms(weights, workers, rate_10g)
            projection.append({"network": name, "weights": weights, "workers": workers, "partitions": workers,
                               "rate": "10gbit", "seconds": predict(coef, weights, workers, rate_10g),
                               "broadcast_s": float(coef[2] * t[2]), "partials_s": float(coef[3] * t[3]),
                               "fixed_and_compute_s": float(coef[0] + coef[1] * weights)})
    table = ["| rate | network | weights | P | aggregate | s/step | model | error |",
             "|---|---|---|---|---|---|---|---|"]
    for p in points:
        table.append(f"| {p['rate']} | 784-{p['hidden']}-10 | {p['weights']:,} | {p['partitions']} | {p['aggregate']} | "
                     f"{p['seconds']:.3f} | {p['predicted']:.3f}{'' if p['fitted'] else ' (not fitted)'} | "
                     f"{100 * p['error']:+.0f}% |")
    ptable = ["| network | workers | s/step | broadcast s | partial sums s | fixed + compute s |", "|---|---|---|---|---|---|"]
    for q in projection:
        ptable.append(f"| {q['network']} | {q['workers']} | {q['seconds']:.3f} | {q['broadcast_s']:.3f} | "
                      f"{q['partials_s']:.3f} | {q['fixed_and_compute_s']:.3f} |")
    print("\n".join(table))
    summary = (f"model: {coef[0]:.3f} s + {coef[1] * 1e6:.3f} s per million weights + {coef[2]:.2f} x broadcast "
               f"+ {coef[3]:.2f} x partial sums at the link rate")
    if checked:
        summary += (f"; error on points not fitted: median {100 * statistics.median(checked):.0f}%, "
                    f"max {100 * max(checked):.0f}%")
    print(summary)
    print("\n".join(ptable))
    payload = {"environment": measured["environment"], "options": vars(args), "points": points,
               "model": {"fixed_s": coef[0], "per_weight_s": coef[1], "broadcast_factor": coef[2],
                         "partials_factor": coef[3], "fitted_on_hidden": sorted(edge),
                         "error_not_fitted": ({"median": statistics.median(checked), "max": max(checked)}
                                              if checked else None)},
               "projection": projection, "table": table, "projection_table": ptable, "summary": summary}
    path = save_results(args.name, payload, figure(points))
    print(f"saved {path}")
    return 0


def figure(points: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for rate in dict.fromkeys(p["rate"] for p in points):
        for aggregate in dict.fromkeys(p["aggregate"] for p in points):
            for partitions in sorted({p["partitions"] for p in points}):
                sel = [p for p in points if p["rate"] == rate and p["aggregate"] == aggregate
                       and p["partitions"] == partitions]
                fig.add_trace(go.Scatter(x=[p["weights"] for p in sel], y=[p["seconds"] for p in sel],
                                         mode="lines+markers", name=f"{rate}, {aggregate}, P={partitions}"))
    fig.update_layout(title="Step seconds against model size, worker links shaped with tc tbf",
                      xaxis=dict(title="weights", type="log"), yaxis=dict(title="seconds per step", type="log"))
    return fig


if __name__ == "__main__":
    sys.exit(main())
