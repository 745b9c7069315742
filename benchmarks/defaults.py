"""dfnet's defaults against what a user would pick instead, measured in one run.

    python benchmarks/defaults.py [--cases digits,fashion,fashion-8,fashion-16,cnn] [--master local[2]]

Cases (every dfnet run uses dfnet's defaults plus only what the case names):
  digits      `dfnet train` with no options, as a new user runs it (a fresh process: its training time is
              metrics.json's train_seconds, the whole fit), beside scikit-learn's MLPClassifier(128) fit on the
              same 80/20 split, and the same dfnet fit in this warm process
  fashion     fit() on Fashion-MNIST 60,000 -> 10,000 (test accuracy scored after every epoch, outside the
              training seconds), beside a single-process numpy run of the same schedule (one model, the same
              batch, learning rates and initial weights): seconds to 88% test accuracy for both
  fashion-8   the same with --partitions 8; fashion-16 with --partitions 16
  cnn         `dfnet train --model cnn --dataset mnist --dropout 0.25 --early-stopping 5 --validation-split 0.1`
  cnn-2       the same with two convolution blocks, `--kernels 16,32`

Prints a table and saves benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import default_data_dir, environment, save_results

from dfnet.config import TrainConfig, auto_batch_size
from dfnet.datasets import get_dataset, load_arrays, load_dataframe
from dfnet.optim import make_optimizer
from dfnet.session import get_or_create_spark
from dfnet.train import build_network, fit

TARGET = 0.88


def cli_run(args: list[str], data_dir: str, master: str) -> dict:
    """`dfnet train ARGS` in a fresh process; its metrics.json plus the process's wall seconds."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dfnet.cli", "train", *args, "--output", str(out),
                               "--data-dir", data_dir, "--master", master, "--no-progress", "--no-report"],
                              capture_output=True, text=True, cwd=folder)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        print(proc.stdout, flush=True)
        metrics = json.loads((out / "metrics.json").read_text())
        history = json.loads((out / "history.json").read_text())
    return {"args": args, "accuracy": metrics["test_accuracy"], "train_seconds": metrics["train_seconds"],
            "epoch_seconds": sum(h["seconds"] for h in history), "epochs": len(history),
            "process_seconds": wall, "best_epoch": metrics.get("best_epoch"),
            "stopped_epoch": metrics.get("stopped_epoch"), "schedule_plan": metrics["schedule_plan"]}


def sklearn_digits() -> dict:
    from sklearn.neural_network import MLPClassifier

    X, y = load_arrays("digits", "train")
    Xt, yt = load_arrays("digits", "test")
    X, Xt = X.reshape(len(X), -1) / 16.0, Xt.reshape(len(Xt), -1) / 16.0
    start = time.perf_counter()
    clf = MLPClassifier(hidden_layer_sizes=(128,), random_state=0).fit(X, y)
    seconds = time.perf_counter() - start
    return {"accuracy": float(clf.score(Xt, yt)), "train_seconds": seconds, "epochs": int(clf.n_iter_)}


def first_at(curve: list[tuple[float, float]], target: float):
    """(epoch, cumulative seconds) of the first epoch at ``target`` accuracy, else None."""
    total = 0.0
    for epoch, (seconds, accuracy) in enumerate(curve, start=1):
        total += seconds
        if accuracy >= target:
            return {"epoch": epoch, "seconds": total}
    return None


def dfnet_fashion(spark, data_dir: str, partitions: int | None) -> dict:
    train = load_dataframe(spark, "fashion-mnist", "train", data_dir=data_dir)
    test = load_dataframe(spark, "fashion-mnist", "test", data_dir=data_dir)
    start = time.perf_counter()
    model = fit(train, TrainConfig(partitions=partitions), validation_df=test)
    wall = time.perf_counter() - start
    curve = [(h["seconds"], h["val_accuracy"]) for h in model.history]
    return {"partitions": partitions, "accuracy": model.history[-1]["val_accuracy"],
            "train_seconds": sum(s for s, _ in curve), "fit_wall_seconds": wall, "to_target": first_at(curve, TARGET),
            "schedule_plan": model.schedule_plan, "curve": curve}


def numpy_fashion(data_dir: str) -> dict:
    """The schedule dfnet's defaults run, in one process: one model, its batch and learning rates."""
    from threadpoolctl import threadpool_limits

    spec = get_dataset("fashion-mnist")

    def arrays(split):
        images, labels = load_arrays("fashion-mnist", split, data_dir)
        return np.divide(images.reshape(len(images), -1), spec.max_value, dtype=np.float32), labels

    (X, y), (Xt, yt) = arrays("train"), arrays("test")
    config = TrainConfig()
    batch = auto_batch_size(len(y))
    net = build_network(config, X.shape[1], 10)
    params = net.init_params(config.seed, config.init_scheme)
    curve = []
    with threadpool_limits(limits=1, user_api="blas"):  # what one Spark task gets
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            optimizer = make_optimizer("adam", config.lr_at(epoch))  # fresh each epoch, as a local round
            order = np.random.default_rng([config.seed, epoch, 0]).permutation(len(y))
            for first in range(0, len(order), batch):
                rows = order[first:first + batch]
                step = net.loss_and_grad(params, X[rows], y[rows])
                optimizer.step(params, step.grad_sum / step.count)
            seconds = time.perf_counter() - start
            curve.append((seconds, float(np.mean(np.argmax(net.forward(params, Xt), 1) == yt))))
            print(f"   numpy epoch {epoch:2d} | {seconds:5.2f} s | test acc {curve[-1][1]:.4f}", flush=True)
    return {"batch_size": batch, "accuracy": curve[-1][1], "train_seconds": sum(s for s, _ in curve),
            "to_target": first_at(curve, TARGET), "curve": curve}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="digits,fashion,fashion-8,fashion-16,cnn")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="defaults")
    args = parser.parse_args()
    cases = args.cases.split(",")
    results: dict = {}
    lines = []
    if "digits" in cases:
        sk = sklearn_digits()
        cold = cli_run([], args.data_dir, args.master)
        results["digits"] = {"sklearn": sk, "dfnet_cli": cold}
        lines.append(f"| digits, `dfnet train` (fresh process) | {cold['accuracy']:.4f} | {cold['train_seconds']:.2f} s "
                     f"| sklearn MLPClassifier(128): {sk['accuracy']:.4f} in {sk['train_seconds']:.2f} s | "
                     f"{cold['train_seconds'] / sk['train_seconds']:.2f}x |")
    for case, kernels in (("cnn", []), ("cnn-2", ["--kernels", "16,32"])):
        if case not in cases:
            continue
        cnn = cli_run(["--model", "cnn", *kernels, "--dataset", "mnist", "--dropout", "0.25", "--early-stopping", "5",
                       "--validation-split", "0.1"], args.data_dir, args.master)
        results[case] = cnn
        lines.append(f"| {case} mnist 5,000 -> 10,000, dropout 0.25, early stopping 5 | {cnn['accuracy']:.4f} | "
                     f"{cnn['train_seconds']:.2f} s | best epoch {cnn['best_epoch']}, stopped "
                     f"{cnn['stopped_epoch']} | - |")
    if not any(c == "digits" or c.startswith("fashion") for c in cases):  # CLI cases only: no session here
        print("\n".join(lines))
        save_results(args.name, {"options": vars(args), "results": results, "table": lines})
        return 0
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-defaults")
    if "digits" in cases:
        train = load_dataframe(spark, "digits", "train")
        fit(train, TrainConfig(epochs=3), verbose=False)  # warm the JVM
        start = time.perf_counter()
        warm = fit(train, verbose=False)
        seconds = time.perf_counter() - start
        accuracy = warm.evaluate(load_dataframe(spark, "digits", "test")).accuracy
        results["digits"]["dfnet_warm"] = {"accuracy": accuracy, "train_seconds": seconds}
        sk = results["digits"]["sklearn"]
        lines.append(f"| digits, fit() in a warm process | {accuracy:.4f} | {seconds:.2f} s | (same sklearn) | "
                     f"{seconds / sk['train_seconds']:.2f}x |")
    fashion_cases = [c for c in cases if c.startswith("fashion")]
    if fashion_cases:
        reference = numpy_fashion(args.data_dir)
        results["numpy"] = reference
        ref = reference["to_target"]
        lines.append(f"| fashion, numpy single process (the same schedule) | {reference['accuracy']:.4f} | "
                     f"{reference['train_seconds']:.2f} s | 88% at epoch {ref and ref['epoch']}, "
                     f"{ref and round(ref['seconds'], 2)} s | 1.00x |")
        for case in fashion_cases:
            partitions = int(case.split("-")[1]) if "-" in case else None
            run = dfnet_fashion(spark, args.data_dir, partitions)
            results[case] = run
            hit = run["to_target"]
            ratio = f"{hit['seconds'] / ref['seconds']:.2f}x" if hit and ref else "-"
            lines.append(f"| {case}, fit() defaults | {run['accuracy']:.4f} | {run['train_seconds']:.2f} s | "
                         f"88% at epoch {hit and hit['epoch']}, {hit and round(hit['seconds'], 2)} s | {ratio} |")
    print("\n| run | test accuracy | training seconds | reference / time to 88% | ratio |\n|---|---|---|---|---|")
    print("\n".join(lines))
    save_results(args.name, {"environment": environment(spark), "options": vars(args), "results": results,
                             "table": lines})
    return 0


if __name__ == "__main__":
    sys.exit(main())
