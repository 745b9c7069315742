"""MLflow tracking on a real local tracking store (SQLite, MLflow's own default kind, no server).

A ``dfnet train --mlflow`` run is found with ``mlflow.search_runs``; its params
are the run's TrainConfig, its per-epoch metrics equal ``history.json``, its
test metrics equal ``metrics.json``; the logged pyfunc model, loaded back by
URI, predicts what dfnet predicts on the test split, and so does
``mlflow.pyfunc.spark_udf`` on a Spark DataFrame.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from cli_helpers import FAST, run_cli

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no test reaches the internet
import mlflow  # noqa: E402  (the test extra installs dfnet[mlflow])

from dfnet import DFNetClassifier, TrainedModel  # noqa: E402
from dfnet.config import TrainConfig  # noqa: E402
from dfnet.datasets import load_dataframe  # noqa: E402
from dfnet.errors import ConfigError  # noqa: E402
from dfnet.tracking import EPOCH_METRICS, MLflowLogger, require_mlflow  # noqa: E402
from dfnet.train import fit  # noqa: E402


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory):
    """A real SQLite tracking store in a temporary folder, MLflow's tracking URI for this module only."""
    folder = tmp_path_factory.mktemp("mlflow")
    before = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    uri = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(before or "")


@pytest.fixture(scope="module")
def mlflow_run(spark, tracking_store, tmp_path_factory):
    """``dfnet train --mlflow`` on the digits with validation, as a user runs it."""
    output = tmp_path_factory.mktemp("mlflow-cli") / "run"
    code, out, err = run_cli(["train", "--dataset", "digits", "--epochs", "3", "--validation-split", "0.2",
                              "--mlflow", "--mlflow-experiment", "dfnet-tests", "--output", str(output), *FAST])
    assert code == 0, err
    return out, output


@pytest.mark.journey
def test_cli_run_is_found_with_its_params_and_epoch_metrics(mlflow_run, tracking_store):
    out, output = mlflow_run
    metrics = json.loads((output / "metrics.json").read_text())
    history = json.loads((output / "history.json").read_text())
    runs = mlflow.search_runs(experiment_names=["dfnet-tests"], filter_string=f"tags.mlflow.runName = '{output.name}'")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["run_id"] == metrics["mlflow"]["run_id"] and run["status"] == "FINISHED"
    assert f"MLflow: run {run['run_id']}" in out
    # every TrainConfig field is a param, with the value the run used
    for name, value in metrics["config"].items():
        expected = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        assert run[f"params.{name}"] == expected, name
    assert run["params.plan_schedule"] == metrics["schedule_plan"]["schedule"]
    client = mlflow.tracking.MlflowClient()
    for key in EPOCH_METRICS:
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run["run_id"], key))
        assert [step for step, _ in logged] == [h["epoch"] for h in history], key
        assert [value for _, value in logged] == pytest.approx([h[key] for h in history]), key
    assert run["metrics.test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run["metrics.test_f1_9"] == pytest.approx(metrics["per_class"][9]["f1"])
    artifacts = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"history.json", "metrics.json", "report.html"} <= artifacts
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{run['run_id']}/history.json")) == history


@pytest.mark.journey
def test_pyfunc_model_predicts_what_dfnet_predicts(mlflow_run, spark):
    _, output = mlflow_run
    model_uri = json.loads((output / "metrics.json").read_text())["mlflow"]["model_uri"]
    ours = TrainedModel.load(output / "model")
    test = load_dataframe(spark, "digits", "test")
    expected = ours.predict(test).orderBy("id").select("id", "image", "prediction", "probability").toPandas()

    loaded = mlflow.pyfunc.load_model(model_uri)
    signature = loaded.metadata.get_input_schema().to_dict()
    assert [c["name"] for c in signature] == ["image"]
    got = loaded.predict(expected[["image"]])
    assert list(got["prediction"]) == list(expected["prediction"])
    np.testing.assert_allclose(np.stack(got["probability"]), np.stack(expected["probability"]), rtol=1e-6)

    udf = mlflow.pyfunc.spark_udf(spark, model_uri)
    scored = test.withColumn("mlflow", udf("image")).orderBy("id") \
        .select("mlflow.prediction", "mlflow.probability").toPandas()
    assert list(scored["prediction"]) == list(expected["prediction"])
    np.testing.assert_allclose(np.stack(scored["probability"]), np.stack(expected["probability"]), rtol=1e-6)


def test_logged_model_is_the_run_folder_model_field_for_field(mlflow_run):
    """Both stores hold the one model record: the MLflow model gives back what RUN/model holds."""
    from dfnet.tracking import load_trained_model

    _, output = mlflow_run
    model_uri = json.loads((output / "metrics.json").read_text())["mlflow"]["model_uri"]
    ours, logged = TrainedModel.load(output / "model"), load_trained_model(model_uri)
    assert logged.to_record()[0] == ours.to_record()[0]
    assert logged.params.dtype == ours.params.dtype and np.array_equal(logged.params, ours.params)
    assert logged.schedule_plan is not None and logged.run_id


def test_pyfunc_refuses_rows_of_the_wrong_width(mlflow_run):
    _, output = mlflow_run
    model_uri = json.loads((output / "metrics.json").read_text())["mlflow"]["model_uri"]
    loaded = mlflow.pyfunc.load_model(model_uri)
    with pytest.raises(Exception, match="64"):
        loaded.predict(pd.DataFrame({"image": [[0.0] * 10]}))


def test_fit_logs_into_the_active_run_and_leaves_it_open(spark, tracking_store):
    train = load_dataframe(spark, "digits", "train").limit(400)
    with mlflow.start_run() as parent:
        logger = MLflowLogger(log_model=False)
        model = fit(train, TrainConfig(epochs=2, hidden=(16,)), callbacks=[logger], verbose=False)
        assert logger.run_id == parent.info.run_id
        assert mlflow.active_run().info.run_id == parent.info.run_id
    run = mlflow.get_run(parent.info.run_id)
    assert run.data.metrics["loss"] == pytest.approx(model.history[-1]["loss"])
    assert run.data.params["hidden"] == "16" and logger.model_uri is None


def test_a_second_fit_in_one_active_run_gets_a_nested_run(spark, tracking_store):
    train = load_dataframe(spark, "digits", "train").limit(400)
    with mlflow.start_run() as parent:
        first, second = MLflowLogger(log_model=False), MLflowLogger(log_model=False)
        fit(train, TrainConfig(epochs=1, hidden=(16,)), callbacks=[first], verbose=False)
        fit(train, TrainConfig(epochs=1, hidden=(8,)), callbacks=[second], verbose=False)
        assert mlflow.active_run().info.run_id == parent.info.run_id
    assert first.run_id == parent.info.run_id and second.run_id != parent.info.run_id
    child = mlflow.get_run(second.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["hidden"] == "8" and mlflow.get_run(parent.info.run_id).data.params["hidden"] == "16"


def test_failed_training_marks_its_run_failed(spark, tracking_store):
    class Boom:
        def on_step(self, epoch, step, steps):
            pass

        def on_epoch_end(self, record, total_epochs):
            if record.epoch == 2:
                raise RuntimeError("stop here")

    train = load_dataframe(spark, "digits", "train").limit(400)
    logger = MLflowLogger(experiment="dfnet-failures", log_model=False)
    with pytest.raises(RuntimeError, match="stop here"):
        fit(train, TrainConfig(epochs=3, hidden=(16,)), callbacks=[logger, Boom()], verbose=False)
    run = mlflow.get_run(logger.run_id)
    assert run.info.status == "FAILED"
    assert [m.step for m in mlflow.tracking.MlflowClient().get_metric_history(logger.run_id, "loss")] == [1, 2]
    assert mlflow.active_run() is None


def test_estimator_logs_each_fit_as_a_nested_run(spark, tracking_store):
    train = load_dataframe(spark, "digits", "train").limit(400).withColumnRenamed("image", "features")
    classifier = DFNetClassifier(layers=[64, 16, 10], maxIter=2, mlflow=True, mlflowExperiment="dfnet-estimator")
    with mlflow.start_run(experiment_id=mlflow.set_experiment("dfnet-estimator").experiment_id) as parent:
        model = classifier.fit(train)
    children = mlflow.search_runs(experiment_names=["dfnet-estimator"],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 1
    child = children.iloc[0]
    assert child["params.epochs"] == "2" and child["status"] == "FINISHED"
    assert child["metrics.loss"] == pytest.approx(model.trained_model.history[-1]["loss"])
    with pytest.raises(ConfigError, match="mlflowExperiment"):
        DFNetClassifier(layers=[64, 16, 10], mlflowExperiment="x").fit(train)


def test_without_mlflow_installed_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    with pytest.raises(ConfigError, match=r"pip install 'dfnet\[mlflow\]'"):
        require_mlflow()
