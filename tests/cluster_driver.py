"""A driver program for the cluster tests: ``python tests/cluster_driver.py MASTER OUT SCHEDULE...``.

Trains the digits with each named schedule (``minibatch``, ``average``; see RUNS) on the
standalone cluster at MASTER, one application for all of them, and saves each run's weights as
``OUT/<schedule>.npy``. It prints ``EPOCH <schedule> <n>`` after every epoch (flushed) so that a
test can kill an executor or a worker at a known point, and ``DONE`` at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.local_spark import LOOPBACK
from dfnet.session import get_or_create_spark
from dfnet.train import fit

EPOCHS = 6
#: Float64, two partitions: every step adds two partial rows whose order the cluster does not fix.
RUNS = {
    "minibatch": TrainConfig(hidden=(16,), schedule="minibatch", lr_schedule="constant", epochs=EPOCHS,
                             batch_size=360, partitions=2, seed=1, dtype="float64"),
    "average": TrainConfig(hidden=(16,), schedule="average", lr_schedule="constant", epochs=EPOCHS,
                           batch_size=100, partitions=2, seed=4, dtype="float64"),
    # 9,610 weights: two chunks, each added on a reduce task of its own (two task slots).
    "sharded": TrainConfig(hidden=(128,), schedule="minibatch", aggregate="sharded", lr_schedule="constant",
                           epochs=EPOCHS, batch_size=600, partitions=2, seed=2, dtype="float64"),
}
#: What the CLI's --resume test passes for each run (the same configuration on the command line).
CLI_ARGS = {
    "minibatch": ["--hidden", "16", "--schedule", "minibatch", "--lr-schedule", "constant", "--epochs",
                  str(EPOCHS), "--batch-size", "360", "--partitions", "2", "--seed", "1", "--dtype", "float64"],
    "average": ["--hidden", "16", "--schedule", "average", "--lr-schedule", "constant", "--epochs", str(EPOCHS),
                "--batch-size", "100", "--partitions", "2", "--seed", "4", "--dtype", "float64"],
    "sharded": ["--hidden", "128", "--schedule", "minibatch", "--aggregate", "sharded", "--lr-schedule", "constant",
                "--epochs", str(EPOCHS), "--batch-size", "600", "--partitions", "2", "--seed", "2", "--dtype",
                "float64"],
}
#: The session settings of a driver on the test cluster (loopback only; executors run this Python).
CLUSTER_CONF = {"spark.driver.host": LOOPBACK, "spark.driver.bindAddress": LOOPBACK,
                "spark.executor.memory": "1g", "spark.executor.cores": "1",
                "spark.pyspark.python": sys.executable,
                "spark.scheduler.minRegisteredResourcesRatio": "1.0",
                "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
                # A lost executor's tasks are retried elsewhere; four attempts, as on any cluster.
                "spark.task.maxFailures": "4"}


class EpochLines:
    def __init__(self, name: str):
        self.name = name

    def on_step(self, epoch, step, steps):
        pass

    def on_epoch_end(self, record, total_epochs):
        print(f"EPOCH {self.name} {record.epoch}", flush=True)


def main(argv: list[str]) -> int:
    master, out, names = argv[0], Path(argv[1]), argv[2:]
    spark = get_or_create_spark(master, app_name="dfnet-cluster-test", conf=CLUSTER_CONF,
                                warehouse=out / "warehouse")
    df = load_dataframe(spark, "digits")  # as `dfnet train` loads it
    for name in names:
        model = fit(df, RUNS[name], callbacks=[EpochLines(name)], verbose=False)
        np.save(out / f"{name}.npy", model.params)
    print("DONE", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
