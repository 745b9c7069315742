"""Engines benchmark: seconds per epoch of the same work on every engine, as ratios to numpy.

    python benchmarks/engines.py [--cases fashion01,fashion-64,fashion-128] [--epochs 6]

For each case, every engine trains the same network from the same weights for
`--epochs` epochs of one full-batch update each (the classic schedule), and the
median of the epochs after the first (the warm-up) is reported:

  numpy        single process, the same dfnet.nn code on the driver's arrays (the floor)
  dataframe    broadcast -> mapInArrow partial sums -> groupBy().agg (dfnet's engine)
  dataframe-collect  the same with --aggregate collect (partial sums collected as Arrow, summed on the driver)
  rdd          the classic per-record map chain + reduce
  rdd-batched  mapPartitions over stacked pickled records
  mllib        Spark MLlib's MultilayerPerceptronClassifier (L-BFGS), seconds per iteration,
               from (time of maxIter=2*k) - (time of maxIter=k), k = --epochs

Cases: fashion01   Fashion-MNIST classes 0/1, 12,000 rows, 784-64-2 classic (sigmoid/MSE, 0.7 sample)
       fashion-64  full Fashion-MNIST, 60,000 rows, 784-64-10 ReLU/softmax, all rows
       fashion-128 the same with 784-128-10
--copies K trains every engine on K copies of the case's rows (built in Spark
by a union, see common.copies_of; tiled on the driver for numpy), to see how
the ratios move as the fixed cost of a step is spread over more rows.
Saves benchmarks/results/<--name>.json and .html.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from common import copies_of, default_data_dir, environment, save_results

from dfnet.config import PRESETS, TrainConfig
from dfnet.datasets import load_arrays, load_dataframe
from dfnet.engine.dataframe import summed_in_chunks, unpack
from dfnet.optim import make_optimizer
from dfnet.session import get_or_create_spark
from dfnet.train import build_network, fit

CASES = {
    "fashion01": dict(classes=[0, 1], config={**PRESETS["classic"], "dtype": "float32"}),
    "fashion-64": dict(classes=None, config=dict(hidden=(64,), schedule="classic", sample=1.0, optimizer="adam")),
    "fashion-128": dict(classes=None, config=dict(hidden=(128,), schedule="classic", sample=1.0, optimizer="adam")),
}
ENGINES = ("numpy", "dataframe", "dataframe-collect", "rdd-batched", "rdd", "mllib")
#: Benchmark names that are a dfnet engine with a non-default option.
VARIANTS = {"dataframe-collect": dict(engine="dataframe", aggregate="collect")}


#: Rows per ``loss_and_grad`` call of the numpy floor. With the machine's 2 BLAS threads, the full
#: 60,000 x 784-64-10 pass took 0.092 s in chunks of 1,024 rows against 0.107 s in chunks of 256
#: (the engine's per-task size, tuned for ONE thread) and 0.108 s in one call (medians of 7), so the
#: floor is the faster form.
FLOOR_ROWS = 1024


def numpy_epochs(images, labels, config: TrainConfig, num_classes: int, epochs: int) -> list[float]:
    """The floor: the same steps in one process (sampling with numpy at the same fraction)."""
    X = (images.reshape(len(images), -1) / np.float32(255)).astype(config.dtype, copy=False)
    net = build_network(config, X.shape[1], num_classes)
    params = net.init_params(config.seed, config.init_scheme)
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    rng = np.random.default_rng(config.seed)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        rows = np.nonzero(rng.random(len(labels)) < config.sample)[0] if config.sample < 1 else slice(None)
        total = summed_in_chunks(lambda x, y: net.loss_and_grad(params, x, y), X[rows], labels[rows], FLOOR_ROWS)
        if total is not None:  # a sample may pick no rows: no update, as in fit
            step = unpack(total)
            optimizer.step(params, step.grad_sum / step.count)  # as fit does: float64 sums, driver update
        seconds.append(time.perf_counter() - start)
    return seconds


def mllib_seconds_per_iteration(df, layers: list[int], iterations: int) -> float:
    from pyspark.ml.classification import MultilayerPerceptronClassifier
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    data = df.select(array_to_vector("image").alias("features"), F.col("label").cast("double")).cache()
    data.count()
    times = {}
    try:
        for n in (1, iterations, 2 * iterations):
            mlp = MultilayerPerceptronClassifier(layers=layers, maxIter=n, tol=0.0, seed=0, blockSize=128)
            start = time.perf_counter()
            mlp.fit(data)
            times[n] = time.perf_counter() - start
    finally:
        data.unpersist()
    return (times[2 * iterations] - times[iterations]) / iterations


def run_case(spark, name: str, case: dict, args) -> dict:
    config = TrainConfig(**{**case["config"], "epochs": args.epochs}).validate()
    images, labels = load_arrays("fashion-mnist", "train", args.data_dir)
    id_stride = len(labels)  # ids before the class filter: copy c's ids start at c * id_stride
    if case["classes"]:
        keep = np.isin(labels, case["classes"])
        images, labels = images[keep], np.searchsorted(case["classes"], labels[keep])
    num_classes = len(case["classes"]) if case["classes"] else 10
    df = load_dataframe(spark, "fashion-mnist", "train", data_dir=args.data_dir, classes=case["classes"],
                        num_partitions=args.partitions)
    base = df = df.cache()
    if args.copies > 1:  # the same rows replicated: in Spark for the engines, on the driver for numpy
        # Not cached as array<float>: 600,000 rows would take 1.9 GB of the driver's 2.3 GB of storage
        # memory and crowd out each engine's own training cache (784-64-10: 2.89 s per epoch with
        # this frame cached, 1.76 s without).
        df = copies_of(base, args.copies, args.partitions, id_stride)
        images, labels = np.concatenate([images] * args.copies), np.concatenate([labels] * args.copies)
        name = f"{name}-x{args.copies}"
    rows = df.count()
    layers = [784, *config.hidden, num_classes]
    print(f"\n== {name}: {rows} rows, layers {layers}, {config.activation}/{config.loss}, sample {config.sample}",
          flush=True)
    result = {"case": name, "rows": rows, "layers": layers, "config": config.to_dict(), "engines": {}}
    if not args.warm:
        # The JVM needs ~20 jobs before it runs at speed; warm it on this case's data once.
        fit(df, config.replace(epochs=20), num_classes=num_classes, verbose=False)
        args.warm = True
    for engine in args.engines:
        if engine == "numpy":
            seconds = numpy_epochs(images, labels, config, num_classes, args.epochs)
        elif engine == "mllib":
            per_iter = mllib_seconds_per_iteration(df, layers, args.epochs)
            seconds = [per_iter] * 2
        else:
            options = VARIANTS.get(engine, dict(engine=engine))
            model = fit(df, config.replace(**options), num_classes=num_classes, verbose=False)
            seconds = [h["seconds"] for h in model.history]
        median = statistics.median(seconds[1:])
        result["engines"][engine] = {"median_epoch_seconds": median, "epoch_seconds": seconds}
        print(f"   {engine:12s} {median:8.3f} s/epoch", flush=True)
    floor = result["engines"].get("numpy", {}).get("median_epoch_seconds")
    for e in result["engines"].values():
        e["ratio_to_numpy"] = e["median_epoch_seconds"] / floor if floor else None
    base.unpersist()
    return result


def figure(results: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for engine in ENGINES:
        xs = [r["case"] for r in results if engine in r["engines"]]
        ys = [r["engines"][engine]["ratio_to_numpy"] for r in results if engine in r["engines"]]
        if xs:
            fig.add_trace(go.Bar(name=engine, x=xs, y=ys))
    fig.update_layout(title="Seconds per epoch as a multiple of single-process numpy (same run)",
                      yaxis_type="log", yaxis_title="x numpy floor", barmode="group")
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--epochs", type=int, default=8, help="epochs per engine; the first is not counted")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--copies", type=int, default=1,
                        help="train on this many copies of each case's rows (e.g. 10: 600,000 rows of fashion-64)")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--name", default="engines")
    args = parser.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    if args.copies < 1:
        parser.error(f"--copies must be >= 1, got {args.copies}")
    args.warm = False
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-engines")
    results = [run_case(spark, n, CASES[n], args) for n in args.cases.split(",") if n]
    print("\n| case | rows | layers | " + " | ".join(args.engines) + " |")
    print("|---|---|---|" + "---|" * len(args.engines))
    for r in results:
        cells = [f"{r['engines'][e]['median_epoch_seconds']:.3f} s ({r['engines'][e]['ratio_to_numpy']:.1f}x)"
                 if r["engines"][e]["ratio_to_numpy"] else f"{r['engines'][e]['median_epoch_seconds']:.3f} s"
                 for e in args.engines]
        print(f"| {r['case']} | {r['rows']} | {'-'.join(map(str, r['layers']))} | " + " | ".join(cells) + " |")
    path = save_results(args.name, {"environment": environment(spark), "partitions": args.partitions,
                                    "results": results}, figure(results))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
