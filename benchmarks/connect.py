"""Spark Connect against classic: seconds per full-batch step of the same work, in one run.

    python benchmarks/connect.py [--hidden 128,1024] [--epochs 8] [--rounds 3]

The work is the engines benchmark's step (the `classic` schedule, every row, Adam): full
Fashion-MNIST, 60,000 rows in 2 partitions, 784-H-10 for each H of --hidden (784-128-10:
101,770 weights, 0.4 MB in float32; 784-1024-10: 814,090, 3.3 MB). Three ways run in
interleaved rounds, each a `fit` of --epochs epochs whose median epoch after the first counts:

  classic-broadcast  a classic local[2] session, the weights in a broadcast variable (dfnet's
                     default on classic)
  classic-closure    the same session, the weights pickled into the task's function, as Connect
                     must (pyspark broadcasts a function over 1 MB itself)
  connect            a Spark Connect session to a local[2] server of pip's pyspark in its own
                     process (dfnet.local_spark), the weights in the function

Both sessions run on this machine's 2 cores (the two JVMs take turns, never run at once).
Saves benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

from common import default_data_dir, environment, save_results

import dfnet.engine.dataframe as dataframe_engine
from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.local_spark import connect_mode, start_server, stop_server
from dfnet.session import InClosure, get_or_create_spark
from dfnet.train import fit

WAYS = ("classic-broadcast", "classic-closure", "connect")


@contextlib.contextmanager
def _in_closure(spark, params):
    yield InClosure(params)


@contextlib.contextmanager
def weights_in_closure():
    """The engine's weights in the task's function on a classic session too (this benchmark only)."""
    before = dataframe_engine.ship_weights
    dataframe_engine.ship_weights = _in_closure
    try:
        yield
    finally:
        dataframe_engine.ship_weights = before


def epoch_seconds(train, hidden: int, epochs: int) -> list[float]:
    config = TrainConfig(hidden=(hidden,), schedule="classic", sample=1.0, optimizer="adam", lr_schedule="constant",
                         epochs=epochs, partitions=2, seed=0)
    model = fit(train, config, verbose=False)
    return [h["seconds"] for h in model.history]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", default="128,1024", help="hidden sizes, one case each")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three ways")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="connect")
    args = parser.parse_args(argv)
    hidden_sizes = [int(h) for h in args.hidden.split(",")]

    classic = get_or_create_spark("local[2]", app_name="dfnet-bench-connect")
    env = environment(classic)
    with tempfile.TemporaryDirectory(prefix="dfnet-bench-connect-") as tmp:
        proc, url, _ = start_server(Path(tmp))
        remote = None
        try:
            with connect_mode(url):
                from pyspark.sql.connect.session import SparkSession as RemoteSparkSession
                remote = RemoteSparkSession.builder.remote(url).getOrCreate()
                remote_train = load_dataframe(remote, "fashion-mnist", data_dir=args.data_dir).cache()
                remote_train.count()
            classic_train = load_dataframe(classic, "fashion-mnist", data_dir=args.data_dir).cache()
            classic_train.count()
            seconds = {(h, way): [] for h in hidden_sizes for way in WAYS}
            for r in range(args.rounds):
                for h in hidden_sizes:
                    for way in WAYS:
                        if way == "connect":
                            with connect_mode(url):
                                run = epoch_seconds(remote_train, h, args.epochs)
                        elif way == "classic-closure":
                            with weights_in_closure():
                                run = epoch_seconds(classic_train, h, args.epochs)
                        else:
                            run = epoch_seconds(classic_train, h, args.epochs)
                        seconds[(h, way)] += run[1:]  # the first epoch warms up
                        print(f"round {r + 1}  784-{h}-10  {way:18s} median {statistics.median(run[1:]):.3f} s",
                              flush=True)
        finally:
            if remote is not None:
                with connect_mode(url):
                    remote.stop()
            stop_server(proc)

    results, table = [], ["| network | weights | classic, broadcast | classic, closure | Connect | Connect / classic |",
                          "|---|---|---|---|---|---|"]
    for h in hidden_sizes:
        med = {way: statistics.median(seconds[(h, way)]) for way in WAYS}
        params = 784 * h + h + h * 10 + 10
        results.append({"hidden": h, "params": params, "median_step_seconds": med,
                        "steps": {way: seconds[(h, way)] for way in WAYS},
                        "connect_over_classic": med["connect"] / med["classic-broadcast"],
                        "closure_over_broadcast": med["classic-closure"] / med["classic-broadcast"]})
        table.append(f"| 784-{h}-10 | {params:,} | {med['classic-broadcast']:.3f} s | {med['classic-closure']:.3f} s | "
                     f"{med['connect']:.3f} s | {med['connect'] / med['classic-broadcast']:.2f}x |")
    print("\n".join(table))
    path = save_results(args.name, {"environment": env, "options": vars(args), "results": results, "table": table})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
