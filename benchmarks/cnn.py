"""CNN benchmark: a small CNN on full Fashion-MNIST through both patch paths.

    python benchmarks/cnn.py [--dataset fashion-mnist] [--paths inline,explode] [--epochs 12]
                             [--kernels 32] [--kernel-size 5] [--hidden 128] [--limit N]

For each patch path (``--patches inline``: each step cuts the first
convolution's patches inside its numpy pass; ``--patches explode``: an Arrow
UDF + ``posexplode`` cuts them once into cached patch rows) it trains the same
network from the same weights with the same schedule, scores the official test
split after every epoch, and reports:

  cache        rows, bytes (memory + disk, from Spark's storage status) and seconds to fill it
  epochs       seconds per epoch (median), test accuracy per epoch, final and best accuracy

Both paths compute the same gradients (tests/test_cnn.py); their weights differ
only by float summation order. Saves benchmarks/results/cnn.json and .html.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import default_data_dir, environment, save_results

from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.session import get_or_create_spark
from dfnet.train import build_network, engine_for, fit


def cached_bytes(spark) -> int:
    """Memory + disk bytes of everything Spark has cached right now."""
    return sum(info.memSize() + info.diskSize() for info in spark.sparkContext._jsc.sc().getRDDStorageInfo())


def cache_cost(spark, df, config: TrainConfig, network) -> dict:
    """Fill the path's cache once on its own: rows, bytes, seconds (nothing else is cached meanwhile)."""
    before = cached_bytes(spark)
    start = time.perf_counter()
    data = engine_for(config, network).prepare(df, features_col="image", label_col="label",
                                               num_partitions=config.partitions)
    seconds = time.perf_counter() - start
    try:
        rows = data.frame.count()
        size = cached_bytes(spark) - before
    finally:
        data.release()
    return {"rows": rows, "images": data.count, "bytes": size, "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--paths", default="inline,explode")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--kernels", default="32")
    parser.add_argument("--kernel-size", type=int, default=5)
    parser.add_argument("--hidden", default="128")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N training images only (smoke runs)")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--name", default="cnn")
    args = parser.parse_args(argv)
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-cnn")
    train = load_dataframe(spark, args.dataset, "train", data_dir=args.data_dir)
    if args.limit:
        train = train.limit(args.limit)
    train = train.cache()
    test = load_dataframe(spark, args.dataset, "test", data_dir=args.data_dir).cache()
    n_train, n_test = train.count(), test.count()
    first = train.select("image", "label").first()
    num_features = len(first["image"])
    num_classes = int(train.agg({"label": "max"}).first()[0]) + 1
    base = TrainConfig(model="cnn", kernels=tuple(int(k) for k in args.kernels.split(",")),
                       kernel_size=args.kernel_size, pool=2, hidden=tuple(int(h) for h in args.hidden.split(",")),
                       activation="relu", schedule="average", batch_size=args.batch_size, lr=args.lr,
                       lr_schedule="cosine", epochs=args.epochs, partitions=args.partitions, seed=0).validate()
    print(f"{args.dataset}: {n_train:,} -> {n_test:,} images | CNN kernels {list(base.kernels)} "
          f"{base.kernel_size}x{base.kernel_size}, pool 2, dense {list(base.hidden)} | average schedule, Adam "
          f"{base.lr} cosine, batch {base.batch_size}, {base.epochs} epochs, {args.partitions} partitions", flush=True)
    results = []
    for path in [p for p in args.paths.split(",") if p]:
        config = base.replace(patches=path).validate()
        network = build_network(config, num_features, num_classes)
        cache = cache_cost(spark, train, config, network)
        print(f"\n== patches={path}: cache {cache['rows']:,} rows, {cache['bytes'] / 1e6:,.1f} MB, "
              f"filled in {cache['seconds']:.1f} s", flush=True)
        model = fit(train, config, network=network, num_classes=num_classes, validation_df=test, verbose=True)
        history = model.history
        seconds = [h["seconds"] for h in history]
        accuracy = [h["val_accuracy"] for h in history]
        results.append({"patches": path, "cache": cache, "epoch_seconds": seconds,
                        "median_epoch_seconds": statistics.median(seconds[1:] or seconds),
                        "test_accuracy": accuracy, "final_accuracy": accuracy[-1], "best_accuracy": max(accuracy),
                        "num_params": network.num_params})
    print("\n| patches | cached rows | cached MB | cache fill s | s/epoch (median) | final test acc | best |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        c = r["cache"]
        print(f"| {r['patches']} | {c['rows']:,} | {c['bytes'] / 1e6:,.1f} | {c['seconds']:.1f} | "
              f"{r['median_epoch_seconds']:.2f} | {r['final_accuracy']:.4f} | {r['best_accuracy']:.4f} |")
    payload = {"environment": environment(spark), "dataset": args.dataset, "train_images": n_train,
               "test_images": n_test, "config": base.to_dict(), "results": results}
    path = save_results(args.name, payload, figure(results))
    print(f"\nsaved {path}")
    return 0


def figure(results: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in results:
        elapsed = [sum(r["epoch_seconds"][:i + 1]) for i in range(len(r["epoch_seconds"]))]
        fig.add_trace(go.Scatter(x=elapsed, y=r["test_accuracy"], mode="lines+markers",
                                 name=f"patches={r['patches']}"))
    fig.update_layout(title="CNN test accuracy against training seconds, by patch path",
                      xaxis_title="cumulative training seconds", yaxis_title="test accuracy")
    return fig


if __name__ == "__main__":
    sys.exit(main())
