"""Counting the Spark jobs an action starts, through a job group (shared by the tests)."""

from __future__ import annotations

import os

import numpy as np


def job_ids_of(spark, action) -> list[int]:
    """The ids of the Spark jobs started by ``action()`` (which may raise; the jobs are read
    either way by the caller catching it)."""
    sc = spark.sparkContext
    group = f"dfnet-test-{os.getpid()}-{np.random.default_rng().integers(1 << 62)}"
    sc.setJobGroup(group, "count jobs")
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return list(sc.statusTracker().getJobIdsForGroup(group))


def jobs_run_by(spark, action) -> int:
    """Spark jobs started by ``action()``."""
    return len(job_ids_of(spark, action))


def stage_tasks_of(spark, action) -> list[int]:
    """The task count of every stage of the jobs ``action()`` starts, in stage order (a cached
    frame's upstream stages are listed too, skipped)."""
    tracker = spark.sparkContext.statusTracker()
    stages = sorted(s for j in job_ids_of(spark, action) for s in tracker.getJobInfo(j).stageIds)
    return [tracker.getStageInfo(s).numTasks for s in stages]
