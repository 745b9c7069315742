"""Tables for Spark SQL: what the writers store, the queries of docs/tables.md on real runs, write modes that never
leave a half-written table, and tables found by name from another process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import cli_helpers
from cli_helpers import run_cli
from session_helpers import all_settings
from pyspark.sql import functions as F
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from dfnet import TrainConfig, fit, load_dataframe
from dfnet.errors import DataValidationError, OutputExistsError
from dfnet.evaluate import ClassScorer
from dfnet.tables import (CLASS_METRICS_SCHEMA, HISTORY_SCHEMA, PREDICTIONS_SCHEMA, save_table, table_format,
                          write_class_metrics, write_history, write_predictions)

TABLES_DOC = Path(__file__).resolve().parents[1] / "docs" / "tables.md"
TABLES = {"predictions": "dfnet_predictions", "history": "dfnet_history", "metrics": "dfnet_class_metrics"}
FAST = ["--dataset", "digits", "--epochs", "2", *cli_helpers.FAST]


def drop(spark, *names: str) -> None:
    for name in names:
        spark.sql(f"DROP TABLE IF EXISTS {name}")


def dfnet_leftovers(spark) -> list[str]:
    return [t.name for t in spark.catalog.listTables() if "__dfnet_" in t.name]


@pytest.fixture(scope="module")
def digits(spark):
    train = load_dataframe(spark, "digits", "train").where(F.col("id") % 5 != 0).cache()
    test = load_dataframe(spark, "digits", "train").where(F.col("id") % 5 == 0).cache()
    yield train, test
    train.unpersist()
    test.unpersist()


@pytest.fixture(scope="module")
def model(digits):
    train, test = digits
    config = TrainConfig(hidden=(32,), epochs=3, optimizer="adam", lr=0.01, schedule="minibatch", batch_size=128)
    return fit(train, config, validation_df=test, verbose=False, run_id="unit-run")


# --- what the writers store ---------------------------------------------------------

def test_predictions_table_holds_the_models_scores_of_every_row(spark, digits, model):
    _, test = digits
    drop(spark, "t_predictions")
    table = write_predictions(model, test, "t_predictions")
    assert [(f.name, f.dataType) for f in table.schema] == [(f.name, f.dataType) for f in PREDICTIONS_SCHEMA]
    rows = sorted(table.collect(), key=lambda r: r["id"])
    source = sorted(test.collect(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [r["id"] for r in source]
    images = np.array([r["image"] for r in source], dtype=np.float32)
    # independent of Spark: the numpy scorer on the collected images
    _, probability, prediction = ClassScorer(model.network)(model.params, images.astype(model.network.dtype))
    np.testing.assert_array_equal([r["prediction"] for r in rows], prediction)
    np.testing.assert_allclose(np.array([r["probability"] for r in rows]), probability, rtol=1e-12)
    np.testing.assert_array_equal([r["label"] for r in rows], [r["label"] for r in source])
    np.testing.assert_array_equal(np.array([r["image"] for r in rows], dtype=np.float32), images)
    assert {r["run_id"] for r in rows} == {"unit-run"}


def test_history_and_class_metrics_tables_equal_the_model_and_its_evaluation(spark, digits, model):
    _, test = digits
    drop(spark, "t_history", "t_metrics")
    history = write_history(model, "t_history").orderBy("epoch").collect()
    assert [f.name for f in spark.table("t_history").schema] == HISTORY_SCHEMA.names
    assert [r["epoch"] for r in history] == [h["epoch"] for h in model.history] == [1, 2, 3]
    for row, record in zip(history, model.history):
        for key in ("loss", "accuracy", "rows", "seconds", "val_loss", "val_accuracy"):
            assert row[key] == pytest.approx(record[key], rel=1e-15), key
    evaluation = model.evaluate(test)
    names = [f"digit {c}" for c in range(10)]
    metrics = write_class_metrics(evaluation, "t_metrics", run_id=model.run_id, class_names=names)
    assert [f.name for f in metrics.schema] == CLASS_METRICS_SCHEMA.names
    for row in metrics.collect():
        c = row["class"]
        assert row["class_name"] == names[c]
        assert row["tp"] == evaluation.confusion[c, c]
        assert row["fp"] == evaluation.confusion[:, c].sum() - row["tp"]
        assert row["fn"] == evaluation.confusion[c, :].sum() - row["tp"]
        assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == evaluation.count


def test_unlabelled_rows_and_generated_ids(spark, digits, model):
    _, test = digits
    drop(spark, "t_unlabelled")
    table = write_predictions(model, test.select("image"), "t_unlabelled", label_col=None, id_col=None,
                              keep_image=False, run_id="scoring")
    rows = table.collect()
    assert len(rows) == test.count()
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["label"] is None and r["image"] is None and r["run_id"] == "scoring" for r in rows)


def test_vector_features_are_stored_as_float_arrays_without_touching_the_session(spark, digits, model,
                                                                                tmp_path):
    from pyspark.ml.functions import array_to_vector

    _, test = digits
    drop(spark, "t_vectors")
    # a Parquet scan carrying a vector column: where Spark 4.3's columnar UDF input fails
    test.select("id", "label", array_to_vector("image").alias("features")).write.parquet(str(tmp_path / "v"))
    vectors = spark.read.parquet(str(tmp_path / "v"))
    settings = all_settings(spark)
    table = write_predictions(model, vectors, "t_vectors", features_col="features")
    assert all_settings(spark) == settings
    by_id = {r["id"]: r for r in table.collect()}
    for row in test.collect():
        np.testing.assert_array_equal(np.float32(by_id[row["id"]]["image"]), np.float32(row["image"]))


# --- modes: explicit, checked first, never half-written --------------------------------

def ids(spark, name: str) -> list[int]:
    return sorted(r["id"] for r in spark.table(name).select("id").collect())


def test_an_existing_table_needs_an_explicit_mode(spark, digits, model):
    _, test = digits
    drop(spark, "t_modes")
    first = test.where("id < 500")
    write_predictions(model, first, "t_modes")
    before = ids(spark, "t_modes")
    with pytest.raises(OutputExistsError, match=r"t_modes already exists.*overwrite.*append"):
        write_predictions(model, test, "t_modes")
    assert ids(spark, "t_modes") == before
    with pytest.raises(DataValidationError, match="already holds rows of run_id 'unit-run'.*twice"):
        write_predictions(model, test.where("id >= 500"), "t_modes", mode="append")
    assert ids(spark, "t_modes") == before
    write_predictions(model, test.where("id >= 500"), "t_modes", mode="append", run_id="unit-run-rest")
    assert ids(spark, "t_modes") == sorted(r["id"] for r in test.select("id").collect())
    write_predictions(model, first, "t_modes", mode="overwrite", run_id="again")
    assert ids(spark, "t_modes") == before
    assert {r["run_id"] for r in spark.table("t_modes").collect()} == {"again"}
    assert dfnet_leftovers(spark) == []


def test_bad_names_modes_and_mismatched_columns_are_refused_first(spark, digits, model):
    _, test = digits
    with pytest.raises(DataValidationError, match="mode='replace'"):
        write_predictions(model, test, "t_other", mode="replace")
    with pytest.raises(DataValidationError, match="may hold only letters"):
        write_predictions(model, test, "my predictions")
    drop(spark, "t_other")
    spark.range(3).write.saveAsTable("t_other")
    with pytest.raises(DataValidationError, match=r"cannot append to table t_other: its columns \(id bigint\)"):
        write_predictions(model, test, "t_other", mode="append")
    assert ids(spark, "t_other") == [0, 1, 2]


def test_three_part_names_and_names_the_catalog_refuses(spark, digits, model):
    _, test = digits
    small = test.where("id < 100")
    drop(spark, "t_three")
    write_predictions(model, small, "spark_catalog.default.t_three")
    write_predictions(model, small, "spark_catalog.default.`t_three`", mode="overwrite", run_id="again")
    assert ids(spark, "t_three") == ids_of(small)
    with pytest.raises(DataValidationError, match=r"nosuchdb.t_x cannot be written: .*SCHEMA_NOT_FOUND"):
        write_predictions(model, small, "nosuchdb.t_x")
    with pytest.raises(DataValidationError, match=r"`my preds` cannot be written"):
        write_predictions(model, small, "`my preds`")
    assert dfnet_leftovers(spark) == []


def ids_of(df) -> list[int]:
    return sorted(r["id"] for r in df.select("id").collect())


def test_the_cli_refuses_a_table_it_cannot_create_before_training(spark, tmp_path):
    code, out, err = run_cli(["train", *FAST, "--epochs", "1", "--history-table", "nosuchdb.h",
                              "--output", str(tmp_path / "run")])
    assert code == 2 and "nosuchdb.h cannot be written" in err and "SCHEMA_NOT_FOUND" in err
    assert "Epoch" not in out and not (tmp_path / "run").exists()
    code, _, err = run_cli(["train", *FAST, "--epochs", "1", "--history-table", "same", "--metrics-table",
                            "default.SAME", "--output", str(tmp_path / "run")])
    assert code == 2 and "must be different tables" in err
    assert dfnet_leftovers(spark) == []


def test_an_overwrite_whose_swap_fails_keeps_the_old_table(spark, monkeypatch):
    import dfnet.tables as tables

    name = "t_swap"
    drop(spark, name)
    save_table(spark.range(5), name)
    real = tables._rename

    def staging_rename_fails(spark_, source, target):
        if "__dfnet_staging_" in source[-1]:
            raise RuntimeError("injected rename failure")
        real(spark_, source, target)

    monkeypatch.setattr(tables, "_rename", staging_rename_fails)
    with pytest.raises(RuntimeError, match="injected rename failure"):
        save_table(spark.range(100), name, mode="overwrite")
    assert ids(spark, name) == [0, 1, 2, 3, 4]
    assert dfnet_leftovers(spark) == []

    def every_later_rename_fails(spark_, source, target):
        if "__dfnet_replaced_" in target[-1]:
            return real(spark_, source, target)
        raise RuntimeError("injected rename failure")

    monkeypatch.setattr(tables, "_rename", every_later_rename_fails)
    with pytest.raises(OutputExistsError, match=r"was not replaced .*kept as `t_swap__dfnet_replaced_"):
        save_table(spark.range(100), name, mode="overwrite")
    kept = dfnet_leftovers(spark)
    assert len(kept) == 1 and kept[0].startswith("t_swap__dfnet_replaced_")
    assert ids(spark, kept[0]) == [0, 1, 2, 3, 4]
    drop(spark, kept[0])


@pytest.mark.parametrize("mode", ["overwrite", "append", "error"])
def test_a_write_that_fails_leaves_the_table_as_it_was(spark, mode):
    @F.udf("long")
    def fail_on_last(i):
        if i == 99:
            raise ValueError("injected failure")
        return i

    name = "t_failing"
    drop(spark, name)
    if mode != "error":
        save_table(spark.range(5), name)
    failing = spark.range(0, 100, numPartitions=4).select(fail_on_last("id").alias("id"))
    with pytest.raises(Exception, match="injected failure"):
        save_table(failing, name, mode=mode)
    if mode == "error":
        assert not spark.catalog.tableExists(name)
    else:
        assert ids(spark, name) == [0, 1, 2, 3, 4]
    assert dfnet_leftovers(spark) == []


@pytest.mark.parametrize("conf, expected", [
    ({}, "parquet"),
    ({"spark.sql.sources.default": "orc"}, "orc"),
    ({"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension"}, "delta"),
    ({"spark.sql.extensions": "a.Other,io.delta.sql.DeltaSparkSessionExtension",
      "spark.sql.sources.default": "orc"}, "delta"),
    ({"spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}, "delta"),
])
def test_tables_are_delta_where_the_session_is_set_up_for_it(conf, expected):
    assert table_format(lambda key, default=None: conf.get(key, default)) == expected


def test_the_test_session_writes_parquet(spark):
    assert table_format(spark.conf.get) == "parquet"
    drop(spark, "t_format")
    save_table(spark.range(2), "t_format")
    assert spark.sql("DESCRIBE TABLE EXTENDED t_format").where("col_name = 'Provider'").first()["data_type"] \
        == "parquet"


# --- the queries of docs/tables.md, on real runs of the command line --------------------

def documented_queries() -> dict[str, str]:
    """The SQL blocks of the "Queries" section of docs/tables.md, by their first comment line."""
    text = TABLES_DOC.read_text()
    section = text[text.index("\n## Queries\n"):]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    blocks = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    return {block.splitlines()[0].removeprefix("-- ").strip(): block for block in blocks}


@pytest.fixture(scope="module")
def cli_runs(spark, tmp_path_factory):
    """Two `dfnet train` runs writing the three tables of docs/tables.md (the second appending its predictions)."""
    drop(spark, *TABLES.values())
    folder = tmp_path_factory.mktemp("runs")
    tables = ["--history-table", TABLES["history"], "--metrics-table", TABLES["metrics"],
              "--predictions-table", TABLES["predictions"]]
    runs = []
    for i, extra in enumerate([["--epochs", "2"], ["--epochs", "3", "--seed", "7", "--mode", "append"]]):
        code, out, err = run_cli(["train", *FAST, *tables, *extra, "--output", str(folder / f"run{i}")])
        assert code == 0, err
        run_id = re.search(r"Tables \(run_id (\S+)\)", out).group(1)
        runs.append({"run_id": run_id, "folder": folder / f"run{i}",
                     "history": json.loads((folder / f"run{i}" / "history.json").read_text()),
                     "metrics": json.loads((folder / f"run{i}" / "metrics.json").read_text())})
    return runs


CHECKED = {"confusion matrix of the newest run: rows of true class `label` predicted as `prediction`",
           "per-class F1 of the newest run, worst class first",
           "the most confident mistakes of the newest run",
           "accuracy per epoch across runs (train, and on the validation rows)",
           "test accuracy per run, from the predictions"}


def test_every_documented_query_is_checked():
    assert set(documented_queries()) == CHECKED


def newest_predictions(spark, runs):
    newest = max(r["run_id"] for r in runs)
    rows = spark.table(TABLES["predictions"]).where(F.col("run_id") == newest).collect()
    return newest, rows


@pytest.mark.journey
def test_documented_confusion_matrix_query(spark, cli_runs):
    result = spark.sql(documented_queries()[
        "confusion matrix of the newest run: rows of true class `label` predicted as `prediction`"]).collect()
    newest, rows = newest_predictions(spark, cli_runs)
    expected = confusion_matrix([r["label"] for r in rows], [r["prediction"] for r in rows], labels=range(10))
    got = np.zeros((10, 10), dtype=int)
    for r in result:
        got[r["label"], r["prediction"]] = r["n"]
    np.testing.assert_array_equal(got, expected)
    assert [(r["label"], r["prediction"]) for r in result] == sorted((r["label"], r["prediction"]) for r in result)
    # the newest run is the one whose test figures the CLI saved
    assert newest == cli_runs[1]["run_id"]
    np.testing.assert_array_equal(got, cli_runs[1]["metrics"]["confusion_matrix"])


@pytest.mark.journey
def test_documented_per_class_f1_query(spark, cli_runs):
    result = spark.sql(documented_queries()["per-class F1 of the newest run, worst class first"]).collect()
    _, rows = newest_predictions(spark, cli_runs)
    precision, recall, f1, support = precision_recall_fscore_support(
        [r["label"] for r in rows], [r["prediction"] for r in rows], labels=range(10), zero_division=0)
    assert sorted(r["class"] for r in result) == list(range(10))
    for r in result:
        c = r["class"]
        assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((precision[c], recall[c], f1[c]), abs=1e-12)
        assert r["support"] == support[c] and r["class_name"] == str(c)
    assert [r["f1"] for r in result] == sorted(r["f1"] for r in result)


def test_documented_most_confident_mistakes_query(spark, cli_runs):
    result = spark.sql(documented_queries()["the most confident mistakes of the newest run"]).collect()
    _, rows = newest_predictions(spark, cli_runs)
    mistakes = [(-max(r["probability"]), r["id"], r["label"], r["prediction"]) for r in rows
                if r["label"] != r["prediction"]]
    expected = sorted(mistakes)[:10]
    assert len(expected) > 0, "a 2-3 epoch digits model makes mistakes"
    assert [(r["id"], r["label"], r["prediction"]) for r in result] == [e[1:] for e in expected]
    np.testing.assert_allclose([r["confidence"] for r in result], [-e[0] for e in expected], rtol=1e-15)


@pytest.mark.journey
def test_documented_accuracy_per_epoch_query(spark, cli_runs):
    result = spark.sql(documented_queries()["accuracy per epoch across runs (train, and on the validation rows)"]).collect()
    expected = sorted((h["epoch"], run["run_id"], h["accuracy"], h.get("val_accuracy"))
                      for run in cli_runs for h in run["history"])
    assert len(expected) == 5
    assert [(r["epoch"], r["run_id"]) for r in result] == [e[:2] for e in expected]
    assert [(r["accuracy"], r["val_accuracy"]) for r in result] == [e[2:] for e in expected]


def test_documented_accuracy_per_run_query(spark, cli_runs):
    result = spark.sql(documented_queries()["test accuracy per run, from the predictions"]).collect()
    assert [r["run_id"] for r in result] == sorted(run["run_id"] for run in cli_runs)
    for r, run in zip(result, sorted(cli_runs, key=lambda run: run["run_id"])):
        assert r["accuracy"] == pytest.approx(run["metrics"]["test_accuracy"], abs=1e-12)
        assert r["n"] == run["metrics"]["count"]


# --- the command line ---------------------------------------------------------------

def test_train_refuses_an_existing_predictions_table_before_training(spark, cli_runs, tmp_path):
    before = spark.table(TABLES["predictions"]).count()
    code, out, err = run_cli(["train", *FAST, "--epochs", "1", "--predictions-table", TABLES["predictions"],
                              "--output", str(tmp_path / "run")])
    assert code == 2 and "dfnet_predictions already exists" in err
    assert "Epoch" not in out and not (tmp_path / "run").exists()
    assert spark.table(TABLES["predictions"]).count() == before


@pytest.mark.journey
def test_predict_scores_the_runs_data_set_into_a_table(spark, cli_runs):
    drop(spark, "t_cli_predict")
    run = cli_runs[0]
    code, out, err = run_cli(["predict", "--model", str(run["folder"]), "--table", "t_cli_predict"])
    assert code == 0, err
    table = spark.table("t_cli_predict")
    assert {r["run_id"] for r in table.select("run_id").distinct().collect()} == {run["run_id"]}
    accuracy = table.select(F.avg((F.col("label") == F.col("prediction")).cast("double"))).first()[0]
    assert accuracy == pytest.approx(run["metrics"]["test_accuracy"], abs=1e-12)
    assert f"Wrote {run['metrics']['count']} rows" in out and f"(accuracy {accuracy:.4f})" in out
    code, _, err = run_cli(["predict", "--model", str(run["folder"]), "--table", "t_cli_predict"])
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(["predict", "--model", str(run["folder"] / "model"), "--table", "t_cli_other"])
    assert code == 2 and "--dataset or --input-table" in err


# --- found by name from another process --------------------------------------------

READER = textwrap.dedent("""
    import json, sys
    from dfnet.session import get_or_create_spark
    spark = get_or_create_spark("local[1]", warehouse=sys.argv[1])
    out = {name: [r.asDict() for r in spark.table(name).drop("image", "probability").collect()]
           for name in ("hist", "cm", "preds")}
    print("RESULT " + json.dumps(out))
    spark.stop()
""")


@pytest.mark.journey
def test_tables_outlive_the_process_that_wrote_them(tmp_path, classic_spark_here):
    """One process trains and writes the tables, and exits; a second one finds them by name."""
    warehouse, run = tmp_path / "warehouse", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writer = subprocess.run([sys.executable, "-m", "dfnet.cli", "train", *FAST, "--epochs", "2", "--master",
                             "local[1]", "--warehouse", str(warehouse), "--output", str(run), "--history-table",
                             "hist", "--metrics-table", "cm", "--predictions-table", "preds"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert writer.returncode == 0, writer.stderr[-3000:]
    assert sorted(p.name for p in warehouse.iterdir()) == ["derby.log", "metastore_db", "tables"]
    reader = subprocess.run([sys.executable, "-c", READER, str(warehouse)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert reader.returncode == 0, reader.stderr[-3000:]
    tables = json.loads(reader.stdout.split("RESULT ", 1)[1])
    history = json.loads((run / "history.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert [(h["epoch"], h["loss"]) for h in sorted(tables["hist"], key=lambda h: h["epoch"])] == \
           [(h["epoch"], h["loss"]) for h in history]
    assert sorted((c["class"], c["tp"], c["f1"]) for c in tables["cm"]) == \
           [(c["class"], c["tp"], c["f1"]) for c in metrics["per_class"]]
    assert len(tables["preds"]) == metrics["count"]
    assert np.mean([p["label"] == p["prediction"] for p in tables["preds"]]) == \
           pytest.approx(metrics["test_accuracy"], abs=1e-12)
