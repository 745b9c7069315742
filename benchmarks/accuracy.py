"""Accuracy benchmark of the MLP on real data: test accuracy and seconds per epoch.

    python benchmarks/accuracy.py [--cases mnist01-default,mnist10,...] [--master local[2]]

Cases (each trained from scratch on the DataFrame engine, evaluated on the official test split):
  classic            --preset classic: 784-64-2 sigmoid/MSE, uniform*0.5 init, SGD 0.1, 50 full-batch epochs
  classic-centred    the same with the centred init (uniform in [-0.25, 0.25))
  mnist01-default    dfnet's defaults on MNIST 0/1 (1,000 training images), 5 epochs
  mnist10            784-128-10 ReLU/softmax on 5,000 MNIST digits -> 10,000 test digits, 10 epochs
  fashion            784-256-128-10 ReLU/softmax on the full Fashion-MNIST, 60,000 -> 10,000, 10 epochs

Prints a table and saves benchmarks/results/accuracy.json and accuracy.html
(test accuracy per epoch for every case).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import default_data_dir, environment, save_results

from dfnet.config import PRESETS, TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.session import get_or_create_spark
from dfnet.train import fit

CASES = {
    "classic": dict(dataset="mnist", classes=[0, 1], config=PRESETS["classic"], target=None),
    "classic-centred": dict(dataset="mnist", classes=[0, 1], config={**PRESETS["classic"], "init": "uniform"},
                            target=None),
    "mnist01-default": dict(dataset="mnist", classes=[0, 1], config={}, target=0.998),
    "mnist10": dict(dataset="mnist", classes=None, config=dict(hidden=(128,), epochs=10, lr_schedule="cosine"),
                    target=0.92),
    "fashion": dict(dataset="fashion-mnist", classes=None,
                    config=dict(hidden=(256, 128), epochs=10, batch_size=512, lr=0.003, lr_schedule="cosine",
                                partitions=2), target=0.88),
}


def run_case(spark, name: str, case: dict, data_dir: str) -> dict:
    train = load_dataframe(spark, case["dataset"], "train", data_dir=data_dir, classes=case["classes"])
    test = load_dataframe(spark, case["dataset"], "test", data_dir=data_dir, classes=case["classes"])
    config = TrainConfig(**case["config"])
    print(f"\n== {name}: {case['dataset']} classes {case['classes'] or 'all'} | {config.to_dict()}", flush=True)
    start = time.perf_counter()
    model = fit(train, config, num_classes=len(case["classes"]) if case["classes"] else None, validation_df=test)
    wall = time.perf_counter() - start
    final = model.evaluate(test)
    epochs = model.history
    result = {
        "case": name, "dataset": case["dataset"], "classes": case["classes"], "config": config.to_dict(),
        "test_accuracy": final.accuracy, "target": case["target"],
        "meets_target": None if case["target"] is None else final.accuracy >= case["target"],
        "median_epoch_seconds": statistics.median(h["seconds"] for h in epochs),
        "median_epoch_seconds_after_first": statistics.median(h["seconds"] for h in epochs[1:]) if len(epochs) > 1
        else epochs[0]["seconds"],
        "steps_per_epoch": epochs[0]["steps"], "train_rows": epochs[0]["rows"],
        "wall_seconds_with_validation": wall, "history": epochs,
    }
    print(f"-> test accuracy {final.accuracy:.4f} (target {case['target']}), "
          f"median {result['median_epoch_seconds']:.2f} s/epoch", flush=True)
    return result


def figure(results: list[dict]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in results:
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in r["history"]], y=[h["val_accuracy"] for h in r["history"]],
                                 mode="lines+markers", name=r["case"]))
    fig.update_layout(title="Test accuracy after each epoch (DataFrame engine)", xaxis_title="epoch",
                      yaxis_title="test accuracy", yaxis_range=[0.4, 1.0])
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--name", default="accuracy", help="results file name")
    args = parser.parse_args(argv)
    names = [c for c in args.cases.split(",") if c]
    unknown = set(names) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}")
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-accuracy")
    results = [run_case(spark, n, CASES[n], args.data_dir) for n in names]
    print("\n| case | data | test accuracy | target | s/epoch (median) | steps/epoch |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['dataset']} {r['classes'] or 'all'} | {r['test_accuracy']:.4f} | "
              f"{r['target'] or '-'} | {r['median_epoch_seconds']:.2f} | {r['steps_per_epoch']} |")
    path = save_results(args.name, {"environment": environment(spark), "results": results}, figure(results))
    print(f"\nsaved {path}")
    return 0 if all(r["meets_target"] in (None, True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
