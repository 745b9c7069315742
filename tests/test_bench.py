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
    second = bench.partitions(digits, [1, 2], config=QUICK, epochs=1, warmup=0, table="bench_results",
                              progress=False)
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


def test_save_writes_the_rows_and_an_offline_figure(two_sweeps, tmp_path):
    json_path, html_path = two_sweeps[0].save(tmp_path / "partitions")
    saved = json.loads(json_path.read_text())
    assert [r["partitions"] for r in saved["rows"]] == [1, 2]
    assert saved["cost_model"] is None  # two points cannot fit three terms
    assert saved["environment"]["master"] == "local[2]"
    assert "plotly" in html_path.read_text()[:10_000_000] and html_path.stat().st_size > 1_000_000


def test_a_failing_point_is_kept_in_its_row_and_the_sweep_goes_on(digits, capsys):
    # dropout runs on the dataframe engine only: the rdd point cannot train, the other can
    test = load_dataframe(digits.sparkSession, "digits", "test")
    sweep = bench.engines(digits, ["rdd", "dataframe"], config=QUICK.replace(dropout=0.1), epochs=1, warmup=0,
                          test_df=test)
    failed, ran = sweep.rows
    assert failed["point"] == "engine=rdd" and "dropout" in failed["error"] and failed["seconds_per_epoch"] is None
    assert failed["accuracy"] is None
    assert ran["error"] is None and ran["seconds_per_epoch"] > 0 and ran["engine"] == "dataframe"
    assert 0.5 < ran["accuracy"] <= 1.0  # scored on test_df
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("point 1/2: engine=rdd | failed: ConfigError")
    assert lines[1].startswith("point 2/2: engine=dataframe | ") and "s/epoch" in lines[1]
    assert lines[1].endswith("1 executor on 1 host")
    assert sweep.df.where("error IS NOT NULL").count() == 1


@pytest.mark.parametrize("call, words", [
    (lambda df: bench.partitions(df, []), ["partitions=[]", "at least one"]),
    (lambda df: bench.partitions(df, [1, 0]), ["partitions=[1, 0]", "[0]", "integer >= 1"]),
    (lambda df: bench.partitions(df, [2, -3, 1.5]), ["[-3, 1.5]", "integer >= 1"]),
    (lambda df: bench.partitions(df, [2, 2]), ["2 given more than once"]),
    (lambda df: bench.slots(df, [1, 3]), ["slots=[3]", "at most 2 tasks", "from 1 to 2"]),
    (lambda df: bench.slots(df, [0]), ["slots=[0]", "integer >= 1"]),
    (lambda df: bench.engines(df, ["dataframe", "gpu"]), ["unknown ['gpu']", "'rdd-batched'"]),
    (lambda df: bench.schedules(df, ["fast"]), ["unknown ['fast']", "'minibatch'"]),
    (lambda df: bench.aggregations(df, ["sum"]), ["unknown ['sum']", "'collect'"]),
    (lambda df: bench.partitions(df, [1], epochs=0), ["epochs=0", ">= 1"]),
    (lambda df: bench.partitions(df, [1], warmup=-1), ["warmup=-1", ">= 0"]),
    (lambda df: bench.partitions(df, [1], features_col="pixels"), ["'pixels'", "features_col"]),
    (lambda df: bench.partitions(df, [1], table="bad name"), ["'bad name'"]),
    (lambda df: bench.partitions(df, [1], table="t", mode="upsert"), ["mode='upsert'", "append"]),
    (lambda df: bench.partitions(df, [1], config=TrainConfig(lr=-1.0)), ["lr=-1.0"]),
])
def test_bad_input_is_refused_before_any_spark_job(digits, call, words):
    errors = []

    def attempt():
        with pytest.raises((ConfigError, DataValidationError)) as info:
            call(digits)
        errors.append(str(info.value))

    assert jobs_run_by(digits.sparkSession, attempt) == 0
    for word in words:
        assert word in errors[0]


def test_more_partitions_than_rows_is_refused_after_counting_them_before_training(digits):
    errors = []

    def attempt():
        with pytest.raises(ConfigError) as info:
            bench.partitions(digits, [2, 5000])
        errors.append(str(info.value))

    # the row count (one count; adaptive execution may run it as two jobs); nothing trained
    assert 1 <= jobs_run_by(digits.sparkSession, attempt) <= 2
    assert "partitions=5000" in errors[0] and "1437 rows" in errors[0]


def test_the_slots_sweep_defaults_to_powers_of_two_and_all_slots():
    from dfnet.bench.sweeps import _default_slots

    assert _default_slots(1) == [1]
    assert _default_slots(2) == [1, 2]
    assert _default_slots(6) == [1, 2, 4, 6]
    assert _default_slots(8) == [1, 2, 4, 8]


# --- the cost model and the figure: no Spark ------------------------------------------------------

TRUE = {"job_overhead": 0.2, "per_task": 0.03, "per_row": 4e-5}


def synthetic_rows(settings, run_id="r1", sweep="partitions", jobs=1.0):
    """Benchmark rows whose seconds follow the model with TRUE's coefficients exactly."""
    rows = []
    for n, p, c in settings:
        seconds = float(np.array([TRUE[t] for t in TERMS[:3]]) @ features(n, p, c, 0.0, jobs)[:3])
        rows.append({"run_id": run_id, "sweep": sweep, "point": f"partitions={p}", "rows": n, "partitions": p,
                     "tasks": p, "slots": c, "jobs_per_epoch": jobs, "seconds_per_epoch": seconds,
                     "seconds_min": 0.9 * seconds, "seconds_max": 1.2 * seconds, "error": None,
                     "executors": 1, "hosts": 1})
    return rows


def test_the_cost_model_recovers_known_coefficients_and_projects():
    rows = synthetic_rows([(60_000, p, 2) for p in (2, 4, 8, 16, 32)] + [(6_000, 2, 2), (30_000, 8, 2)])
    model = bench.fit_cost_model(rows)
    for term, value in TRUE.items():
        assert model.coefficients[term] == pytest.approx(value, rel=1e-6)
    assert model.held_out_error["max"] < 1e-6 and model.held_out_error["points"] == len(rows)
    expected = TRUE["job_overhead"] + TRUE["per_task"] * 1 + TRUE["per_row"] * 6_000_000 / 64
    assert model.project(rows=6_000_000, partitions=64, cores=64) == pytest.approx(expected, rel=1e-6)
    assert model.project(rows=6_000_000, cores=64) == pytest.approx(expected, rel=1e-6)  # one partition a core
    assert json.dumps(model.as_dict())  # what Sweep.save writes
    assert "leave-one-out" in model.describe()


def test_the_cost_model_reports_scaling_and_refuses_too_few_points():
    rows = synthetic_rows([(60_000, s, s) for s in (1, 2, 4)])
    model = bench.fit_cost_model(rows)
    one, two, four = model.scaling
    assert one["speedup"] == 1.0 and one["efficiency"] == 1.0
    assert two["parallel"] == 2 and two["speedup"] > 1 and two["efficiency"] == pytest.approx(two["speedup"] / 2)
    with pytest.raises(ConfigError, match="at least 3 measured points"):
        bench.fit_cost_model(rows[:2])
    with pytest.raises(ConfigError, match="differ"):
        bench.fit_cost_model(synthetic_rows([(60_000, 2, 2)] * 3))
    failed = [dict(r, error="ConfigError: no", seconds_per_epoch=None) for r in rows]
    with pytest.raises(ConfigError):
        bench.fit_cost_model(failed)


def test_the_figure_has_a_trace_per_series_with_min_max_error_bars():
    first = synthetic_rows([(60_000, p, 2) for p in (1, 2, 4)], run_id="r1")
    second = synthetic_rows([(60_000, p, 2) for p in (1, 2, 4)], run_id="r2")
    figure = bench.sweep_figure(first + second)
    assert len(figure.data) == 2
    trace = figure.data[0]
    assert list(trace.x) == [1, 2, 4] and list(trace.y) == [r["seconds_per_epoch"] for r in first]
    assert trace.error_y.array[0] == pytest.approx(0.2 * first[0]["seconds_per_epoch"])
    assert trace.error_y.arrayminus[0] == pytest.approx(0.1 * first[0]["seconds_per_epoch"])
    assert len(bench.sweep_figure(first).data) == 1


def test_a_point_line_says_seconds_jobs_and_where_tasks_ran():
    from dfnet.bench.progress import point_line

    row = {"point": "partitions=2", "seconds_per_epoch": 0.41, "seconds_min": 0.39, "seconds_max": 0.44,
           "jobs_per_epoch": 3.0, "executors": 2, "hosts": 1, "error": None}
    assert point_line(2, 3, row) == \
        "point 2/3: partitions=2 | 0.41 s/epoch (0.39-0.44) | 3 jobs/epoch | 2 executors on 1 host"
    assert math.isfinite(row["seconds_per_epoch"])


# --- Spark Connect ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_partitions_sweep_on_spark_connect(connect):
    from dfnet.datasets import load_arrays, to_dataframe

    images, labels = load_arrays("digits", "train")
    train = to_dataframe(connect, images, labels, max_value=16.0, num_partitions=2)
    with pytest.raises(ConfigError, match="Spark Connect session"):
        bench.engines(train, ["dataframe", "rdd"])
    sweep = bench.partitions(train, partitions=[1, 2], config=QUICK, epochs=2, progress=False)
    frame = sweep.df
    assert frame.sparkSession is connect
    got = sorted((r["partitions"], r["seconds_per_epoch"] > 0, r["jobs_source"], r["executors"])
                 for r in frame.collect())
    assert got == [(1, True, "plan", 1), (2, True, "plan", 1)]


def test_docs_list_every_column_with_its_type():
    from pathlib import Path

    from dfnet.bench.schema import COLUMNS

    text = (Path(__file__).resolve().parents[1] / "docs" / "bench.md").read_text()
    for name, kind, _ in COLUMNS:
        shown = kind.replace("<", "&lt;").replace(">", "&gt;")
        assert f"| `{name}` | {shown} |" in text, name
