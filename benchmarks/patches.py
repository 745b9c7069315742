"""Patches benchmark: a CNN's first-layer patches cut inline in each step, or exploded into cached rows.

    python benchmarks/patches.py [--repeats 5] [--partitions 2]

MNIST's 5,000 training images (28x28), the network 5x5x8 conv (valid) ->
ReLU -> 2x2 max-pool -> 32 ReLU -> 10 softmax, float32, ``local[2]``, warm
JVM. For ``inline`` (cached images) and ``explode`` at both granularities
(``image-row``: 24 rows of 24x25 values per image; ``position``: 576 rows of
25 values) it measures the cache: rows, bytes in Spark's storage, seconds to
build it, and per epoch, interleaved medians of --repeats: a full-batch
gradient step (the classic schedule's epoch) and a model-averaging epoch
(batch 64, one job). It also times building the ``image-row`` cache with a
pandas UDF instead of the Arrow UDF. Saves benchmarks/results/patches.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from common import default_data_dir, environment, save_results
from pyspark import StorageLevel
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.engine.data import LABEL_COL, ROW_COL, X_COL
from dfnet.engine.dataframe import DataFrameEngine, LocalPlan
from dfnet.engine.patches import POS_COL, PatchRows
from dfnet.nn.conv import image_patches
from dfnet.session import get_or_create_spark
from dfnet.train import build_network

CASES = [("inline", "image-row"), ("explode", "image-row"), ("explode", "position")]


def cached_bytes(spark) -> int:
    infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
    return sum(int(i.memSize()) + int(i.diskSize()) for i in infos)


def pandas_udf_cache(df, layout: PatchRows, partitions: int):
    """The same patch rows as explode_patches, cut by a pandas UDF (one bytes object per patch row)."""
    shape, per_image = layout.image_shape, layout.rows_per_image

    def cut(images: pd.Series) -> pd.Series:
        X = np.stack(images.to_numpy()).reshape((len(images), *shape))
        P = image_patches(X, layout.kernel_size, layout.padding)
        levels = np.rint(P * 255).astype(np.uint8).reshape(len(images), per_image, -1)
        return pd.Series([[row.tobytes() for row in image] for image in levels])

    udf = F.pandas_udf(cut, T.ArrayType(T.BinaryType(), False))
    source = df.select("image", "label").withColumn(ROW_COL, F.monotonically_increasing_id())
    source = source.repartition(partitions, ROW_COL)
    frame = (source.select(ROW_COL, F.posexplode(udf("image")).alias(POS_COL, X_COL),
                           F.col("label").cast("int").alias(LABEL_COL))
             .sortWithinPartitions(ROW_COL, POS_COL).persist(StorageLevel.MEMORY_AND_DISK))
    return frame, frame.count()


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
                         "step": [], "average": []}
        print(name, {k: v for k, v in results[name].items() if not isinstance(v, list)}, flush=True)

    start = time.perf_counter()
    frame, rows = pandas_udf_cache(df, engines["explode/image-row"].rows, args.partitions)
    results["explode/image-row, pandas UDF"] = {"rows": rows, "cache_seconds": time.perf_counter() - start}
    frame.unpersist()
    # the Arrow UDF cache again, now that the JVM is warm, for a fair comparison
    start = time.perf_counter()
    again = engines["explode/image-row"].prepare(df, features_col="image", label_col="label",
                                                 num_partitions=args.partitions)
    results["explode/image-row"]["cache_seconds_warm"] = time.perf_counter() - start
    again.release()
    print("pandas UDF", results["explode/image-row, pandas UDF"], "arrow UDF warm",
          results["explode/image-row"]["cache_seconds_warm"], flush=True)

    for _ in range(2):  # warm-up
        for name in engines:
            engines[name].gradient(params, data[name].frame)
    for _ in range(args.repeats):
        for name in engines:
            start = time.perf_counter()
            engines[name].gradient(params, data[name].frame)
            results[name]["step"].append(time.perf_counter() - start)
            start = time.perf_counter()
            engines[name].local_training(params, data[name].frame, plan)
            results[name]["average"].append(time.perf_counter() - start)
    for name in engines:
        r = results[name]
        r["step_median"], r["average_median"] = statistics.median(r["step"]), statistics.median(r["average"])
        print(f"{name:22s} rows {r['rows']:>9,} cached {r['cached_bytes'] / 1e6:8.1f} MB "
              f"cache {r['cache_seconds']:6.2f} s  step {r['step_median']:.3f} s  "
              f"average epoch {r['average_median']:.3f} s", flush=True)
        data[name].release()
    save_results("patches", {"environment": environment(spark), "repeats": args.repeats,
                             "partitions": args.partitions, "network": repr(net), "results": results})


if __name__ == "__main__":
    main()
