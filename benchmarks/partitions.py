"""Partitions benchmark: seconds per epoch against the number of partitions, and where the time goes.

    python benchmarks/partitions.py [--partitions 1,2,4,8,16,32,64] [--repeats 5]

Full Fashion-MNIST (60,000 rows), 784-64-10 ReLU/softmax, one full-batch
gradient step per epoch on the DataFrame engine, warm JVM. For each partition
count it measures, interleaved and as medians of --repeats:

  step         a real training step: broadcast, mapInArrow gradient pass, groupBy().agg
  empty        a mapInArrow job with one task per partition and no data, collected (scheduling floor)
  read         every partition reads and decodes its rows, computes nothing, collected (+ Arrow transfer)
               (whole Arrow batches to float32; the step itself converts 256 rows at a time
               inside its maths, so part of this 'transfer' is compute in a real step)
  collect      the gradient pass with the rows collected and summed on the driver (+ compute)

so that scheduling = empty, transfer = read - empty, compute = collect - read,
aggregation = step - collect. Also the Spark jobs and tasks one step runs
(from the status tracker). Saves benchmarks/results/partitions.json and .html.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from common import default_data_dir, environment, save_results

from dfnet.datasets import load_dataframe
from dfnet.engine.data import X_COL, decode_arrow_images, encode_training_data
from dfnet.engine.dataframe import PARTIAL_SCHEMA, DataFrameEngine, partial_batch, partial_gradient_sums
from dfnet.nn import build_mlp
from dfnet.session import get_or_create_spark


def reader(num_features: int):
    """A per-partition pass that reads and decodes its rows and computes nothing."""

    def per_partition(batches):
        count = 0
        for batch in batches:
            if batch.num_rows and X_COL in batch.schema.names:
                count += len(decode_arrow_images(batch.column(X_COL), num_features, "float32"))
        yield partial_batch(np.array([float(count)]))

    return per_partition


def jobs_and_tasks(spark, action) -> tuple[int, int]:
    """Run ``action`` under a fresh job group; count its jobs and their tasks."""
    sc = spark.sparkContext
    group = f"dfnet-bench-{time.time_ns()}"
    sc.setJobGroup(group, "partitions benchmark")
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    tracker = sc.statusTracker()
    jobs = tracker.getJobIdsForGroup(group)
    tasks = 0
    for job in jobs:
        info = tracker.getJobInfo(job)
        for stage in (info.stageIds if info else []):
            stage_info = tracker.getStageInfo(stage)
            tasks += stage_info.numTasks if stage_info else 0
    return len(jobs), tasks


def measure(spark, df, net, params, partitions: int, repeats: int) -> dict:
    data = encode_training_data(df, features_col="image", label_col="label", num_features=784, dtype="float32",
                                num_partitions=partitions)
    engine = DataFrameEngine(net)
    sc = spark.sparkContext

    def collect_step():
        broadcast = sc.broadcast(params)
        rows = data.frame.mapInArrow(partial_gradient_sums(net, broadcast), PARTIAL_SCHEMA).collect()
        broadcast.destroy()
        return np.sum([np.asarray(r[0]) for r in rows], axis=0)

    variants = {
        "step": lambda: engine.gradient(params, data.frame),
        "empty": lambda: spark.range(0, partitions, numPartitions=partitions)
        .mapInArrow(reader(784), PARTIAL_SCHEMA).collect(),
        "read": lambda: data.frame.mapInArrow(reader(784), PARTIAL_SCHEMA).collect(),
        "collect": collect_step,
    }
    try:
        for fn in variants.values():
            fn()
        seconds = {name: [] for name in variants}
        for _ in range(repeats):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
        jobs, tasks = jobs_and_tasks(spark, variants["step"])
    finally:
        data.release()
    med = {name: statistics.median(v) for name, v in seconds.items()}
    return {
        "partitions": partitions, "seconds_per_epoch": med["step"], "jobs_per_epoch": jobs,
        "tasks_per_epoch": tasks, "medians": med,
        "breakdown": {"scheduling": med["empty"], "transfer": med["read"] - med["empty"],
                      "compute": med["collect"] - med["read"], "aggregation": med["step"] - med["collect"]},
        "samples": seconds,
    }


def figure(results: list[dict]):
    import plotly.graph_objects as go

    xs = [str(r["partitions"]) for r in results]
    fig = go.Figure()
    for part in ("scheduling", "transfer", "compute", "aggregation"):
        fig.add_trace(go.Bar(name=part, x=xs, y=[r["breakdown"][part] for r in results]))
    fig.add_trace(go.Scatter(name="step (measured)", x=xs, y=[r["seconds_per_epoch"] for r in results],
                             mode="lines+markers"))
    fig.update_layout(barmode="relative", title="Seconds per full-batch epoch, 60,000 rows, 784-64-10, local[2]",
                      xaxis_title="partitions", yaxis_title="seconds")
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", default="1,2,4,8,16,32,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--name", default="partitions")
    args = parser.parse_args(argv)
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-partitions")
    df = load_dataframe(spark, "fashion-mnist", "train", data_dir=args.data_dir).cache()
    df.count()
    net = build_mlp(784, [64], 10, dtype="float32")
    params = net.init_params(0, "he")
    warm = encode_training_data(df, features_col="image", label_col="label", num_features=784, dtype="float32")
    for _ in range(20):  # the JVM runs ~30% slower for its first ~20 jobs
        DataFrameEngine(net).gradient(params, warm.frame)
    warm.release()
    results = []
    for p in (int(v) for v in args.partitions.split(",")):
        r = measure(spark, df, net, params, p, args.repeats)
        b = r["breakdown"]
        print(f"{p:3d} partitions: {r['seconds_per_epoch']:.3f} s/epoch | {r['jobs_per_epoch']} job(s), "
              f"{r['tasks_per_epoch']} tasks | scheduling {b['scheduling']:.3f} transfer {b['transfer']:.3f} "
              f"compute {b['compute']:.3f} aggregation {b['aggregation']:.3f}", flush=True)
        results.append(r)
    print("\n| partitions | s/epoch | jobs | tasks | scheduling | transfer | compute | aggregation |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        b = r["breakdown"]
        print(f"| {r['partitions']} | {r['seconds_per_epoch']:.3f} | {r['jobs_per_epoch']} | {r['tasks_per_epoch']} | "
              f"{b['scheduling']:.3f} | {b['transfer']:.3f} | {b['compute']:.3f} | {b['aggregation']:.3f} |")
    path = save_results(args.name, {"environment": environment(spark), "rows": 60000, "layers": [784, 64, 10],
                                    "results": results}, figure(results))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
