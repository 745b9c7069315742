"""Network-bound cost: a training step when the workers are network hosts of their own, behind
shaped links, against model size.

    sudo python benchmarks/network.py [--hidden 64,256,1024,5000] [--rates unlimited,1gbit,100mbit]

Topology (built and torn down by this script, run as root; names start with ``dfn``): a bridge
``dfnbr0`` (10.77.0.1/24) in this network namespace holds the driver and the Spark master;
each of --workers 1-core Spark workers runs in a network namespace of its own (``dfnet-w1``,
10.77.0.11, ...) joined to the bridge by a veth pair. Each veth end gets a ``tc tbf`` qdisc
at the link rate (the kernel here has tbf but no netem: bandwidth, not delay), so a worker's
traffic in and out, to the driver and to the other worker, crosses a link of that rate. The
driver's own side (the bridge) is not shaped.

Work: the first --rows Fashion-MNIST training rows (few, so that the network, not the
arithmetic, dominates), 784-H-10 float32 for each H of --hidden (50,890 to 3,975,010 weights),
one full-batch step per epoch (the classic schedule, every row, Adam), 2 partitions, with
``--aggregate collect`` (each task's partial vector straight to the driver) and ``agg``
(the partial rows shuffled to one reduce task, its sum to the driver). The median of the
epochs after the first is reported for every (rate, network, aggregate).

Bytes that cross the worker links in one step: the weights broadcast to each executor
(4 bytes a weight, float32; Spark's TorrentBroadcast lets executors share pieces, but each
executor receives every piece once) and the partial sums (8 bytes a weight, float64, one row
per partition: to the driver with collect; with agg, one row crosses to the reduce task's
worker and the sum to the driver). A least-squares model
``seconds = fixed + compute * weights + bytes / (efficiency * rate)`` is fitted on the
smallest and the largest network and checked on the others (points it was not fitted on),
then projected for 8, 32 and 128 workers on a 10 Gbit/s network.
Saves benchmarks/results/<--name>.json and .html.
"""

from __future__ import annotations

import argparse
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

BRIDGE, DRIVER_IP, PREFIX = "dfnbr0", "10.77.0.1", "10.77.0"
RATES_BITS = {"unlimited": None, "10gbit": 10e9, "1gbit": 1e9, "100mbit": 100e6}


def run(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True, text=True)


def worker_names(k: int) -> tuple[str, str, str, str]:
    """Namespace, host-side veth, namespace-side veth, address of worker ``k`` (1-based)."""
    return f"dfnet-w{k}", f"dfn-w{k}h", f"dfn-w{k}n", f"{PREFIX}.{10 + k}"


@contextlib.contextmanager
def topology(workers: int):
    """The bridge and one namespace + veth pair per worker; removed afterwards (by name)."""
    try:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{DRIVER_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for k in range(1, workers + 1):
            ns, host_end, ns_end, address = worker_names(k)
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            run("ip", "link", "set", ns_end, "netns", ns)
            run("ip", "link", "set", host_end, "master", BRIDGE)
            run("ip", "link", "set", host_end, "up")
            run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", ns_end)
            run("ip", "netns", "exec", ns, "ip", "link", "set", ns_end, "up")
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield [worker_names(k)[3] for k in range(1, workers + 1)], [worker_names(k)[0] for k in range(1, workers + 1)]
    finally:
        for k in range(1, workers + 1):
            ns, host_end, _, _ = worker_names(k)
            run("ip", "link", "del", host_end, check=False)  # takes its peer along
            run("ip", "netns", "del", ns, check=False)
        run("ip", "link", "del", BRIDGE, check=False)


def shape(workers: int, rate: str) -> None:
    """Every worker link at ``rate`` (both ends), or unshaped."""
    bits = RATES_BITS[rate]
    for k in range(1, workers + 1):
        ns, host_end, ns_end, _ = worker_names(k)
        for prefix, dev in (((), host_end), (("ip", "netns", "exec", ns), ns_end)):
            run(*prefix, "tc", "qdisc", "del", "dev", dev, "root", check=False)
            if bits is not None:
                burst = max(int(bits / 8 / 100), 32 * 1024)  # 10 ms of traffic, at least 32 KB
                run(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{int(bits)}bit",
                    "burst", str(burst), "latency", "100ms")


def bytes_per_step(weights: int, executors: int, partitions: int, aggregate: str) -> int:
    broadcast = 4 * weights * executors
    partials = 8 * (weights + 3) * partitions if aggregate == "collect" else 8 * (weights + 3) * 2
    return broadcast + partials


def fit_model(points: list[dict]) -> np.ndarray:
    """Least squares on relative error of seconds = a + b * weights + c * bytes / rate_bytes."""
    A = np.array([[1.0, p["weights"], p["bytes"] / p["rate_bytes"] if p["rate_bytes"] else 0.0] for p in points])
    y = np.array([p["seconds"] for p in points])
    coef, *_ = np.linalg.lstsq(A / y[:, None], np.ones(len(y)), rcond=None)
    return coef


def predict(coef: np.ndarray, weights: int, nbytes: float, rate_bytes: float | None) -> float:
    return float(coef[0] + coef[1] * weights + (coef[2] * nbytes / rate_bytes if rate_bytes else 0.0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", default="64,256,1024,5000")
    parser.add_argument("--rates", default="unlimited,1gbit,100mbit")
    parser.add_argument("--aggregates", default="collect,agg")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="network")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("tc"):
        print("benchmarks/network.py builds network namespaces and tc qdiscs: run it as root, with iproute2")
        return 2
    hidden_sizes = [int(h) for h in args.hidden.split(",")]
    rates, aggregates = args.rates.split(","), args.aggregates.split(",")
    images, labels = load_arrays("fashion-mnist", "train", args.data_dir)
    images, labels = images[:args.rows], labels[:args.rows]

    points = []
    with tempfile.TemporaryDirectory(prefix="dfnet-network-") as tmp, topology(args.workers) as (hosts, spaces):
        cluster = StandaloneCluster(Path(tmp), worker_memory="6g", host=DRIVER_IP,
                                    worker_hosts=list(zip(hosts, spaces)))
        spark = None
        try:
            cluster.start_master()
            cluster.set_workers(args.workers)
            conf = {"spark.driver.host": DRIVER_IP, "spark.driver.bindAddress": DRIVER_IP,
                    "spark.executor.memory": "4g", "spark.executor.cores": "1",
                    "spark.pyspark.python": sys.executable, "spark.driver.maxResultSize": "2g",
                    "spark.scheduler.minRegisteredResourcesRatio": "1.0",
                    "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s"}
            os.environ["SPARK_LOCAL_IP"] = DRIVER_IP
            spark = get_or_create_spark(cluster.url, app_name="dfnet-bench-network", conf=conf,
                                        warehouse=Path(tmp) / "warehouse")
            env = environment(spark)
            df = to_dataframe(spark, images, labels, max_value=get_dataset("fashion-mnist").max_value).cache()
            df.count()
            for rate in rates:
                shape(args.workers, rate)
                for h in hidden_sizes:
                    for aggregate in aggregates:
                        config = TrainConfig(hidden=(h,), schedule="classic", sample=1.0, optimizer="adam",
                                             lr_schedule="constant", epochs=args.epochs, partitions=2,
                                             aggregate=aggregate, seed=0)
                        model = fit(df, config, verbose=False)
                        seconds = statistics.median(r["seconds"] for r in model.history[1:])
                        weights = model.network.num_params
                        bits = RATES_BITS[rate]
                        point = {"rate": rate, "rate_bytes": bits / 8 if bits else None, "hidden": h,
                                 "weights": weights, "aggregate": aggregate, "seconds": seconds,
                                 "epochs": [r["seconds"] for r in model.history],
                                 "bytes": bytes_per_step(weights, args.workers, 2, aggregate)}
                        points.append(point)
                        print(f"{rate:>9s}  784-{h}-10 ({weights:>9,} weights)  {aggregate:7s}  {seconds:7.3f} s",
                              flush=True)
        finally:
            if spark is not None:
                spark.stop()
            cluster.stop()

    # The model: fitted on the smallest and largest network, checked on the rest.
    edge = {min(hidden_sizes), max(hidden_sizes)}
    fitted = [p for p in points if p["hidden"] in edge]
    coef = fit_model(fitted)
    for p in points:
        p["predicted"] = predict(coef, p["weights"], p["bytes"], p["rate_bytes"])
        p["error"] = p["predicted"] / p["seconds"] - 1
        p["fitted"] = p["hidden"] in edge
    checked = [abs(p["error"]) for p in points if not p["fitted"]]
    projection = []
    for name, weights in (("784-256-128-10", 235_146), ("4M weights", 4_000_000)):
        for workers in (8, 32, 128):
            for aggregate in aggregates:
                nbytes = bytes_per_step(weights, workers, workers, aggregate)
                projection.append({"network": name, "weights": weights, "workers": workers, "aggregate": aggregate,
                                   "rate": "10gbit", "bytes": nbytes,
                                   "seconds": predict(coef, weights, nbytes, 10e9 / 8),
                                   "network_seconds": float(coef[2] * nbytes / (10e9 / 8))})
    table = ["| rate | network | weights | aggregate | s/step | model | error |", "|---|---|---|---|---|---|---|"]
    for p in points:
        table.append(f"| {p['rate']} | 784-{p['hidden']}-10 | {p['weights']:,} | {p['aggregate']} | {p['seconds']:.3f} | "
                     f"{p['predicted']:.3f}{'' if p['fitted'] else ' (not fitted)'} | {100 * p['error']:+.0f}% |")
    print("\n".join(table))
    print(f"model: {coef[0]:.3f} s + {coef[1] * 1e6:.3f} s per million weights + bytes / ({1 / coef[2]:.2f} x rate); "
          f"error on points not fitted: median {100 * statistics.median(checked):.0f}%, max {100 * max(checked):.0f}%"
          if checked else "")
    for q in projection:
        print(f"projected 10 Gbit/s, {q['workers']:>3d} workers, {q['network']:>15s}, {q['aggregate']:7s}: "
              f"{q['seconds']:.3f} s/step, of which network {q['network_seconds']:.3f} s")
    payload = {"environment": env, "options": vars(args), "points": points,
               "model": {"fixed_s": coef[0], "per_weight_s": coef[1], "network_efficiency": 1 / coef[2],
                         "fitted_on_hidden": sorted(edge),
                         "error_not_fitted": {"median": statistics.median(checked), "max": max(checked)} if checked else None},
               "projection": projection, "table": table}
    path = save_results(args.name, payload, figure(points))
    print(f"saved {path}")
    return 0


def figure(points: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for rate in dict.fromkeys(p["rate"] for p in points):
        for aggregate in dict.fromkeys(p["aggregate"] for p in points):
            sel = [p for p in points if p["rate"] == rate and p["aggregate"] == aggregate]
            fig.add_trace(go.Scatter(x=[p["weights"] for p in sel], y=[p["seconds"] for p in sel],
                                     mode="lines+markers", name=f"{rate}, {aggregate}"))
    fig.update_layout(title="Step seconds against model size, worker links shaped with tc tbf",
                      xaxis=dict(title="weights", type="log"), yaxis=dict(title="seconds per step", type="log"))
    return fig


if __name__ == "__main__":
    sys.exit(main())
