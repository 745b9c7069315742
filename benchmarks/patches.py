"""Patches benchmark: a CNN's first-layer patches cut inline in each step, or exploded into cached rows.

    python benchmarks/patches.py [--repeats 5] [--partitions 2]

MNIST's 5,000 training images (28x28), the network 5x5x8 conv (valid) ->
ReLU -> 2x2 max-pool -> 32 ReLU -> 10 softmax, float32, ``local[2]``, warm
JVM. For ``inline`` (cached images) and ``explode`` at both granularities
(``image-row``: 24 rows of 24x25 values per image; ``position``: 576 rows of
25 values) it measures the cache's rows and bytes in Spark's storage, and as
interleaved medians of --repeats: seconds to build the cache (warm), a
full-batch gradient step (the classic schedule's epoch), a model-averaging
epoch (batch 64, one job), and a read-only pass (every partition streams and
decodes its rows into the step's input tensors, no maths) that separates
moving the rows from computing on them. It also times cutting the
``image-row`` patch rows with a pandas UDF against the Arrow UDF (both written
to a no-op sink). Saves benchmarks/results/patches.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from common import default_data_dir, environment, save_results
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.engine.data import LABEL_COL, ROW_COL, X_COL, as_pixels
from dfnet.engine.dataframe import PARTIAL_SCHEMA, DataFrameEngine, LocalPlan, partial_batch
from dfnet.engine.patches import POS_COL, PatchRows, patch_frame
from dfnet.nn.conv import image_patches
from dfnet.session import get_or_create_spark
from dfnet.train import build_network

CASES = [("inline", "image-row"), ("explode", "image-row"), ("explode", "position")]


def cached_bytes(spark) -> int:
    infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
    return sum(int(i.memSize()) + int(i.diskSize()) for i in infos)


def reader(rows):
    """A per-partition pass that decodes its rows into the step's inputs and computes nothing."""

    def per_partition(batches):
        count = sum(len(as_pixels(x, rows.dtype)) for x, _, _ in rows.decode(batches))  # as the step's inputs
        yield partial_batch(np.array([float(count)]))

    return per_partition


def pandas_udf_frame(df, layout: PatchRows, partitions: int):
    """The patch rows of explode_patches, cut by a pandas UDF (one bytes object per patch row)."""
    shape, per_image = layout.image_shape, layout.rows_per_image

    def cut(images: pd.Series) -> pd.Series:
        X = np.stack(images.to_numpy()).reshape((len(images), *shape))
        P = image_patches(X, layout.kernel_size, layout.padding)
        levels = np.rint(P * 255).astype(np.uint8).reshape(len(images), per_image, -1)
        return pd.Series([[row.tobytes() for row in image] for image in levels])

    udf = F.pandas_udf(cut, T.ArrayType(T.BinaryType(), False))
    source = df.select("image", "label").withColumn(ROW_COL, F.monotonically_increasing_id())
    source = source.repartition(partitions, ROW_COL)
    return (source.select(ROW_COL, F.posexplode(udf("image")).alias(POS_COL, X_COL),
                          F.col("label").cast("int").alias(LABEL_COL))
            .sortWithinPartitions(ROW_COL, POS_COL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--data-dir", default=default_data_dir())
    args = parser.parse_args()

    spark = get_or_create_spark("local[2]", app_name="dfnet-bench-patches")
    df = load_dataframe(spark, "mnist", "train", data_dir=args.data_dir).cache()
    df.count()
    config = TrainConfig(model="cnn", kernels=(8,), kernel_size=5, hidden=(32,), dtype="float32")
    net = build_network(config, 784, 10)
    params = net.init_params(0, "he")
    plan = LocalPlan(epoch=1, round=0, steps=10**6, batch_size=64, seed=0, optimizer="adam", lr=0.002,
                     optimizer_args=dict(momentum=0.9, beta1=0.9, beta2=0.999))

    engines, data, results = {}, {}, {}
    for patches, rows in CASES:
        name = patches if patches == "inline" else f"explode/{rows}"
        engines[name] = DataFrameEngine(net, patches=patches, patch_rows=rows)
        before = cached_bytes(spark)
        start = time.perf_counter()
        data[name] = engines[name].prepare(df, features_col="image", label_col="label",
                                           num_partitions=args.partitions)
        seconds = time.perf_counter() - start
        results[name] = {"images": data[name].count, "rows": data[name].frame.count(),
                         "cached_bytes": cached_bytes(spark) - before, "cache_seconds": seconds,
                         "cache": [], "step": [], "average": [], "read": []}
        print(name, {k: v for k, v in results[name].items() if not isinstance(v, list)}, flush=True)

    # The two UDFs, cut + posexplode + sort written to a no-op sink (no cache), interleaved.
    udf_seconds = {"arrow": [], "pandas": []}
    layout = engines["explode/image-row"].rows
    for _ in range(3):
        for kind in udf_seconds:
            frame = (patch_frame(df, layout, features_col="image", label_col="label",
                                 num_partitions=args.partitions) if kind == "arrow"
                     else pandas_udf_frame(df, layout, args.partitions))
            start = time.perf_counter()
            frame.write.format("noop").mode("overwrite").save()
            udf_seconds[kind].append(time.perf_counter() - start)
    results["udf_seconds"] = {k: statistics.median(v) for k, v in udf_seconds.items()}
    print("image-row patch rows cut + exploded + sorted, medians:", results["udf_seconds"], flush=True)

    for _ in range(2):  # warm-up
        for name in engines:
            engines[name].gradient(params, data[name].frame)
    for _ in range(args.repeats):
        for name in engines:
            data[name].release()  # else Spark's cache manager serves the same plan from the old cache
            start = time.perf_counter()
            data[name] = engines[name].prepare(df, features_col="image", label_col="label",
                                               num_partitions=args.partitions)
            results[name]["cache"].append(time.perf_counter() - start)
            start = time.perf_counter()
            engines[name].gradient(params, data[name].frame)
            results[name]["step"].append(time.perf_counter() - start)
            start = time.perf_counter()
            engines[name].train_locally(params, data[name].frame, plan)
            results[name]["average"].append(time.perf_counter() - start)
            start = time.perf_counter()
            data[name].frame.mapInArrow(reader(engines[name].rows), PARTIAL_SCHEMA).collect()
            results[name]["read"].append(time.perf_counter() - start)
    for name in engines:
        r = results[name]
        for key in ("cache", "step", "average", "read"):
            r[f"{key}_median"] = statistics.median(r[key])
        print(f"{name:22s} rows {r['rows']:>9,} cached {r['cached_bytes'] / 1e6:8.1f} MB "
              f"cache {r['cache_median']:5.2f} s  step {r['step_median']:.3f} s  "
              f"average epoch {r['average_median']:.3f} s  read {r['read_median']:.3f} s", flush=True)
        data[name].release()
    save_results("patches", {"environment": environment(spark), "repeats": args.repeats,
                             "partitions": args.partitions, "network": repr(net), "results": results})


if __name__ == "__main__":
    main()
