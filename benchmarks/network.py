"""Network-bound cost: a training step when the workers are network hosts of their own, behind
shaped links, against model size, for each way of adding the partial sums.

    sudo python benchmarks/network.py [--hidden 64,256,1024,5000] [--rates unlimited,1gbit,100mbit]
        [--partitions 2,4] [--aggregates collect,agg,sharded] [--partials float64,float32]
        [--float32-rates 1gbit,100mbit] [--workers 4] [--epochs 5] [--name network]

Topology (built and torn down by this script, run as root; names start with ``dfn``): a bridge
``dfnbr0`` (10.77.0.1/24) holds the Spark master; the driver (this script, re-run inside the
namespace with ``--inner``) runs in a network namespace of its own (``dfnet-d``, 10.77.0.2) and
each of --workers 1-core Spark workers (6g, executors of 4g) in one of its own (``dfnet-w1``,
10.77.0.11, ...), each joined to the bridge by a veth pair. Both ends of every veth get a
``tc tbf`` qdisc at the link rate (the kernel here has tbf but no netem: bandwidth, not delay), so
every host's traffic in and out, driver included, crosses a link of that rate, as on a switched
cluster. Every host is its own IP, so Spark's locality sees one executor per host.

Work: the first --rows Fashion-MNIST training rows (few, so that the network, not the
arithmetic, dominates), 784-H-10 float32 for each H of --hidden (50,890 to 3,975,010 weights),
one full-batch step per epoch (the classic schedule, every row, Adam), on each of --partitions,
with each --aggregates (``collect``: each task's partial vector straight to the driver; ``agg``:
the partial rows shuffled to ONE reduce task, its sum to the driver; ``sharded``: each task's
vector cut into K chunk rows, each chunk added on its own reduce task, the driver receives K
slices) and each --partials type (``partial_dtype``: float64, or float32 on the wire, half the
bytes; --float32-rates limits the float32 points to some rates). Before the grid, one unshaped
warm-up fit per aggregate at the widest partition count, 4 epochs (not reported), takes the JVM's
and the Python workers' warm-up out of the first points. The
median of the epochs after the first is reported for every point. Spark's event log (written
to the run's temporary directory) gives each point's step jobs: the job's and each stage's
median duration, the reduce tasks' hosts (placement) and their remote shuffle bytes.
``--probe-broadcast`` also times, at each rate and partition count, a job of P one-row tasks that
only read a broadcast of the largest network's float32 weights (random: Spark compresses a
broadcast), after one untimed such job: the map stage's network without the step; with
``--probe-only`` nothing else. ``--spark-conf KEY=VALUE`` (repeatable) sets a Spark setting for the driver's session,
e.g. ``spark.shuffle.reduceLocality.enabled=false`` to see the reduce tasks' placement without
Spark's preference for the hosts holding map output.

The model (fitted by non-negative least squares on relative error), for W weights (V = W + 3
packed values), P partitions, link rate R in bytes/s, D bytes per partial value (8, or 4 for
float32 partials), K shards (the run's plan) and aggregate a:

    step = fixed[a] + per_weight * W + b * 4W*E/R + s[a] * bytes[a]/R + c[a] * values[a]

- ``4W*E/R``: the float32 weights' broadcast, counted once per executor that runs a task (E =
  min(P, executors)): each executor receives 4W bytes over its own link, and measured at 100 Mbit/s
  the map stage grew with E as if the driver's link carried most of the copies (all executors ask
  the driver for the pieces at once); the variant "broadcast once" counts one copy (executors
  sharing pieces perfectly);
- ``bytes[a]``, the partial sums on the busiest chain of links: collect ``D·V·P`` (every vector
  into the driver's link); agg ``D·V·P + 8V`` (every vector into the reduce task's link, then its
  float64 sum to the driver); sharded ``D·V·max(1, P/K) + 8V`` (each task sends its D·V bytes out
  over its own link while each of the K reducers receives D·V·P/K, at once; then the driver
  receives K float64 slices, 8V in all);
- ``values[a]``, the values the busiest adder decodes and adds (CPU; what remains on an unshaped
  link): collect and agg ``V·P`` (the driver, the one reduce task), sharded ``V·P/min(K, C) + V``
  (K reducers sharing C cores: this machine's 2; K of them on a cluster; and the driver's
  slices).

``--model shared`` fits one fixed, one s and one c for all aggregates (the byte and value counts
still differ per aggregate) instead. The model is fitted on the smallest and the largest hidden
size (--fit-hidden) and checked on the others (points it was not fitted on), then projected for
784-256-128-10 (235,146 weights) and 4M weights on 8, 32 and 128 workers (one partition and one
core each) on a 10 Gbit/s network, with K and ``auto``'s choice from ``dfnet.engine.sums``.
The driver's own part of a step (the Adam step on float32 weights, the mean, the broadcast's
creation, adding P vectors or joining K slices) is timed in numpy for the same sizes.
Saves benchmarks/results/<--name>.json and .html.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import default_data_dir, environment, save_results

from dfnet.bench.cost import fit_nonnegative
from dfnet.config import TrainConfig
from dfnet.datasets import get_dataset, load_arrays, to_dataframe
from dfnet.local_spark import StandaloneCluster
from dfnet.session import get_or_create_spark
from dfnet.train import fit

BRIDGE, MASTER_IP, DRIVER_IP, PREFIX = "dfnbr0", "10.77.0.1", "10.77.0.2", "10.77.0"
DRIVER_NS = "dfnet-d"
RATES_BITS = {"unlimited": None, "10gbit": 10e9, "1gbit": 1e9, "100mbit": 100e6}
AGGREGATES = ("collect", "agg", "sharded")
SCALARS = 3  # loss_sum, correct, count after the gradient in a packed partial vector
SHARD_MIN_VALUES = 8192
PROJECTED = (("784-256-128-10", 235_146), ("4M weights", 4_000_000))
PROJECTED_WORKERS = (8, 32, 128)


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


# --- the model ---------------------------------------------------------------------------------

def shards_for(values: int, slots: int) -> int:
    """K of a sharded sum: dfnet's own rule when it has one (dfnet.engine.sums.shards_for), else
    one shard per task slot of at least 8,192 values."""
    try:
        from dfnet.engine.sums import shards_for as dfnet_shards_for
    except ImportError:
        return max(1, min(slots, math.ceil(values / SHARD_MIN_VALUES)))
    return dfnet_shards_for(values, slots)


def partial_bytes(aggregate: str, weights: int, partitions: int, shards: int, dtype_bytes: int) -> float:
    """Bytes of a step's partial sums on the busiest chain of links (see the module doc)."""
    v = weights + SCALARS
    if aggregate == "collect":
        return dtype_bytes * v * partitions
    if aggregate == "agg":
        return dtype_bytes * v * partitions + 8.0 * v
    return dtype_bytes * v * max(1.0, partitions / shards) + 8.0 * v


def added_values(aggregate: str, weights: int, partitions: int, shards: int, cores: int) -> float:
    """Values the busiest adder decodes and adds (see the module doc)."""
    v = weights + SCALARS
    if aggregate in ("collect", "agg"):
        return float(v * partitions)
    return v * partitions / max(1, min(shards, cores)) + v


#: How the broadcast term counts copies: "per-executor" (4W/R for each executor that runs a task: at
#: 100 Mbit/s the map stage grew with the executors, 4 against 2, as if the driver's link carried
#: most copies) or "once" (4W/R: TorrentBroadcast's executors share pieces). Set by --broadcast.
BROADCAST = {"mode": "per-executor"}


def features(p: dict, shared: bool, cores: int) -> dict[str, float]:
    """The model's terms of point ``p`` (weights, partitions, rate_bytes, aggregate, shards,
    dtype_bytes), each named by its coefficient."""
    a = p["aggregate"]
    suffix = "" if shared else f"[{a}]"
    rate = p["rate_bytes"]
    f = {f"fixed{suffix}": 1.0, "per_weight": float(p["weights"]),
         "broadcast": (4.0 * p["weights"] * (p.get("executors") or 1 if BROADCAST["mode"] == "per-executor" else 1)
                       / rate if rate else 0.0),
         f"net{suffix}": (partial_bytes(a, p["weights"], p["partitions"], p["shards"], p["dtype_bytes"]) / rate
                          if rate else 0.0),
         f"cpu{suffix}": added_values(a, p["weights"], p["partitions"], p["shards"], cores)}
    return f


def coefficient_names(aggregates, shared: bool) -> list[str]:
    if shared:
        return ["fixed", "per_weight", "broadcast", "net", "cpu"]
    return ([f"fixed[{a}]" for a in aggregates] + ["per_weight", "broadcast"] + [f"net[{a}]" for a in aggregates]
            + [f"cpu[{a}]" for a in aggregates])


def design(points: list[dict], names: list[str], shared: bool, cores: int) -> np.ndarray:
    rows = []
    for p in points:
        f = features(p, shared, cores)
        rows.append([f.get(n, 0.0) for n in names])
    return np.array(rows)


def fit_model(points: list[dict], names: list[str], shared: bool, cores: int) -> dict[str, float]:
    """Non-negative least squares on relative error (each point's row divided by its seconds)."""
    X = design(points, names, shared, cores)
    y = np.array([p["seconds"] for p in points])
    usable = [i for i in range(len(names)) if np.any(X[:, i])]
    coef = fit_nonnegative(X, y, usable)
    return dict(zip(names, (float(c) for c in coef)))


def parts(coef: dict[str, float], p: dict, shared: bool, cores: int) -> dict[str, float]:
    """A point's predicted seconds, split: fixed + compute, broadcast, the partial sums (network and
    adding)."""
    f = features(p, shared, cores)
    term = {n: coef.get(n, 0.0) * x for n, x in f.items()}
    split = {"fixed_and_compute_s": sum(v for n, v in term.items() if n.startswith(("fixed", "per_weight"))),
             "broadcast_s": term["broadcast"],
             "sum_network_s": sum(v for n, v in term.items() if n.startswith("net")),
             "sum_adding_s": sum(v for n, v in term.items() if n.startswith("cpu"))}
    split["sum_s"] = split["sum_network_s"] + split["sum_adding_s"]
    split["seconds"] = split["fixed_and_compute_s"] + split["broadcast_s"] + split["sum_s"]
    return split


# --- Spark's event log: each point's step jobs ----------------------------------------------------

class EpochTagger:
    """A fit callback that tags the Spark jobs of each epoch (local property ``dfnet.epoch``) and
    keeps the run's messages (the plan line says how the sums travel)."""

    def __init__(self, sc):
        self.sc, self.messages = sc, []

    def on_train_begin(self, config, facts) -> None:
        self.sc.setLocalProperty("dfnet.epoch", "1")

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        pass

    def on_epoch_end(self, record, total_epochs: int) -> None:
        self.sc.setLocalProperty("dfnet.epoch", str(record.epoch + 1))


def read_event_log(directory: Path) -> tuple[dict, dict]:
    """Jobs (id -> point, epoch, times, stage ids) and stages (id -> name, times, tasks) of every
    event log file in ``directory``."""
    jobs: dict[int, dict] = {}
    stages: dict[int, dict] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.name.startswith("appstatus"):
            continue
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                try:
                    ev = json.loads(line)
                except ValueError:  # a line cut short by a log still being written
                    continue
                kind = ev.get("Event")
                if kind == "SparkListenerJobStart":
                    props = ev.get("Properties") or {}
                    jobs[ev["Job ID"]] = {"point": props.get("dfnet.point"), "epoch": props.get("dfnet.epoch"),
                                          "submitted": ev.get("Submission Time"), "stage_ids": ev.get("Stage IDs", [])}
                elif kind == "SparkListenerJobEnd" and ev["Job ID"] in jobs:
                    jobs[ev["Job ID"]]["completed"] = ev.get("Completion Time")
                elif kind == "SparkListenerStageCompleted":
                    info = ev["Stage Info"]
                    s = stages.setdefault(info["Stage ID"], {"tasks": []})
                    s.update(name=info.get("Stage Name"), submitted=info.get("Submission Time"),
                             completed=info.get("Completion Time"), num_tasks=info.get("Number of Tasks"))
                elif kind == "SparkListenerTaskEnd":
                    info, metrics = ev.get("Task Info") or {}, ev.get("Task Metrics") or {}
                    read, write = metrics.get("Shuffle Read Metrics") or {}, metrics.get("Shuffle Write Metrics") or {}
                    stages.setdefault(ev["Stage ID"], {"tasks": []})["tasks"].append({
                        "type": ev.get("Task Type"), "executor": info.get("Executor ID"), "host": info.get("Host"),
                        "launch": info.get("Launch Time"), "finish": info.get("Finish Time"),
                        "locality": info.get("Locality"),
                        "remote_read": read.get("Remote Bytes Read", 0), "local_read": read.get("Local Bytes Read", 0),
                        "fetch_wait_ms": read.get("Fetch Wait Time", 0),
                        "written": write.get("Shuffle Bytes Written", 0), "result_size": metrics.get("Result Size", 0),
                        "run_ms": metrics.get("Executor Run Time", 0),
                        "deserialize_ms": metrics.get("Executor Deserialize Time", 0),
                        "jvm_cpu_ms": metrics.get("Executor CPU Time", 0) / 1e6, "gc_ms": metrics.get("JVM GC Time", 0)})
    return jobs, stages


def step_jobs(point: int, epochs: int, jobs: dict, stages: dict) -> dict | None:
    """The step jobs of ``point``'s epochs after the first: medians of the job's and each stage's
    seconds, and the last epoch's stages (tasks, hosts, locality, bytes)."""
    mine = [(jid, j) for jid, j in sorted(jobs.items()) if j["point"] == str(point)
            and j["epoch"] and 2 <= int(j["epoch"]) <= epochs and j.get("completed")]
    if not mine:
        return None
    per_epoch: dict[int, list] = {}
    for jid, j in mine:
        per_epoch.setdefault(int(j["epoch"]), []).append((jid, j))
    summaries = []
    for epoch, its_jobs in sorted(per_epoch.items()):
        ran = []
        for _, j in its_jobs:
            for sid in sorted(j["stage_ids"]):
                s = stages.get(sid)
                if s and s["tasks"]:
                    ran.append(s)
        summaries.append({
            "epoch": epoch, "jobs": len(its_jobs),
            "job_s": sum((j["completed"] - j["submitted"]) / 1000 for _, j in its_jobs),
            "stages": [{
                "tasks": len(s["tasks"]),
                "seconds": ((s["completed"] - s["submitted"]) / 1000
                            if s.get("completed") and s.get("submitted") else None),
                "hosts": [t["host"] for t in sorted(s["tasks"], key=lambda t: t["launch"] or 0)],
                "locality": sorted({t["locality"] for t in s["tasks"] if t["locality"]}),
                "max_task_s": max((t["finish"] - t["launch"]) / 1000 for t in s["tasks"]),
                "remote_read_mb": [round(t["remote_read"] / 1e6, 2) for t in s["tasks"]],
                "fetch_wait_s": max(t["fetch_wait_ms"] for t in s["tasks"]) / 1000,
                "task_s": [round((t["finish"] - t["launch"]) / 1000, 3) for t in s["tasks"]],
                "run_s": [round(t["run_ms"] / 1000, 3) for t in s["tasks"]],
                "deserialize_s": max(t["deserialize_ms"] for t in s["tasks"]) / 1000,
                "jvm_cpu_s": max(t["jvm_cpu_ms"] for t in s["tasks"]) / 1000,
                "gc_s": max(t["gc_ms"] for t in s["tasks"]) / 1000,
                "written_mb": round(sum(t["written"] for t in s["tasks"]) / 1e6, 2),
                "result_mb": round(sum(t["result_size"] for t in s["tasks"]) / 1e6, 2)} for s in ran]})
    stage_count = max(len(s["stages"]) for s in summaries)
    medians = []
    for i in range(stage_count):
        secs = [s["stages"][i]["seconds"] for s in summaries if len(s["stages"]) > i and s["stages"][i]["seconds"]]
        medians.append(statistics.median(secs) if secs else None)
    return {"job_s": statistics.median(s["job_s"] for s in summaries), "jobs_per_epoch": summaries[-1]["jobs"],
            "stage_s": medians, "last_epoch": summaries[-1]}


def placement(spark_info: dict | None) -> str:
    """``map 4 tasks on 4 hosts / reduce 4 tasks on 2 hosts`` of the last epoch's step."""
    if not spark_info:
        return "-"
    out = []
    for s in spark_info["last_epoch"]["stages"]:
        out.append(f"{s['tasks']}@{len(set(s['hosts']))}h")
    return "/".join(out)


# --- the driver's own part of a step -----------------------------------------------------------

def driver_costs(sizes, repeats: int = 7) -> list[dict]:
    """Seconds of the driver's work per step, in numpy, for each weight count: the Adam step on
    float32 weights (float64 moments, dfnet.optim.Adam), the mean (sum / count), adding one more
    float64 partial vector (collect, per vector), joining K float64 slices into W values
    (sharded) and pickling the float32 weights (what a broadcast costs the driver before the
    network)."""
    import pickle

    from dfnet.optim import Adam

    rng = np.random.default_rng(0)
    out = []
    for weights in sizes:
        params = rng.standard_normal(weights).astype(np.float32)
        grad_sum = rng.standard_normal(weights)
        other = rng.standard_normal(weights)
        adam = Adam(0.001)

        def timed(fn) -> float:
            fn()  # the first call allocates the buffers
            runs = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - t)
            return statistics.median(runs)

        total = grad_sum.copy()
        shards = shards_for(weights + SCALARS, 128)
        slices = np.array_split(grad_sum, shards)
        out.append({
            "weights": weights,
            "adam_s": timed(lambda: adam.step(params, grad_sum / 1000.0)),
            "mean_s": timed(lambda: grad_sum / 1000.0),
            "add_one_partial_s": timed(lambda: total.__iadd__(other)),
            "join_slices_s": timed(lambda: np.concatenate(slices)),
            "join_slices_k": shards,
            "pickle_weights_s": timed(lambda: pickle.dumps(params, protocol=pickle.HIGHEST_PROTOCOL))})
    return out


# --- measuring -----------------------------------------------------------------------------------

def probe_broadcast(sc, rate: str, args, warm: bool) -> list[dict]:
    """Seconds of a job of P one-row tasks that only read a broadcast of the largest network's
    float32 weights (median of 3 fresh broadcasts), for each P of --partitions, at ``rate``."""
    h = max(int(h) for h in args.hidden.split(","))
    weights = 784 * h + h + 10 * h + 10
    params = np.random.default_rng(0).standard_normal(weights).astype(np.float32)
    widest = max(int(p) for p in args.partitions.split(","))

    def read(partitions: int) -> float:
        b = sc.broadcast(params)
        t = time.perf_counter()
        sc.parallelize(range(partitions), partitions).map(lambda _: int(b.value.shape[0])).collect()
        seconds = time.perf_counter() - t
        b.destroy()
        return seconds

    if warm:  # the first RDD job starts the executors' Python workers: 5.9 s against 1.1 s after
        sc.setLocalProperty("dfnet.point", "probe-warmup")
        read(widest)
    out = []
    for partitions in [int(p) for p in args.partitions.split(",")]:
        sc.setLocalProperty("dfnet.point", f"probe-{rate}-{partitions}")
        runs = [read(partitions) for _ in range(3)]
        out.append({"rate": rate, "partitions": partitions, "weights": weights, "seconds": statistics.median(runs),
                    "runs": runs})
        print(f"{rate:>9s}  broadcast of {weights:,} float32 weights read by {partitions} tasks: "
              f"{statistics.median(runs):.3f} s (" + " ".join(f"{r:.2f}" for r in runs) + ")", flush=True)
    return out


def train_config(hidden: int, partitions: int, aggregate: str, partial: str, epochs: int) -> TrainConfig:
    kwargs = dict(hidden=(hidden,), schedule="classic", sample=1.0, optimizer="adam", lr_schedule="constant",
                  epochs=epochs, partitions=partitions, aggregate=aggregate, seed=0)
    if partial != "float64" or "partial_dtype" in {f.name for f in dataclasses.fields(TrainConfig)}:
        kwargs["partial_dtype"] = partial
    return TrainConfig(**kwargs)


def grid(args) -> list[tuple[str, int, int, str, str]]:
    float32_rates = set(args.float32_rates.split(",")) if args.float32_rates else None
    out = []
    for rate in args.rates.split(","):
        for h in [int(h) for h in args.hidden.split(",")]:
            for partitions in [int(p) for p in args.partitions.split(",")]:
                for aggregate in args.aggregates.split(","):
                    for partial in args.partials.split(","):
                        if partial == "float32" and float32_rates is not None and rate not in float32_rates:
                            continue
                        out.append((rate, h, partitions, aggregate, partial))
    return out


def measure(args) -> dict:
    """The driver's part (``--inner``, inside the driver's namespace): every (rate, network,
    partitions, aggregate, partial type) point on the running cluster at ``args.master``."""
    images, labels = load_arrays("fashion-mnist", "train", args.data_dir)
    images, labels = images[:args.rows], labels[:args.rows]
    events = Path(args.workdir) / "events"
    events.mkdir(exist_ok=True)
    conf = {"spark.driver.host": DRIVER_IP, "spark.driver.bindAddress": DRIVER_IP,
            "spark.executor.memory": "4g", "spark.executor.cores": "1",
            "spark.pyspark.python": sys.executable, "spark.driver.maxResultSize": "2g",
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
            "spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri(),
            "spark.eventLog.rolling.enabled": "false", "spark.eventLog.compress": "false"}
    for setting in args.spark_conf or []:
        key, _, value = setting.partition("=")
        conf[key] = value
    os.environ["SPARK_LOCAL_IP"] = DRIVER_IP
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-network", conf=conf,
                                warehouse=Path(args.workdir) / "warehouse")
    sc = spark.sparkContext
    points = []
    started = time.time()
    try:
        env = environment(spark)
        env["executors"] = args.workers
        env["locality_wait"] = spark.conf.get("spark.locality.wait", "3s")
        df = to_dataframe(spark, images, labels, max_value=get_dataset("fashion-mnist").max_value).cache()
        df.count()
        shape(args.workers, "unlimited", args.bridge_netns)
        if args.warmup:
            # At the largest partition count, so that every executor has run map and reduce tasks (and
            # started its Python workers) before the first point: with 2 epochs at P=2 the first
            # points of a run still came out up to 1.7x slower than the same points run later.
            sc.setLocalProperty("dfnet.point", "warmup")
            widest = max(int(p) for p in args.partitions.split(","))
            for aggregate in args.aggregates.split(","):
                fit(df, train_config(64, widest, aggregate, "float64", 4), verbose=False)
            print(f"warm-up done ({time.time() - started:.0f} s)", flush=True)
        rate_now, probed = "unlimited", []
        env["broadcast_probe"] = []
        if args.probe_only:
            for rate in args.rates.split(","):
                shape(args.workers, rate, args.bridge_netns)
                env["broadcast_probe"] += probe_broadcast(sc, rate, args, warm=not probed)
                probed.append(rate)
        for index, (rate, h, partitions, aggregate, partial) in enumerate([] if args.probe_only else grid(args)):
            if rate != rate_now:
                shape(args.workers, rate, args.bridge_netns)
                rate_now = rate
            if args.probe_broadcast and rate not in probed:
                env["broadcast_probe"] += probe_broadcast(sc, rate, args, warm=not probed)
                probed.append(rate)
            sc.setLocalProperty("dfnet.point", str(index))
            tagger = EpochTagger(sc)
            t0 = time.time()
            model = fit(df, train_config(h, partitions, aggregate, partial, args.epochs), verbose=False,
                        callbacks=[tagger])
            seconds = statistics.median(r["seconds"] for r in model.history[1:])
            bits = RATES_BITS[rate]
            weights = model.network.num_params
            plan = getattr(model, "schedule_plan", None) or {}
            note = next((m for m in tagger.messages if "sums:" in m), tagger.messages[0] if tagger.messages else "")
            found = re.search(r"sharded over (\d+) reduce", note)
            shards = int(found.group(1)) if found else (shards_for(weights + SCALARS, args.workers)
                                                        if aggregate == "sharded" else 1)
            points.append({"rate": rate, "rate_bytes": bits / 8 if bits else None, "hidden": h, "weights": weights,
                           "partitions": partitions, "aggregate": aggregate, "partial_dtype": partial,
                           "dtype_bytes": 4 if partial == "float32" else 8, "shards": shards,
                           "seconds": seconds, "epochs": [r["seconds"] for r in model.history],
                           "fit_wall_s": time.time() - t0, "plan": plan, "plan_line": note,
                           "final_loss": model.history[-1].get("loss"), "point_index": index,
                           "load_average": os.getloadavg()[0]})
            k = f" K={shards}" if aggregate == "sharded" else ""
            print(f"{rate:>9s}  784-{h}-10 ({weights:>9,} weights)  P={partitions}  {aggregate:7s} {partial}"
                  f"{k:6s}  {seconds:7.3f} s   epochs "
                  + " ".join(f"{r['seconds']:.2f}" for r in model.history)
                  + f"   [{time.time() - started:.0f} s, load {os.getloadavg()[0]:.1f}]", flush=True)
        # The driver's broadcast of the weights, as a step makes it (pickle, write, register).
        env["broadcast_create_s"] = {}
        for weights in (235_146, 4_000_000):
            params = np.zeros(weights, dtype=np.float32)
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                b = sc.broadcast(params)
                runs.append(time.perf_counter() - t)
                b.destroy()
            env["broadcast_create_s"][str(weights)] = statistics.median(runs)
    finally:
        shape(args.workers, "unlimited", args.bridge_netns)
        spark.stop()
    try:
        jobs, stages = read_event_log(events)
        for p in points:
            p["spark"] = step_jobs(p["point_index"], args.epochs, jobs, stages)
    except Exception as error:  # the points stand without the event log's detail
        print(f"event log not read: {error!r}", flush=True)
    return {"environment": env, "points": points}


# --- the report ----------------------------------------------------------------------------------

def resolve_auto(weights: int, tasks: int, slots: int) -> tuple[str, str]:
    """What ``aggregate="auto"`` picks for a step of ``tasks`` tasks on a cluster of ``slots``
    task slots (not one machine), and why (dfnet.engine.sums.resolve_aggregate)."""
    try:
        from dfnet.engine.sums import ClusterShape, resolve_aggregate
    except ImportError:
        return "-", "dfnet has no sharded sums"
    layout, why = resolve_aggregate("auto", tasks, weights + SCALARS, ClusterShape(slots, False))
    return layout.how, why


def model_errors(points: list[dict], coef: dict, shared: bool, cores: int) -> dict:
    for p in points:
        p["predicted"] = parts(coef, p, shared, cores)["seconds"]
    fitted = [abs(p["predicted"] / p["seconds"] - 1) for p in points if p["fitted"]]
    checked = [abs(p["predicted"] / p["seconds"] - 1) for p in points if not p["fitted"]]

    def stats(errors):
        return {"median": statistics.median(errors), "max": max(errors), "points": len(errors)} if errors else None

    by_rate = {rate: stats([abs(p["predicted"] / p["seconds"] - 1) for p in points if not p["fitted"] and p["rate"] == rate])
               for rate in dict.fromkeys(p["rate"] for p in points)}
    return {"fitted": stats(fitted), "not_fitted": stats(checked), "not_fitted_by_rate": by_rate}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", default="64,256,1024,5000")
    parser.add_argument("--rates", default="unlimited,1gbit,100mbit")
    parser.add_argument("--partitions", default="2,4")
    parser.add_argument("--aggregates", default="collect,agg,sharded")
    parser.add_argument("--partials", default="float64", help="partial_dtype values: float64,float32")
    parser.add_argument("--float32-rates", default=None,
                        help="the float32 partials only at these rates (default: every rate)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--probe-broadcast", action="store_true",
                        help="also time a job that only reads the weights' broadcast, at each rate and P")
    parser.add_argument("--probe-only", action="store_true", help="only the broadcast probe (no grid, no model)")
    parser.add_argument("--spark-conf", action="append", default=None, metavar="KEY=VALUE",
                        help="a Spark setting for the driver's session (repeatable)")
    parser.add_argument("--fit-hidden", default=None,
                        help="hidden sizes the model is fitted on (default: the smallest and the largest)")
    parser.add_argument("--fit-rates", default=None,
                        help="rates the model is fitted on (default: all); the other rates' points are checked")
    parser.add_argument("--model", default="per-aggregate", choices=("per-aggregate", "per-aggregate, broadcast once", "shared"),
                        help="the projection's model (both are fitted and reported)")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="network")
    parser.add_argument("--points", default=None, help="re-fit the points of a saved results JSON (no Spark)")
    parser.add_argument("--inner", default=None, help=argparse.SUPPRESS)  # the driver's part writes here
    parser.add_argument("--master", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bridge-netns", default=f"/proc/{os.getpid()}/ns/net", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        Path(args.inner).write_text(json.dumps(measure(args)))
        return 0
    started = time.time()
    if args.points:
        # Several files: a later file's point replaces an earlier one of the same (rate, network, P,
        # aggregate, partials), e.g. rows re-measured after a longer warm-up.
        measured, merged = None, {}
        for source in args.points.split(","):
            payload = json.loads(Path(source).read_text())
            measured = measured or payload
            for p in payload["points"]:
                p = {k: v for k, v in p.items() if k not in ("predicted", "error", "fitted") and not k.startswith("model_")}
                p["source"] = Path(source).name
                merged[(p["rate"], p["hidden"], p["partitions"], p["aggregate"], p["partial_dtype"])] = p
        measured["points"] = list(merged.values())
    else:
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
        measured["environment"]["driver_costs"] = driver_costs([p[1] for p in PROJECTED] + [3_975_010])
        measured["environment"]["measure_wall_s"] = time.time() - started
    points = measured["points"]
    if not points:  # --probe-only
        payload = {"environment": measured["environment"], "options": vars(args),
                   "broadcast_probe": measured["environment"].get("broadcast_probe", [])}
        path = save_results(args.name, payload)
        print(f"saved {path} ({time.time() - started:.0f} s)")
        return 0
    cores = measured["environment"].get("cpus") or os.cpu_count() or 2
    executors = measured["environment"].get("executors") or args.workers
    for p in points:
        p["executors"] = min(p["partitions"], executors)  # executors that run a task (fetch the weights)
    aggregates = list(dict.fromkeys(p["aggregate"] for p in points))
    payload = {"environment": measured["environment"], "options": vars(args), "points": points}
    print(points_table := table_of_points(points))

    # The models: fitted on the smallest and the largest network, checked on the rest.
    hidden_sizes = sorted({p["hidden"] for p in points})
    edge = ({int(h) for h in args.fit_hidden.split(",")} if args.fit_hidden
            else {hidden_sizes[0], hidden_sizes[-1]})
    fit_rates = set(args.fit_rates.split(",")) if args.fit_rates else {p["rate"] for p in points}
    for p in points:
        p["fitted"] = p["hidden"] in edge and p["rate"] in fit_rates
    models = {}
    for kind, mode in (("per-aggregate", "per-executor"), ("per-aggregate, broadcast once", "once"),
                       ("shared", "per-executor")):
        shared = kind == "shared"
        BROADCAST["mode"] = mode
        names = coefficient_names(aggregates, shared)
        coef = fit_model([p for p in points if p["fitted"]], names, shared, cores)
        models[kind] = {"coefficients": coef, "errors": model_errors(points, coef, shared, cores),
                        "broadcast": mode}
    shared = args.model == "shared"
    BROADCAST["mode"] = models[args.model]["broadcast"]
    coef = models[args.model]["coefficients"]
    for p in points:
        p.update({f"model_{k}": v for k, v in parts(coef, p, shared, cores).items()})
        p["predicted"] = p["model_seconds"]
        p["error"] = p["predicted"] / p["seconds"] - 1
    lines = [f"| {p['rate']} | 784-{p['hidden']}-10 | {p['weights']:,} | {p['partitions']} | {p['aggregate']}"
             f"{k_note(p)} | {p['partial_dtype']} | "
             f"{p['seconds']:.3f} | {p['predicted']:.3f}{'' if p['fitted'] else ' (not fitted)'} | "
             f"{100 * p['error']:+.0f}% |" for p in points]
    fit_table = ["| rate | network | weights | P | aggregate | partials | s/step | model | error |",
                 "|---|---|---|---|---|---|---|---|---|", *lines]
    print("\n".join(fit_table))
    summaries = {}
    for kind, m in models.items():
        c, e = m["coefficients"], m["errors"]
        text = f"{kind} model: " + ", ".join(f"{n} {v:.3g}" for n, v in c.items() if v)
        if e["fitted"]:
            text += f"; error on the {e['fitted']['points']} fitted points: median {100 * e['fitted']['median']:.0f}%"
        if e["not_fitted"]:
            text += (f"; on the {e['not_fitted']['points']} points not fitted: median "
                     f"{100 * e['not_fitted']['median']:.0f}%, max {100 * e['not_fitted']['max']:.0f}%")
        text += "; not fitted, by rate: " + ", ".join(
            f"{rate} median {100 * e2['median']:.0f}% max {100 * e2['max']:.0f}% ({e2['points']})"
            for rate, e2 in e["not_fitted_by_rate"].items() if e2)
        summaries[kind] = text
        print(text)

    # The projection: 10 Gbit/s, one partition and one core per worker.
    projection = []
    rate_10g = 10e9 / 8
    driver = {d["weights"]: d for d in measured["environment"].get("driver_costs", [])}
    for name, weights in PROJECTED:
        for workers in PROJECTED_WORKERS:
            auto, why = resolve_auto(weights, workers, workers)
            shards = shards_for(weights + SCALARS, workers)
            for aggregate in aggregates:
                for partial in ("float64", "float32"):
                    p = {"weights": weights, "partitions": workers, "executors": workers, "rate_bytes": rate_10g,
                         "aggregate": aggregate,
                         "shards": shards if aggregate == "sharded" else 1,
                         "dtype_bytes": 4 if partial == "float32" else 8}
                    split = parts(coef, p, shared, cores=workers)  # on a cluster each reducer has its own core
                    d = driver.get(weights, {})
                    projection.append({"network": name, "weights": weights, "workers": workers,
                                       "partitions": workers, "rate": "10gbit", "aggregate": aggregate,
                                       "partial_dtype": partial, "shards": p["shards"], **split,
                                       "sum_share": split["sum_s"] / split["seconds"],
                                       "auto_picks": auto, "auto_why": why,
                                       "driver_adam_s": d.get("adam_s")})
    ptable = ["| network | workers | aggregate | partials | s/step | fixed + compute s | broadcast s | "
              "sum: network s | sum: adding s | sum's share | driver's Adam s | auto picks |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for q in projection:
        ptable.append(f"| {q['network']} | {q['workers']} | {q['aggregate']}"
                      f"{k_note(q)} | {q['partial_dtype']} | "
                      f"{q['seconds']:.3f} | {q['fixed_and_compute_s']:.3f} | {q['broadcast_s']:.3f} | "
                      f"{q['sum_network_s']:.3f} | {q['sum_adding_s']:.3f} | {100 * q['sum_share']:.0f}% | "
                      + (f"{q['driver_adam_s']:.4f}" if q["driver_adam_s"] is not None else "-")
                      + f" | {q['auto_picks']} |")
    print("\n".join(ptable))
    dtable = ["| weights | Adam step s | mean s | add one partial s | join K slices s (K) | pickle weights s |",
              "|---|---|---|---|---|---|"]
    for d in measured["environment"].get("driver_costs", []):
        dtable.append(f"| {d['weights']:,} | {d['adam_s']:.4f} | {d['mean_s']:.4f} | {d['add_one_partial_s']:.4f} | "
                      f"{d['join_slices_s']:.4f} ({d['join_slices_k']}) | {d['pickle_weights_s']:.4f} |")
    print("\n".join(dtable))
    if "broadcast_create_s" in measured["environment"]:
        print("driver's sc.broadcast(float32 weights): " + ", ".join(
            f"{int(w):,} weights {s:.4f} s" for w, s in measured["environment"]["broadcast_create_s"].items()))
    payload.update({"models": models, "model": {"kind": args.model, **models[args.model], "fitted_on_hidden": sorted(edge),
                                          "fitted_on_rates": sorted(fit_rates)},
                    "projection": projection, "points_table": points_table, "table": fit_table,
                    "projection_table": ptable, "driver_table": dtable, "summary": summaries,
                    "wall_s": time.time() - started})
    path = save_results(args.name, payload, figure(points))
    print(f"saved {path} ({time.time() - started:.0f} s)")
    return 0


def k_note(p: dict) -> str:
    return f" (K={p['shards']})" if p["aggregate"] == "sharded" else ""


def table_of_points(points: list[dict]) -> str:
    """Seconds per step, one row per (network, P, partials), one column per (rate, aggregate); and
    the step job's stages and placement."""
    rates = list(dict.fromkeys(p["rate"] for p in points))
    aggregates = list(dict.fromkeys(p["aggregate"] for p in points))
    rows = {}
    for p in points:
        rows.setdefault((p["hidden"], p["weights"], p["partitions"], p["partial_dtype"]), {})[
            (p["rate"], p["aggregate"])] = p
    head = "| network | weights | P | partials | " + " | ".join(f"{r} {' / '.join(aggregates)}" for r in rates) + " |"
    out = [head, "|---|---|---|---|" + "---|" * len(rates)]
    for (h, w, part, dtype), cells in rows.items():
        cols = []
        for r in rates:
            vals = [cells.get((r, a)) for a in aggregates]
            cols.append(" / ".join(f"{v['seconds']:.3f}" if v else "-" for v in vals))
        out.append(f"| 784-{h}-10 | {w:,} | {part} | {dtype} | " + " | ".join(cols) + " |")
    out += ["", "| rate | network | P | aggregate | partials | s/step | step job s | stages s | tasks@hosts "
            "(map/reduce) | reduce hosts | remote MB read per reduce task |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        s = p.get("spark")
        if not s:
            continue
        last = s["last_epoch"]["stages"]
        reduce = last[-1] if len(last) > 1 else None
        out.append(f"| {p['rate']} | 784-{p['hidden']}-10 | {p['partitions']} | {p['aggregate']} | {p['partial_dtype']} | "
                   f"{p['seconds']:.3f} | {s['job_s']:.3f} | "
                   + " + ".join(f"{x:.3f}" if x else "-" for x in s["stage_s"])
                   + f" | {placement(s)} | {', '.join(reduce['hosts']) if reduce else '-'} | "
                   + (", ".join(f"{x:g}" for x in reduce["remote_read_mb"]) if reduce else "-") + " |")
    return "\n".join(out)


def figure(points: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for rate in dict.fromkeys(p["rate"] for p in points):
        for aggregate in dict.fromkeys(p["aggregate"] for p in points):
            for partial in dict.fromkeys(p["partial_dtype"] for p in points):
                for partitions in sorted({p["partitions"] for p in points}):
                    sel = [p for p in points if p["rate"] == rate and p["aggregate"] == aggregate
                           and p["partitions"] == partitions and p["partial_dtype"] == partial]
                    if sel:
                        fig.add_trace(go.Scatter(x=[p["weights"] for p in sel], y=[p["seconds"] for p in sel],
                                                 mode="lines+markers",
                                                 name=f"{rate}, {aggregate}, {partial}, P={partitions}"))
    fig.update_layout(title="Step seconds against model size, worker links shaped with tc tbf",
                      xaxis=dict(title="weights", type="log"), yaxis=dict(title="seconds per step", type="log"))
    return fig


if __name__ == "__main__":
    sys.exit(main())
