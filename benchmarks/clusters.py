"""Cluster sizes benchmark: seconds per epoch of the DataFrame engine on local and standalone Spark.

    python benchmarks/clusters.py [--configs local1,local2,standalone1,standalone2] [--epochs 6]
    python benchmarks/clusters.py --rows 6000 --epochs 3          # smoke run, saves clusters-smoke.*

Configurations (each gets its own SparkSession; partitions = its cores unless --partitions):

  local1       local[1]
  local2       local[2]
  standalone1  a Spark standalone cluster on 127.0.0.1: one master, 1 worker of 1 core
  standalone2  the same with 2 workers of 1 core each (one executor per worker)

The script starts the standalone master and workers itself with pyspark's own
``bin/spark-class`` (the pip package has no ``sbin/`` scripts), each in its own
process group, on loopback only, with a temporary work folder; it waits until
the master's JSON reports the workers alive and the application's executors
have registered, and stops every process it started (by process group) in a
``finally``, also on Ctrl-C, SIGTERM or an error. Executors run the driver's
Python (``sys.executable``), so dfnet imports there as it does here.

Workload per configuration: Fashion-MNIST train (60,000 rows, or the first
--rows), 784-64-10 ReLU/softmax, float32, Adam, the classic schedule with
sample 1.0 (one full-batch step per epoch). A throwaway fit of --warmup epochs
warms the JVMs (driver and executors), then a fit of --epochs epochs; the
median of the epochs after the first is reported, with the speed-up over
``local[1]`` measured in the same run. Also reported, as overheads: session
start, waiting for executors, the first job (caching the rows), and the
median latency of an empty Python (mapInArrow) job with one task per partition.
On a standalone cluster "session start" includes launching the executors: the
scheduler is told to wait until all of the configuration's cores registered.
Saves benchmarks/results/clusters.json and clusters.html.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import default_data_dir, environment, save_results

from dfnet.config import TrainConfig
from dfnet.datasets import get_dataset, load_arrays, to_dataframe
from dfnet.engine.dataframe import PARTIAL_SCHEMA, partial_batch
from dfnet.local_spark import LOOPBACK, StandaloneCluster
from dfnet.session import get_or_create_spark
from dfnet.train import fit

CONFIGS = {
    "local1": {"master": "local[1]", "workers": 0, "cores": 1},
    "local2": {"master": "local[2]", "workers": 0, "cores": 2},
    "standalone1": {"master": None, "workers": 1, "cores": 1},
    "standalone2": {"master": None, "workers": 2, "cores": 2},
}


def empty_job(partitions: int):
    """A job with one task per partition that starts a Python worker and moves no data."""

    def per_partition(batches):
        for _ in batches:
            pass
        yield partial_batch(np.zeros(1))

    return per_partition


def executors(spark) -> int:
    """Executors registered with the driver (block managers, the driver's own left out)."""
    return spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1


def session_conf(setup: dict, args) -> dict[str, str]:
    conf = {
        "spark.ui.showConsoleProgress": "false",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
    }
    if setup["workers"]:
        conf.update({
            "spark.executor.memory": args.executor_memory,
            "spark.executor.cores": "1",
            "spark.cores.max": str(setup["cores"]),
            # Run no job before every executor of the configuration has registered.
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
        })
    return conf


def run_config(name: str, setup: dict, images: np.ndarray, labels: np.ndarray, args, cluster_for):
    """Start this configuration's session, warm it, time the fit, stop the session; returns the result."""
    partitions = args.partitions or setup["cores"]
    cluster_seconds = None
    master = setup["master"]
    if setup["workers"]:
        start = time.perf_counter()
        cluster = cluster_for(setup["workers"])
        cluster_seconds = time.perf_counter() - start
        master = cluster.url
    start = time.perf_counter()
    spark = get_or_create_spark(master, app_name=f"dfnet-bench-clusters-{name}",
                                conf=session_conf(setup, args))
    try:
        if spark.sparkContext.master != master:
            raise RuntimeError(f"got a session on {spark.sparkContext.master!r}, wanted {master!r}: "
                               "another SparkSession is active in this process")
        session_seconds = time.perf_counter() - start
        start = time.perf_counter()
        deadline = time.monotonic() + 120
        while executors(spark) < setup["workers"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: only {executors(spark)} of {setup['workers']} executors "
                                   "registered after 120 s")
            time.sleep(0.2)
        executor_wait = time.perf_counter() - start
        registered = executors(spark)

        start = time.perf_counter()
        df = to_dataframe(spark, images, labels, max_value=get_dataset("fashion-mnist").max_value,
                          num_partitions=partitions).cache()
        rows = df.count()
        first_job_seconds = time.perf_counter() - start

        config = TrainConfig(hidden=tuple(args.hidden), schedule="classic", sample=1.0, optimizer="adam",
                             dtype="float32", epochs=args.epochs, partitions=partitions).validate()
        start = time.perf_counter()
        fit(df, config.replace(epochs=args.warmup), num_classes=10, verbose=False)
        warmup_seconds = time.perf_counter() - start

        job = empty_job(partitions)
        probe = spark.range(0, partitions, numPartitions=partitions)
        latencies = []
        for _ in range(args.latency_repeats):
            start = time.perf_counter()
            probe.mapInArrow(job, PARTIAL_SCHEMA).collect()
            latencies.append(time.perf_counter() - start)

        model = fit(df, config, num_classes=10, verbose=False)
        seconds = [h["seconds"] for h in model.history]
        env = environment(spark)
        df.unpersist()
    finally:
        spark.stop()
    result = {
        "config": name, "master": master, "workers": setup["workers"], "cores": setup["cores"],
        "partitions": partitions, "rows": rows, "executors": registered,
        "median_epoch_seconds": statistics.median(seconds[1:]), "epoch_seconds": seconds,
        "final_loss": model.history[-1]["loss"],
        "empty_job_seconds": statistics.median(latencies) if latencies else None,
        "overheads": {"cluster_start": cluster_seconds, "session_start": session_seconds,
                      "executor_wait": executor_wait, "first_job": first_job_seconds, "warmup_fit": warmup_seconds},
        "train_config": config.to_dict(), "environment": env,
    }
    job_text = f"{result['empty_job_seconds']:.3f}" if latencies else "-"
    print(f"   {name:12s} {result['median_epoch_seconds']:7.3f} s/epoch (epochs {', '.join(f'{s:.3f}' for s in seconds)})"
          f" | empty job {job_text} s | session {session_seconds:.1f} s, first job {first_job_seconds:.1f} s"
          + (f", cluster start {cluster_seconds:.1f} s" if cluster_seconds is not None else ""), flush=True)
    return result


def figure(results: list[dict]):
    import plotly.graph_objects as go

    rows = results[0]["rows"] if results else 0
    fig = go.Figure(go.Bar(
        x=[f"{r['config']}<br>{r['cores']} core(s), {r['partitions']} partition(s)" for r in results],
        y=[r["median_epoch_seconds"] for r in results],
        text=[f"{r['median_epoch_seconds']:.3f} s" + (f" ({r['speedup']:.2f}x)" if r["speedup"] else "")
              for r in results], textposition="outside", name="s/epoch"))
    fig.update_layout(title=f"Seconds per full-batch epoch, {rows:,} rows (speed-up over local[1], same run)",
                      yaxis_title="seconds per epoch (median)")
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per configuration; the first is not counted")
    parser.add_argument("--warmup", type=int, default=20, help="throwaway epochs (one step each) to warm the JVMs")
    parser.add_argument("--rows", type=int, default=None, help="use only the first N training rows (smoke runs)")
    parser.add_argument("--hidden", default="64", help="hidden layer sizes, e.g. 64 or 128,64")
    parser.add_argument("--partitions", type=int, default=None, help="override: partitions (default: the cores)")
    parser.add_argument("--latency-repeats", type=int, default=10, help="empty jobs timed per configuration")
    parser.add_argument("--worker-memory", default="4g")
    parser.add_argument("--executor-memory", default="3g", help="must fit in --worker-memory")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default=None,
                        help="results name (default: clusters, or clusters-smoke with --rows)")
    args = parser.parse_args(argv)
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown or not names:
        parser.error(f"--configs: unknown {unknown}, choose from {list(CONFIGS)}")
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (the first is not counted), got {args.epochs}")
    if args.rows is not None and args.rows < 1:
        parser.error(f"--rows must be >= 1, got {args.rows}")
    args.hidden = [int(h) for h in args.hidden.split(",") if h]
    args.name = args.name or ("clusters" if args.rows is None else "clusters-smoke")

    # The driver JVM and every executor bind to loopback and run this Python.
    os.environ["SPARK_LOCAL_IP"] = LOOPBACK
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    images, labels = load_arrays("fashion-mnist", "train", os.path.abspath(args.data_dir))
    if args.rows is not None:
        images, labels = images[:args.rows], labels[:args.rows]

    def stop_on_signal(signum, _frame):
        # As pyspark's own SIGINT handler does: cancel the running jobs first, or the exception
        # unwinding out of a py4j call can block in pyspark's clean-up until the job ends.
        from pyspark import SparkContext

        active = SparkContext._active_spark_context
        if active is not None:
            with contextlib.suppress(Exception):  # the JVM may be gone; stopping matters more
                active.cancelAllJobs()
        raise SystemExit(128 + signum)  # unwinds through the finally below

    previous = {s: signal.signal(s, stop_on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    tmp = Path(tempfile.mkdtemp(prefix="dfnet-clusters-"))
    cluster: StandaloneCluster | None = None

    def cluster_for(workers: int) -> StandaloneCluster:
        nonlocal cluster
        if cluster is None:
            cluster = StandaloneCluster(tmp / "cluster", worker_memory=args.worker_memory)
            cluster.start_master()
            print(f"   master {cluster.url}, web UI http://{LOOPBACK}:{cluster.master_webui_port}", flush=True)
        cluster.set_workers(workers)
        return cluster

    results = []
    try:
        print(f"== {len(images)} rows, layers 784-{'-'.join(map(str, args.hidden))}-10, classic schedule, "
              f"{args.warmup} warm-up + {args.epochs} timed epochs per configuration", flush=True)
        for name in names:
            results.append(run_config(name, CONFIGS[name], images, labels, args, cluster_for))
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if cluster is not None:
                cluster.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, interrupt)
            for s, handler in previous.items():
                signal.signal(s, handler)

    base = next((r["median_epoch_seconds"] for r in results if r["config"] == "local1"), None)
    for r in results:
        r["speedup"] = base / r["median_epoch_seconds"] if base else None
    print("\n| config | master | workers | cores | partitions | s/epoch | speed-up vs local[1] | empty job s | "
          "session start s | first job s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        master = "standalone (127.0.0.1)" if r["workers"] else f"`{r['master']}`"
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        job = f"{r['empty_job_seconds']:.3f}" if r["empty_job_seconds"] is not None else "-"
        print(f"| {r['config']} | {master} | {r['workers'] or '-'} | {r['cores']} | {r['partitions']} | "
              f"{r['median_epoch_seconds']:.3f} | {speedup} | {job} | {r['overheads']['session_start']:.1f} | "
              f"{r['overheads']['first_job']:.1f} |")
    payload = {"environment": {k: v for k, v in results[0]["environment"].items() if k != "master"},
               "rows": results[0]["rows"], "layers": [784, *args.hidden, 10], "warmup_epochs": args.warmup,
               "epochs": args.epochs, "worker_memory": args.worker_memory, "executor_memory": args.executor_memory,
               "results": results}
    path = save_results(args.name, payload, figure(results))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
