"""Aggregation benchmark: the ways to sum one partial vector per partition, against collect-and-sum.

    python benchmarks/aggregation.py [--sizes 50890,235146,1000000] [--partitions 2,8,32] [--repeats 5]

A training step ends with every partition holding one vector of partial sums
(gradient + loss, correct, count) that must be added up and brought to the
driver. To isolate that cost from the gradient pass, each partition here emits
a ready-made vector of --sizes doubles (50,890 is 784-64-10's parameter count,
235,146 is 784-256-128-10's) through ``mapInArrow``, and the variants differ
only in how the sum is made. All run with adaptive execution off (what the
engine does: one job per step) and are checked to give the same sum.

  empty         the same job with an empty vector per partition, collected: the job floor
  collect       collect the partition rows (pickled rows) and sum on the driver
  collect-arrow the same through DataFrame.toArrow() (Arrow, no pickling), added in partition
                order   <- dfnet's engine, aggregate="collect" (the default below 2^25 values)
  collect-arrow-unordered  the same, added in arrival order (dfnet before the partition order)
  pandas-udf    groupBy().agg(grouped-aggregate pandas UDF), result by first()
  pandas-arrow  the same aggregation, result through toArrow(), the UDF adding in partition
                order   <- dfnet's engine, aggregate="agg"
  pandas-arrow-unordered   the same, added in arrival order (dfnet before the partition order)
  arrow-udf     groupBy().agg(grouped-aggregate Arrow UDF, pyspark >= 4.1: no pandas), result through toArrow()
  chunks        rows of 8,192-value chunks, groupBy("chunk").agg(aggregate(collect_list, zip_with))
  posexplode    posexplode into one row per value, groupBy("pos").sum()  (sizes <= 250,000 only)

Reports medians of --repeats (interleaved, after a warm-up) and each variant's
cost above the empty job, as a ratio to collect's. Saves
benchmarks/results/aggregation.json and .html.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
from common import environment, save_results
from pyspark import TaskContext
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dfnet.compat import to_arrow
from dfnet.engine.dataframe import (PARTIAL_COL, PARTIAL_SCHEMA, PARTITION_COL, adaptive_execution_off, make_sum_vectors, partial_batch,
                                    sum_on_driver)
from dfnet.session import get_or_create_spark

CHUNK = 8192
POSEXPLODE_MAX = 250_000
CHUNK_SCHEMA = T.StructType([T.StructField("chunk", T.IntegerType(), False),
                             T.StructField("part", T.ArrayType(T.DoubleType(), False), False)])


def vector(partition: int, size: int) -> np.ndarray:
    return np.random.default_rng(partition).standard_normal(size)


def emit_vector(size: int):
    def per_partition(batches):
        for _ in batches:
            pass
        yield partial_batch(vector(TaskContext.get().partitionId(), size))
    return per_partition


def emit_chunks(size: int):
    def per_partition(batches):
        for _ in batches:
            pass
        v = vector(TaskContext.get().partitionId(), size)
        starts = range(0, size, CHUNK)
        yield pa.RecordBatch.from_arrays(
            [pa.array(list(range(len(starts))), type=pa.int32()),
             pa.array([v[s:s + CHUNK] for s in starts], type=pa.list_(pa.float64()))], names=["chunk", "part"])
    return per_partition


def _unordered_sum_vectors(partials: pd.Series) -> np.ndarray:
    """The aggregation UDF before the partition order: the rows stacked as they arrived."""
    return np.sum(np.stack(partials.to_numpy()), axis=0)


def _unordered_on_driver(column: pa.ChunkedArray) -> np.ndarray | None:
    """The driver's sum before the partition order: chunk by chunk, as the batches arrived."""
    total = None
    for chunk in column.chunks:
        chunk = chunk.drop_null()
        if len(chunk):
            part = chunk.flatten().to_numpy(zero_copy_only=False).reshape(len(chunk), -1).sum(axis=0)
            total = part if total is None else total + part
    return total


def sum_arrow(partials: pa.Array) -> pa.Scalar:
    """The grouped-aggregate Arrow UDF: element-wise sum of the group's vectors (the engine's own
    ``sum_on_driver``), as one list scalar."""
    total = sum_on_driver(pa.table({PARTIAL_COL: partials}))
    return pa.ListArray.from_arrays(pa.array([0, len(total)], pa.int32()), pa.array(total))[0]


def variants(spark, partitions: int, size: int) -> dict:
    """Each call builds its query anew, as every training step does: re-running one planned
    query would reuse its shuffle output and skip the map stage."""
    source = spark.range(0, partitions, numPartitions=partitions)
    sum_vectors = make_sum_vectors()
    unordered_sum = F.pandas_udf(_unordered_sum_vectors, T.ArrayType(T.DoubleType(), True))

    def partials():
        return source.mapInArrow(emit_vector(size), PARTIAL_SCHEMA)

    def aggregated():
        return partials().groupBy().agg(sum_vectors(PARTITION_COL, PARTIAL_COL).alias(PARTIAL_COL))

    def aggregated_unordered():
        return partials().groupBy().agg(unordered_sum(PARTIAL_COL).alias(PARTIAL_COL))

    def chunks():
        lst = F.collect_list("part")
        total = F.aggregate(F.slice(lst, 2, F.size(lst)), F.element_at(lst, 1),
                            lambda acc, x: F.zip_with(acc, x, lambda a, b: a + b))
        rows = (source.mapInArrow(emit_chunks(size), CHUNK_SCHEMA).groupBy("chunk").agg(total.alias("total"))
                .collect())
        return np.concatenate([np.asarray(r["total"]) for r in sorted(rows, key=lambda r: r["chunk"])])

    def posexplode():
        rows = to_arrow(partials().select(F.posexplode(PARTIAL_COL)).groupBy("pos").agg(F.sum("col").alias("total")))
        pos = rows.column("pos").to_numpy()
        out = np.empty(size)
        out[pos] = rows.column("total").to_numpy()
        return out

    out = {
        "empty": lambda: source.mapInArrow(emit_vector(0), PARTIAL_SCHEMA).collect(),
        "collect": lambda: np.sum([np.asarray(r[PARTIAL_COL]) for r in partials().collect()], axis=0),
        # The Arrow forms sum exactly as the engine does (sum_on_driver: in partition order).
        "collect-arrow": lambda: sum_on_driver(to_arrow(partials())),
        # ... and as it did before the partition order (rows added as they arrived).
        "collect-arrow-unordered": lambda: _unordered_on_driver(to_arrow(partials()).column(PARTIAL_COL)),
        "pandas-udf": lambda: np.asarray(aggregated().first()[0]),
        "pandas-arrow": lambda: sum_on_driver(to_arrow(aggregated())),
        "pandas-arrow-unordered": lambda: _unordered_on_driver(to_arrow(aggregated_unordered()).column(0)),
        "chunks": chunks,
    }
    if hasattr(F, "arrow_udf"):  # Spark 4.1+
        arrow_sum = F.arrow_udf(sum_arrow, T.ArrayType(T.DoubleType(), True))
        out["arrow-udf"] = lambda: sum_on_driver(
            to_arrow(partials().groupBy().agg(arrow_sum(PARTIAL_COL).alias(PARTIAL_COL))))
    if size <= POSEXPLODE_MAX:
        out["posexplode"] = posexplode
    return out


def measure(spark, partitions: int, size: int, repeats: int) -> dict:
    fns = variants(spark, partitions, size)
    expected = np.sum([vector(p, size) for p in range(partitions)], axis=0)
    seconds = {name: [] for name in fns}
    with adaptive_execution_off(spark):
        for name, fn in fns.items():  # warm-up, and every variant must give the same sum
            result = fn()
            if name != "empty" and not np.allclose(result, expected, rtol=1e-9, atol=1e-9):
                raise AssertionError(f"{name} gave a different sum")
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in seconds.items()}
    above = {name: med[name] - med["empty"] for name in med if name != "empty"}
    return {"partitions": partitions, "size": size, "medians": med, "above_empty": above,
            "ratio_to_collect": {name: med[name] / med["collect"] for name in med},
            "samples": seconds}


def figure(results: list[dict]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    sizes = sorted({r["size"] for r in results})
    fig = make_subplots(rows=1, cols=len(sizes), subplot_titles=[f"{s:,} values" for s in sizes], shared_yaxes=True)
    names = [n for n in results[0]["medians"] if n != "empty"]
    for col, size in enumerate(sizes, start=1):
        rows = [r for r in results if r["size"] == size]
        for i, name in enumerate(names):
            fig.add_trace(go.Scatter(x=[r["partitions"] for r in rows if name in r["medians"]],
                                     y=[r["medians"][name] for r in rows if name in r["medians"]],
                                     mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                                     line=dict(color=f"hsl({i * 360 // len(names)},60%,45%)")), row=1, col=col)
        fig.update_xaxes(type="log", title_text="partitions", row=1, col=col)
    fig.update_yaxes(title_text="seconds per sum", row=1, col=1)
    fig.update_layout(title="Summing one vector per partition: aggregation variants against collect-and-sum")
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50890,235146,1000000")
    parser.add_argument("--partitions", default="2,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--name", default="aggregation")
    args = parser.parse_args(argv)
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-aggregation")
    for _ in range(20):  # the JVM runs ~30% slower for its first ~20 jobs
        spark.range(0, 2, numPartitions=2).mapInArrow(emit_vector(10), PARTIAL_SCHEMA).collect()
    results = []
    for size in (int(v) for v in args.sizes.split(",")):
        for partitions in (int(v) for v in args.partitions.split(",")):
            r = measure(spark, partitions, size, args.repeats)
            line = " ".join(f"{n} {s:.3f}" for n, s in r["medians"].items())
            print(f"{size:>9,} values, {partitions:2d} partitions: {line}", flush=True)
            results.append(r)
    names = list(results[0]["medians"])
    print("\nseconds per sum (median); in brackets the cost above the empty job as a ratio to collect's\n")
    print("| values | partitions | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in results:
        cells = []
        for n in names:
            if n not in r["medians"]:
                cells.append("-")
            elif n == "empty":
                cells.append(f"{r['medians'][n]:.3f}")
            else:
                cells.append(f"{r['medians'][n]:.3f} ({r['above_empty'][n] / r['above_empty']['collect']:.2f})")
        print(f"| {r['size']:,} | {r['partitions']} | " + " | ".join(cells) + " |")
    path = save_results(args.name, {"environment": environment(spark), "chunk": CHUNK, "results": results},
                        figure(results))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
