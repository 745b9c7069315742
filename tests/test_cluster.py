"""The same bits on a real cluster: a Spark standalone master and two 1-core workers on 127.0.0.1,
started and stopped by this module by PID (:class:`dfnet.local_spark.StandaloneCluster`).

Every run trains the digits in float64 on 2 partitions, with the mini-batch and the averaging
schedule, in a driver process of its own (``tests/cluster_driver.py``, or ``dfnet train``); its
weights must equal, ``np.array_equal``, those of the same configuration trained in this process
on ``local[2]``. On a cluster the reduce side receives the partitions' partial rows in no fixed
order, so this holds only because every sum adds them in partition order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cluster_driver import CLI_ARGS, RUNS
from dfnet.checkpoint import checkpoint_name, decode
from dfnet.datasets import load_dataframe
from dfnet.local_spark import LOOPBACK, StandaloneCluster
from dfnet.train import fit

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
SCHEDULES = list(RUNS)
RUN_TIMEOUT_S = 400


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The master and two 1-core workers, for the whole module; stopped (by process group) at the end.
    A silent worker is given up after 5 s, so that a killed one can be replaced quickly."""
    root = tmp_path_factory.mktemp("cluster")
    cluster = StandaloneCluster(root, worker_memory="2g", worker_timeout_s=5)
    try:
        cluster.start_master()
        cluster.set_workers(2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def local_weights(spark):
    """Each schedule's weights from ``local[2]`` in this process: what every cluster run must equal."""
    df = load_dataframe(spark, "digits")
    return {name: fit(df, config, verbose=False).params for name, config in RUNS.items()}


def child_env() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS.parent), str(TESTS),
                                                                   os.environ.get("PYTHONPATH")])),
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": LOOPBACK}
    for key in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(key, None)
    return env


class Driver:
    """A driver process of its own, its output read line by line, stopped by its process group."""

    def __init__(self, argv: list[str], log: Path):
        self.log_path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True, env=child_env(),
                                     start_new_session=True)
        self.lines: list[str] = []

    def wait_for(self, pattern: str) -> None:
        """Read output until a line matches ``pattern`` (the run goes on meanwhile)."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return
            assert time.monotonic() < deadline, f"no line matching {pattern!r} within {RUN_TIMEOUT_S} s"
        raise AssertionError(f"the driver ended (code {self.proc.wait()}) before printing {pattern!r}; "
                             f"its output:\n" + "\n".join(self.lines[-30:]) + "\n" + self.stderr_tail())

    def finish(self) -> None:
        rest, _ = self.proc.communicate(timeout=RUN_TIMEOUT_S)
        self.lines += rest.splitlines()
        self.log.close()
        assert self.proc.returncode == 0, "\n".join(self.lines[-30:]) + "\n" + self.stderr_tail()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the driver and its JVM, as a machine failure would
        self.proc.wait(timeout=60)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()

    def stderr_tail(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]


def driver(cluster, out: Path, *schedules: str) -> Driver:
    out.mkdir(parents=True, exist_ok=True)
    return Driver([sys.executable, str(TESTS / "cluster_driver.py"), cluster.url, str(out), *schedules],
                  out / "driver.log")


def assert_weights(out: Path, local_weights, *schedules: str) -> None:
    for name in schedules:
        weights = np.load(out / f"{name}.npy")
        assert np.array_equal(weights, local_weights[name]), \
            f"{name}: max relative difference {np.max(np.abs(weights - local_weights[name]) / (np.abs(local_weights[name]) + 1e-300))}"


def test_two_runs_with_the_same_seed_give_the_same_bits(cluster, local_weights, tmp_path):
    for i in (1, 2):
        run = driver(cluster, tmp_path / f"run{i}", *SCHEDULES)
        try:
            run.finish()
        finally:
            run.stop()
        assert_weights(tmp_path / f"run{i}", local_weights, *SCHEDULES)


def test_an_executor_killed_mid_training_changes_no_bit(cluster, local_weights, tmp_path):
    run = driver(cluster, tmp_path, *SCHEDULES)
    try:
        for name in SCHEDULES:  # the executor that worker relaunched dies again in the second run
            run.wait_for(rf"^EPOCH {name} 2$")
            executors = cluster.executor_pids()
            assert executors, "no executor JVM found in the workers' process groups"
            os.kill(executors[0], signal.SIGKILL)
        run.finish()
    finally:
        run.stop()
    assert_weights(tmp_path, local_weights, *SCHEDULES)


def test_the_driver_killed_then_dfnet_train_resume_gives_the_same_bits(cluster, local_weights, tmp_path):
    for name in SCHEDULES:
        checkpoints, output = tmp_path / f"{name}-ckpt", tmp_path / f"{name}-run"
        argv = [sys.executable, "-m", "dfnet.cli", "train", "--master", cluster.url, *CLI_ARGS[name],
                "--no-progress", "--warehouse", str(tmp_path / "warehouse"), "--checkpoint-dir", str(checkpoints),
                "--output", str(output)]
        killed = Driver(argv, tmp_path / f"{name}-killed.log")
        try:
            killed.wait_for(r"^Epoch 3/")
            deadline = time.monotonic() + 60
            while not list((checkpoints / checkpoint_name(3)).glob("part-*.parquet")):
                assert time.monotonic() < deadline, "no third checkpoint"
                time.sleep(0.05)
            killed.kill()
        finally:
            killed.stop()
        assert not output.exists()  # the run folder appears only whole, at the end
        committed = [e for e in range(1, 7) if list((checkpoints / checkpoint_name(e)).glob("part-*.parquet"))]
        assert 3 <= max(committed) < 6
        for epoch in committed:  # whatever the kill interrupted, every committed folder holds a whole checkpoint
            (part,) = (checkpoints / checkpoint_name(epoch)).glob("part-*.parquet")
            assert decode(pq.read_table(part).column(0)[0].as_py()).epoch == epoch
        resumed = Driver([*argv, "--resume"], tmp_path / f"{name}-resumed.log")
        try:
            resumed.finish()
        finally:
            resumed.stop()
        assert f"Resuming from file:{checkpoints}/{checkpoint_name(max(committed))} (epoch {max(committed)} of 6 done)" \
            in resumed.lines, resumed.lines
        assert [line.split("/")[0] for line in resumed.lines if line.startswith("Epoch ")] == \
            [f"Epoch {e}" for e in range(max(committed) + 1, 7)]
        weights = np.load(output / "model" / "weights.npy")
        assert np.array_equal(weights, local_weights[name]), name


def test_a_worker_killed_mid_training_leaves_one_worker_that_finishes_with_the_same_bits(
        cluster, local_weights, tmp_path):
    """A whole worker SIGKILLed (its executor and its cached blocks gone): the run finishes on the
    other worker, recomputing what was lost. Then a new worker takes the dead one's place."""
    for name in SCHEDULES:
        run = driver(cluster, tmp_path / name, name)
        try:
            run.wait_for(rf"^EPOCH {name} 2$")
            cluster.kill_worker(0)
            run.finish()
        finally:
            run.stop()
        assert_weights(tmp_path / name, local_weights, name)
        cluster.set_workers(2)
