"""dfnet.bench: sweeps on the caller's session over the caller's DataFrame, one row per point, as a
DataFrame, a table for SQL, a figure and a cost model; bad input refused before any Spark job."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import dfnet.bench as bench
from dfnet.bench.cost import TERMS, features
from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.errors import ConfigError, DataValidationError
from jobcount import jobs_run_by

#: A small network and few epochs keep each point to a second or two.
QUICK = TrainConfig(hidden=(16,))


@pytest.fixture(scope="module")
def digits(spark):
    return load_dataframe(spark, "digits", "train").cache()


@pytest.fixture(scope="module")
def two_sweeps(digits):
    """Two partitions sweeps over [1, 2], epochs=2, appended to one table."""
    first = bench.partitions(digits, [1, 2], config=QUICK, epochs=2, table="bench_results", progress=False)
    second = bench.partitions(digits, [1, 2], config=QUICK, epochs=2, table="bench_results", progress=False)
    return first, second


def test_partitions_sweep_gives_one_row_per_count(two_sweeps, digits):
    sweep = two_sweeps[0]
    assert [r["partitions"] for r in sweep.rows] == [1, 2]
    for row in sweep.rows:
        assert row["error"] is None
        assert row["seconds_per_epoch"] > 0
        assert row["seconds_min"] <= row["seconds_per_epoch"] <= row["seconds_max"]
        assert row["epochs"] == 2 and row["warmup"] == 1 and len(row["epoch_seconds"]) == 2
        assert row["rows"] == 1437 and row["sweep"] == "partitions" and row["run_id"] == sweep.run_id
        assert row["jobs_per_epoch"] > 0 and row["jobs_source"] == "status tracker"
        assert row["executors"] == 1 and row["hosts"] == 1  # local[2]: the driver runs every task
        assert row["master"] == "local[2]" and row["accuracy"] is None
        assert list(row) == list(bench.BENCH_COLUMNS)
    frame = sweep.df
    assert frame.sparkSession is digits.sparkSession
    assert frame.schema == bench.BENCH_SCHEMA
    assert sorted(r["partitions"] for r in frame.collect()) == [1, 2]


def test_two_sweeps_append_to_one_table_queryable_with_sql(two_sweeps, spark):
    first, second = two_sweeps
    assert first.run_id != second.run_id
    by_run = {r["run_id"]: r["n"] for r in spark.sql(
        "SELECT run_id, count(*) AS n FROM bench_results GROUP BY run_id").collect()}
    assert by_run == {first.run_id: 2, second.run_id: 2}
    medians = spark.sql("SELECT partitions, median(seconds_per_epoch) AS s FROM bench_results "
                        "WHERE error IS NULL GROUP BY partitions ORDER BY partitions").collect()
    assert [r["partitions"] for r in medians] == [1, 2] and all(r["s"] > 0 for r in medians)
    with pytest.raises(DataValidationError, match="already holds rows of run_id"):
        first.write_table("bench_results")  # the same sweep twice would count it twice
