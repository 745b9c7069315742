"""dfnet.run from Python, as a notebook calls it: the same run folder and tables as `dfnet train` with the
same settings, and the same refusals before training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import FAST, run_cli

from dfnet import RunTables, TrainConfig, load_dataframe, train_run
from dfnet.datasets import get_dataset
from dfnet.errors import ConfigError, DataValidationError, OutputExistsError
from dfnet.run import RunResult

#: what may differ between two runs of the same settings: the time they took and their run id
TIMINGS = {"seconds", "train_seconds"}


def drop_tables(spark, *names):
    for name in names:
        spark.sql(f"DROP TABLE IF EXISTS {name}")


def tables_of(prefix: str) -> dict[str, str]:
    return {kind: f"{prefix}_{kind}" for kind in ("predictions", "history", "metrics")}


@pytest.fixture(scope="module")
def two_runs(spark, tmp_path_factory):
    """The same digits run twice: `dfnet train` (in-process, on the session of the tests) and
    `dfnet.train_run` from Python; each writes its folder and its three tables."""
    folder = tmp_path_factory.mktemp("runs")
    cli_tables, lib_tables = tables_of("run_cli"), tables_of("run_lib")
    drop_tables(spark, *cli_tables.values(), *lib_tables.values())
    code, out, err = run_cli(["train", "--dataset", "digits", "--epochs", "2", "--validation-split", "0.2",
                              "--output", str(folder / "cli"), *FAST,
                              *(arg for kind, name in cli_tables.items() for arg in (f"--{kind}-table", name))])
    assert code == 0, err
    # the notebook's way: DataFrames in, one call, the result as an object
    train = load_dataframe(spark, "digits", "train")
    test = load_dataframe(spark, "digits", "test")
    config = TrainConfig(hidden=(32,), batch_size=128, epochs=2, validation_split=0.2)
    result = train_run(spark, train, test, config, folder / "lib", class_names=get_dataset("digits").class_names,
                       dataset="digits", key_cols=["id"], tables=RunTables(**lib_tables), verbose=False)
    return folder / "cli", result, cli_tables, lib_tables


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def read_json(path):
    return json.loads(path.read_text())


def without(record: dict, keys) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


@pytest.mark.journey
def test_the_library_writes_the_folder_dfnet_train_writes(two_runs):
    cli, result, _, _ = two_runs
    lib = result.folder
    assert isinstance(result, RunResult) and lib.is_dir()
    assert files(lib) == files(cli) == ["history.json", "metrics.json", "model", "model/model.json",
                                        "model/weights.npy", "report.html"]
    assert [p.name for p in lib.parent.iterdir() if p.name.startswith(".")] == []  # no staging left
    np.testing.assert_array_equal(np.load(lib / "model" / "weights.npy"), np.load(cli / "model" / "weights.npy"))
    history = [without(h, TIMINGS) for h in read_json(lib / "history.json")]
    assert history == [without(h, TIMINGS) for h in read_json(cli / "history.json")]
    assert [h["epoch"] for h in history] == [1, 2] and "val_loss" in history[0]
    lib_model, cli_model = read_json(lib / "model" / "model.json"), read_json(cli / "model" / "model.json")
    assert lib_model["run_id"] != cli_model["run_id"]
    assert without(lib_model, {"run_id", "history"}) == without(cli_model, {"run_id", "history"})
    metrics = read_json(lib / "metrics.json")
    assert list(metrics) == list(read_json(cli / "metrics.json"))  # the same keys, in the same order
    assert without(metrics, TIMINGS) == without(read_json(cli / "metrics.json"), TIMINGS)
    assert metrics["dataset"] == "digits" and metrics["class_names"] == [str(i) for i in range(10)]
    assert "<h2>Confusion matrix</h2>" in (lib / "report.html").read_text(encoding="utf-8")


def test_the_result_is_what_the_folder_holds(two_runs):
    _, result, _, lib_tables = two_runs
    assert result.metrics == read_json(result.folder / "metrics.json")
    assert result.model.history == read_json(result.folder / "history.json")
    assert result.evaluation.accuracy == result.metrics["test_accuracy"] > 0.3  # chance: 0.1
    assert result.run_id == result.model.run_id == read_json(result.folder / "model" / "model.json")["run_id"]
    assert result.tables == lib_tables and result.mlflow is None


@pytest.mark.journey
def test_the_library_writes_the_tables_dfnet_train_writes(spark, two_runs):
    _, result, cli_tables, lib_tables = two_runs

    def rows(table, drop=()):
        return sorted(tuple(r) for r in spark.table(table).drop("run_id", *drop).collect())

    for kind in ("predictions", "metrics"):
        assert rows(lib_tables[kind]) == rows(cli_tables[kind]), kind
    assert rows(lib_tables["history"], drop=["seconds"]) == rows(cli_tables["history"], drop=["seconds"])
    for name in lib_tables.values():
        assert {r["run_id"] for r in spark.table(name).select("run_id").distinct().collect()} == {result.run_id}
    assert spark.table(lib_tables["predictions"]).count() == result.evaluation.count == 360


def test_dfnet_predict_scores_with_a_run_folder_written_from_python(spark, two_runs):
    _, result, _, _ = two_runs
    drop_tables(spark, "run_lib_scored")
    code, out, err = run_cli(["predict", "--model", str(result.folder), "--table", "run_lib_scored", "--no-image"])
    assert code == 0, err
    assert f"Wrote 360 rows of predictions (run_id {result.run_id}) for digits test" in out
    assert f"(accuracy {result.evaluation.accuracy:.4f})" in out


class EpochCounter:
    def __init__(self):
        self.epochs = 0

    def on_step(self, epoch, step, steps):
        pass

    def on_epoch_end(self, record, total_epochs):
        self.epochs += 1


def test_an_existing_folder_is_refused_before_training_and_left_untouched(spark, tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("my results")
    counter = EpochCounter()
    train = load_dataframe(spark, "digits", "train")
    with pytest.raises(OutputExistsError, match=r"already exists and is not empty; choose another output or "
                                                r"pass overwrite=True"):
        train_run(spark, train, train, TrainConfig(epochs=1), output, callbacks=[counter])
    assert counter.epochs == 0 and "Epoch" not in capsys.readouterr().out
    assert [p.name for p in output.iterdir()] == ["notes.txt"] and (output / "notes.txt").read_text() == "my results"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_options_are_refused_by_their_python_names(spark, tmp_path):
    train = load_dataframe(spark, "digits", "train")
    output = tmp_path / "run"
    with pytest.raises(ConfigError, match=f"checkpoint_dir {output / 'ckpt'} lies inside output {output}"):
        train_run(spark, train, train, None, output, checkpoint_dir=str(output / "ckpt"))
    with pytest.raises(ConfigError, match="resume=True needs checkpoint_dir"):
        train_run(spark, train, train, None, output, resume=True)
    with pytest.raises(DataValidationError, match="may hold only letters"):
        RunTables(history="my history")
    with pytest.raises(DataValidationError, match="mode='replace'"):
        RunTables(predictions="p", mode="replace")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_table_is_refused_before_training(spark, tmp_path):
    counter = EpochCounter()
    train = load_dataframe(spark, "digits", "train")
    with pytest.raises(DataValidationError, match="nosuchdb.h cannot be written"):
        train_run(spark, train, train, TrainConfig(epochs=1), tmp_path / "run", tables=RunTables(history="nosuchdb.h"),
                  callbacks=[counter], verbose=False)
    assert counter.epochs == 0 and list(tmp_path.iterdir()) == []
