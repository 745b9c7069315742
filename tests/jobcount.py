"""Counting the Spark jobs an action starts, through a job group (shared by the tests)."""

from __future__ import annotations

import os

import numpy as np


def jobs_run_by(spark, action) -> int:
    """Spark jobs started by ``action()`` (which may raise; the count is taken either way
    by the caller catching it)."""
    sc = spark.sparkContext
    group = f"dfnet-test-{os.getpid()}-{np.random.default_rng().integers(1 << 62)}"
    sc.setJobGroup(group, "count jobs")
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return len(sc.statusTracker().getJobIdsForGroup(group))
