"""The user journeys on a real Spark Connect session (a local server of pip's pyspark), beside the
same journeys on the classic session: the same seed gives the same weights on both."""

from __future__ import annotations

import numpy as np
import pytest

from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.errors import ConfigError
from dfnet.train import fit

pytestmark = [pytest.mark.slow, pytest.mark.journey]

RTOL = 1e-9  # float64: only the order of float additions may differ between the two

MLP_RUNS = {
    "auto": dict(epochs=3),
    "average-2-rounds": dict(schedule="average", local_steps=10, epochs=2, batch_size=32),
    "minibatch": dict(schedule="minibatch", batch_size=256, epochs=2, lr_schedule="constant"),
    "classic": dict(schedule="classic", sample=0.5, epochs=3, optimizer="sgd", lr=0.5, lr_schedule="constant"),
    "dropout-decay": dict(epochs=2, dropout=0.2, weight_decay=0.01),
    # 9,610 weights: two chunks, each on a reduce task of its own
    "minibatch-sharded": dict(schedule="minibatch", batch_size=256, epochs=2, hidden=(128,), aggregate="sharded",
                              lr_schedule="constant"),
}
CNN_RUNS = {
    "cnn-inline": dict(model="cnn", kernels=(4,), hidden=(16,), epochs=2, schedule="average", batch_size=64),
    "cnn-explode": dict(model="cnn", kernels=(4,), hidden=(16,), epochs=2, schedule="minibatch", batch_size=256,
                        patches="explode", lr_schedule="constant"),
    "cnn-explode-sharded": dict(model="cnn", kernels=(4,), hidden=(256,), epochs=2, patches="explode",
                                aggregate="sharded", partial_dtype="float32"),
}
RUNS = {**MLP_RUNS, **CNN_RUNS}


def digits(session, split="train"):
    images, labels = load_arrays("digits", split)
    return to_dataframe(session, images, labels, max_value=16.0, num_partitions=2)


def config_of(name: str) -> TrainConfig:
    return TrainConfig(dtype="float64", seed=5, partitions=2, **RUNS[name])


@pytest.fixture(scope="module")
def classic_runs(spark):
    """Each run of RUNS on the classic session: its weights, and its predictions on the test split."""
    test = digits(spark, "test")
    out = {}
    for name in RUNS:
        model = fit(digits(spark), config_of(name), verbose=False)
        predictions = model.predict(test).select("id", "prediction", "probability").toPandas()
        out[name] = (model, predictions.sort_values("id").reset_index(drop=True))
    return out


@pytest.mark.parametrize("name", list(RUNS))
def test_fit_and_predict_on_connect_equal_the_classic_session(connect, classic_runs, name):
    model = fit(digits(connect), config_of(name), verbose=False)
    classic, classic_predictions = classic_runs[name]
    np.testing.assert_allclose(model.params, classic.params, rtol=RTOL, atol=1e-12)
    assert [h["loss"] for h in model.history] == pytest.approx([h["loss"] for h in classic.history], rel=RTOL)
    predictions = model.predict(digits(connect, "test")).select("id", "prediction", "probability").toPandas()
    predictions = predictions.sort_values("id").reset_index(drop=True)
    assert (predictions["prediction"] == classic_predictions["prediction"]).all()
    np.testing.assert_allclose(np.stack(predictions["probability"]), np.stack(classic_predictions["probability"]),
                               rtol=1e-7, atol=1e-12)


#: Test accuracy each run of RUNS reaches at least. RUNS are short (made to compare sessions, not to
#: learn): the two-epoch CNN runs only start to learn, so for them the loss must fall.
MIN_ACCURACY = {"auto": 0.6, "average-2-rounds": 0.6, "minibatch": 0.6, "dropout-decay": 0.6, "classic": 0.5,
                "cnn-inline": 0.11, "cnn-explode": 0.11, "minibatch-sharded": 0.6, "cnn-explode-sharded": 0.5}


@pytest.mark.parametrize("name", list(RUNS))
def test_every_run_learns_on_the_classic_session(classic_runs, name):
    """Every schedule, the CNN with patches cut inline and exploded into rows, on the classic session:
    the training loss falls, predictions are the most probable class, and the test accuracy clears
    its floor (the Spark 3.5 environment, which has no Connect server, runs only these)."""
    model, predictions = classic_runs[name]
    losses = [h["loss"] for h in model.history]
    assert losses[-1] < losses[0], losses
    probabilities = np.stack(predictions["probability"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-9)
    assert (probabilities.argmax(axis=1) == predictions["prediction"].to_numpy()).all()
    labels = load_arrays("digits", "test")[1]
    accuracy = float((predictions["prediction"].to_numpy() == labels[predictions["id"].to_numpy()]).mean())
    assert len(predictions) == 360 and accuracy > MIN_ACCURACY[name], accuracy


def test_a_model_trained_on_connect_scores_far_above_chance(connect):
    model = fit(digits(connect), TrainConfig(epochs=10), verbose=False)
    evaluation = model.evaluate(digits(connect, "test"))
    assert evaluation.accuracy > 0.9  # ten classes: chance is 0.1
    assert evaluation.confusion.sum() == 360


@pytest.mark.parametrize("engine", ["rdd", "rdd-batched"])
def test_the_rdd_engines_refuse_a_connect_session_and_say_what_to_use(connect, engine):
    with pytest.raises(ConfigError, match=r"Spark Connect session.*engine='dataframe'"):
        fit(digits(connect), TrainConfig(engine=engine, schedule="minibatch", epochs=1), verbose=False)


# --- checkpoints and resume -------------------------------------------------------------

CKPT_CONFIG = TrainConfig(hidden=(16,), schedule="minibatch", lr_schedule="constant", epochs=4, batch_size=360,
                          partitions=2, seed=1)


def test_checkpoints_and_resume_on_connect_are_bit_identical(connect, tmp_path):
    import shutil

    from dfnet.checkpoint import CheckpointStore, checkpoint_name

    df = digits(connect)
    reference = fit(df, CKPT_CONFIG, verbose=False)
    folder = tmp_path / "ckpt"
    first = fit(df, CKPT_CONFIG, checkpoint_dir=str(folder), verbose=False)
    assert np.array_equal(first.params, reference.params)
    store = CheckpointStore(connect, str(folder))
    assert store.epochs() == [2, 3, 4]  # the default keeps three
    assert np.array_equal(store.read(4).params, reference.params)
    shutil.rmtree(folder / checkpoint_name(4))  # the run died before its last checkpoint
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        fit(df, CKPT_CONFIG, checkpoint_dir=str(folder), verbose=False)
    resumed = fit(df, CKPT_CONFIG, checkpoint_dir=str(folder), resume=True, verbose=False)
    assert np.array_equal(resumed.params, reference.params)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in reference.history]


# --- Spark ML ---------------------------------------------------------------------------

def test_a_pipeline_fits_saves_and_loads_on_connect(connect, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import SQLTransformer

    from dfnet.ml import DFNetClassifier, DFNetModel

    train, test = digits(connect), digits(connect, "test")
    pipeline = Pipeline(stages=[
        SQLTransformer(statement="SELECT id, image AS features, CAST(label AS DOUBLE) AS label FROM __THIS__"),
        DFNetClassifier(layers=[64, 32, 10], maxIter=12, dtype="float64", seed=3),
    ])
    model = pipeline.fit(train)
    scored = model.transform(test).orderBy("id").select("prediction").toPandas()["prediction"].to_numpy()
    trained = model.stages[-1].trained_model
    images, labels = load_arrays("digits", "test")
    expected = trained.network.forward(trained.params, (images.reshape(len(images), -1) / 16.0)).argmax(axis=1)
    assert np.array_equal(scored, expected)
    assert np.mean(scored == labels) > 0.85  # chance: 0.1

    path = str(tmp_path / "pipeline")
    model.write().save(path)
    loaded = PipelineModel.load(path)
    np.testing.assert_array_equal(loaded.stages[-1].trained_model.params, trained.params)
    again = loaded.transform(test).orderBy("id").select("prediction").toPandas()["prediction"].to_numpy()
    assert np.array_equal(again, scored)

    alone = str(tmp_path / "model")  # an overwrite keeps the old model until the new one is whole
    model.stages[-1].write().save(alone)
    halved = DFNetModel.from_trained(type(trained)(trained.network, trained.params * 0.5, trained.config))
    halved.write().overwrite().save(alone)
    np.testing.assert_array_equal(DFNetModel.load(alone).trained_model.params, trained.params * 0.5)


# --- the command line, tables and SQL ------------------------------------------------------

def test_the_cli_trains_writes_tables_and_predicts_on_connect(connect, connect_url, tmp_path):
    import json
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from pyspark.sql import functions as F

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("SPARK_REMOTE", None)  # --remote says where
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    run = tmp_path / "run"
    for table in ("c_hist", "c_cm", "c_preds", "c_predict"):
        connect.sql(f"DROP TABLE IF EXISTS {table}")
    train = subprocess.run([sys.executable, "-m", "dfnet.cli", "train", "--remote", connect_url, "--epochs", "3",
                            "--hidden", "32", "--no-progress", "--output", str(run), "--history-table", "c_hist",
                            "--metrics-table", "c_cm", "--predictions-table", "c_preds"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "Epoch 3/3" in train.stdout and "WARN" not in train.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())
    assert "Plotly.newPlot" in (run / "report.html").read_text()  # the figures, made from Connect frames
    run_id = re.search(r"Tables \(run_id (\S+)\)", train.stdout).group(1)

    # The tables, queried with SQL on the Connect session, against the run folder's figures.
    accuracy = connect.sql("SELECT avg(CAST(label = prediction AS DOUBLE)) AS a, count(*) AS n FROM c_preds "
                           f"WHERE run_id = '{run_id}'").first()
    assert accuracy["a"] == pytest.approx(metrics["test_accuracy"], abs=1e-12) and accuracy["n"] == metrics["count"]
    losses = [r["loss"] for r in connect.sql("SELECT epoch, loss FROM c_hist ORDER BY epoch").collect()]
    assert losses == [h["loss"] for h in history]
    f1 = {r["class"]: r["f1"] for r in connect.table("c_cm").collect()}
    assert f1 == {c["class"]: c["f1"] for c in metrics["per_class"]}

    # No --remote: SPARK_REMOTE names the server, as pyspark reads it.
    predict = subprocess.run([sys.executable, "-m", "dfnet.cli", "predict", "--model", str(run), "--table",
                              "c_predict"], capture_output=True, text=True, env={**env, "SPARK_REMOTE": connect_url},
                             timeout=600)
    assert predict.returncode == 0, predict.stderr[-3000:]
    again = connect.table("c_predict").select(F.avg((F.col("label") == F.col("prediction")).cast("double"))).first()[0]
    assert again == pytest.approx(metrics["test_accuracy"], abs=1e-12)


# --- image files and MLflow, on Connect alone (the thin client's journeys) ---------------------

def test_image_files_train_and_predict_on_connect(connect, shared_data, tmp_path):
    """PNG files of Fashion-MNIST test images in class folders, read, decoded and trained on through
    the Connect session only: pixels equal the IDX bytes, and the model learns."""
    from PIL import Image

    from dfnet.images import read_image_folder

    images, labels = load_arrays("fashion-mnist", "test", shared_data)
    folder, source = tmp_path / "clothes", {}
    for cls in range(4):
        (folder / f"class{cls}").mkdir(parents=True)
        for i in np.nonzero(labels == cls)[0][:60]:
            path = folder / f"class{cls}" / f"{i}.png"
            Image.fromarray(images[i]).save(path)
            source[path.name] = (images[i], cls)
    found = read_image_folder(connect, str(folder), test_fraction=0.25, seed=3)
    try:
        assert found.class_names == [f"class{c}" for c in range(4)] and found.image_shape == (28, 28, 1)
        rows = found.train.select("path", "image", "label").collect() + \
            found.test.select("path", "image", "label").collect()
        assert len(rows) == 240
        for row in rows:
            pixels, cls = source[row["path"].rsplit("/", 1)[-1]]
            assert row["label"] == cls
            np.testing.assert_array_equal(np.array(row["image"], np.float32),
                                          (pixels.reshape(-1) / np.float32(255)).astype(np.float32))
        model = fit(found.train, TrainConfig(epochs=15, seed=1), verbose=False)
        assert model.evaluate(found.test).accuracy > 0.6  # four classes: chance is 0.25
    finally:
        found.unpersist()


def test_mlflow_logs_a_fit_on_connect_and_its_model_predicts_the_same(connect, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow = pytest.importorskip("mlflow")
    from dfnet.tracking import MLflowLogger

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        logger = MLflowLogger(experiment="dfnet-connect")
        model = fit(digits(connect), TrainConfig(epochs=3, hidden=(32,)), callbacks=[logger], verbose=False)
        run = mlflow.get_run(logger.run_id)
        assert run.info.status == "FINISHED" and run.data.params["hidden"] == "32"
        assert run.data.metrics["loss"] == pytest.approx(model.history[-1]["loss"])
        expected = model.predict(digits(connect, "test")).orderBy("id").select("image", "prediction").toPandas()
        got = mlflow.pyfunc.load_model(logger.model_uri).predict(expected[["image"]])
        assert list(got["prediction"]) == list(expected["prediction"])
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri("")
