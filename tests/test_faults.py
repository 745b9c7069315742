"""Task retries: a task that fails and is retried must not change the result (each row counted once).

Faults are injected with dfnet's test hook (:mod:`dfnet.engine.faults`): the first attempt of the
listed partitions' tasks raises in every step. These tests need a master of their own (``local[2,4]``
retries a task up to 4 times, plain ``local[2]`` never does), so they train in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAULTY_PARTITIONS = [0, 2]

# Runs both schedules fault-free and with faults, on the digits training split (1,437 rows), in
# 3 partitions; saves weights, histories and each run's fault markers for the test to check.
CHILD = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from dfnet.config import TrainConfig
    from dfnet.datasets import load_dataframe
    from dfnet.engine.faults import failing_first_attempts
    from dfnet.session import get_or_create_spark
    from dfnet.train import fit

    master, out, faulty_partitions = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")]
    spark = get_or_create_spark(master)
    df = load_dataframe(spark, "digits", "train")
    configs = {
        "minibatch": TrainConfig(hidden=(16,), epochs=2, schedule="minibatch", batch_size=720, partitions=3, seed=3),
        "average": TrainConfig(hidden=(16,), epochs=2, schedule="average", batch_size=100, local_steps=3,
                               partitions=3, seed=3),
    }
    report = {}
    for name, config in configs.items():
        markers = os.path.join(out, name + "-markers")
        os.makedirs(markers)
        entry = report[name] = {}
        if master != "local[2]":  # the fault-free reference
            clean = fit(df, config, verbose=False)
            np.save(os.path.join(out, name + "-clean.npy"), clean.params)
            entry["clean_history"] = clean.history
        try:
            with failing_first_attempts(spark, faulty_partitions, markers):
                faulty = fit(df, config, verbose=False)
        except Exception as e:
            entry["error"] = {"type": type(e).__name__, "message": str(e)[:3000]}
        else:
            np.save(os.path.join(out, name + "-faulty.npy"), faulty.params)
            entry["faulty_history"] = faulty.history
        entry["markers"] = sorted(os.listdir(markers))
        # the hook is off again once the block is left
        assert spark.sparkContext.getLocalProperty("dfnet.faults.failFirstAttempt") is None
    report["rows"] = df.count()
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f)
    print("OK")
""")


def run_child(master: str, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", CHILD, master, str(out), ",".join(map(str, FAULTY_PARTITIONS))],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-5000:]
    return json.loads((out / "report.json").read_text())


def jobs_of(history: list[dict]) -> int:
    return sum(h["steps"] for h in history)


@pytest.fixture(scope="module")
def with_retries(tmp_path_factory):
    out = tmp_path_factory.mktemp("retries")
    return run_child("local[2,4]", out), out


@pytest.mark.parametrize("schedule", ["minibatch", "average"])
def test_retried_tasks_give_exactly_the_fault_free_weights(with_retries, schedule):
    report, out = with_retries
    entry = report[schedule]
    assert "error" not in entry, entry.get("error")
    clean = np.load(out / f"{schedule}-clean.npy")
    faulty = np.load(out / f"{schedule}-faulty.npy")
    assert np.all(np.isfinite(faulty))
    assert np.array_equal(clean, faulty)  # bit for bit: no row lost, none counted twice

    # The faults really fired: one marker per listed partition in every step's job, each a first attempt.
    jobs = jobs_of(entry["faulty_history"])
    assert jobs == 4 and len(entry["markers"]) == jobs * len(FAULTY_PARTITIONS), entry["markers"]
    assert {m.split("-")[1] for m in entry["markers"]} == {f"partition{p}" for p in FAULTY_PARTITIONS}
    assert all("-attempt0-" in m for m in entry["markers"])
    assert len({m.split("-")[0] for m in entry["markers"]}) == jobs  # a different stage each step

    # Each epoch saw every row exactly once, as the fault-free run did.
    for clean_record, faulty_record in zip(entry["clean_history"], entry["faulty_history"], strict=True):
        assert faulty_record["rows"] == clean_record["rows"] == report["rows"] == 1437
        for key in ("loss", "accuracy", "steps", "batch_size"):
            assert faulty_record[key] == clean_record[key]


def test_without_retries_an_injected_fault_fails_the_run(tmp_path):
    """On plain local[2] Spark gives a task one attempt: the fault must surface as an error,
    never as weights computed from fewer rows."""
    report = run_child("local[2]", tmp_path)
    for schedule in ("minibatch", "average"):
        entry = report[schedule]
        assert "error" in entry and "faulty_history" not in entry, entry
        assert "InjectedFault" in entry["error"]["message"] and "fails on purpose" in entry["error"]["message"]
        assert not (tmp_path / f"{schedule}-faulty.npy").exists()
        assert entry["markers"] and all("-attempt0-" in m for m in entry["markers"])


def test_the_hook_does_nothing_outside_a_task_or_when_unset(spark):
    from dfnet.engine.faults import FAIL_FIRST_ATTEMPT, failing_first_attempts, inject_task_fault

    inject_task_fault()  # on the driver: no TaskContext, no effect
    sc = spark.sparkContext
    with failing_first_attempts(spark, [1, 3]):
        assert sc.getLocalProperty(FAIL_FIRST_ATTEMPT) == "1,3"
    assert sc.getLocalProperty(FAIL_FIRST_ATTEMPT) is None
