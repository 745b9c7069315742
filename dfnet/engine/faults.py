"""Fault injection for testing how training survives Spark task retries.

A failed task that Spark retries must not change the result: the retried
attempt recomputes its partition's partial sums from the same broadcast and
the same rows, and the failed attempt's output is discarded, so every row is
counted exactly once. To test that on purpose, a job can be told to fail the
FIRST attempt of some partitions' tasks through two Spark local properties
(set on the driver thread that submits the job; Spark hands them to every
task of the jobs that thread runs):

``dfnet.faults.failFirstAttempt``
    comma-separated partition ids, e.g. ``"0,2"``; the partition functions of
    the DataFrame engine raise :class:`InjectedFault` when their task's
    partition is listed and ``TaskContext.attemptNumber() == 0``.
``dfnet.faults.markerDir``
    optional local folder; before raising, the task drops an empty marker file
    there, named after the stage, partition and task attempt, so a test can
    prove the faults really fired.

Nothing happens when the properties are unset (the normal case: one property
lookup per task). With ``local[N]`` Spark does not retry a failed task, so an
injected fault fails the job; ``local[N,F]`` allows F attempts per task.

Example (on the driver)::

    with failing_first_attempts(spark, [0, 1], marker_dir="/tmp/faults"):
        model = fit(df, config)      # every step's tasks 0 and 1 fail once, then succeed
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterable

FAIL_FIRST_ATTEMPT = "dfnet.faults.failFirstAttempt"
MARKER_DIR = "dfnet.faults.markerDir"


class InjectedFault(RuntimeError):
    """Raised on purpose by :func:`inject_task_fault` (never in normal training)."""


def inject_task_fault() -> None:
    """Called at the start of every DataFrame-engine partition function, inside the Python worker.

    Raises :class:`InjectedFault` when the running task's partition is listed
    in :data:`FAIL_FIRST_ATTEMPT` and this is its first attempt.
    """
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return
    listed = context.getLocalProperty(FAIL_FIRST_ATTEMPT)
    if not listed or context.attemptNumber() != 0:
        return
    partition = context.partitionId()
    if partition not in _partition_ids(listed):
        return
    marker_dir = context.getLocalProperty(MARKER_DIR)
    if marker_dir:
        name = (f"stage{context.stageId()}-partition{partition}-attempt{context.attemptNumber()}"
                f"-task{context.taskAttemptId()}")
        with open(os.path.join(marker_dir, name), "w"):
            pass
    raise InjectedFault(f"dfnet test fault: first attempt of partition {partition} in stage {context.stageId()} "
                        f"fails on purpose ({FAIL_FIRST_ATTEMPT}={listed!r})")


def _partition_ids(listed: str) -> set[int]:
    return {int(p) for p in listed.split(",") if p.strip()}


@contextmanager
def failing_first_attempts(spark, partitions: Iterable[int], marker_dir: str | os.PathLike | None = None):
    """Inject faults into the jobs this thread submits inside the ``with`` block; restore after."""
    sc = spark.sparkContext
    before = {key: sc.getLocalProperty(key) for key in (FAIL_FIRST_ATTEMPT, MARKER_DIR)}
    sc.setLocalProperty(FAIL_FIRST_ATTEMPT, ",".join(str(int(p)) for p in partitions))
    sc.setLocalProperty(MARKER_DIR, str(marker_dir) if marker_dir is not None else None)
    try:
        yield
    finally:
        for key, value in before.items():
            sc.setLocalProperty(key, value)
