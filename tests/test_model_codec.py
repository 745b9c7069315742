"""The one model codec: every store (the folder, the Spark ML data row, a checkpoint, the MLflow
model) keeps every field of a TrainedModel, models saved by dfnet 586172c still load to the
values recorded when they were written (tests/data/legacy), and bad records are refused by name."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dfnet.checkpoint import Checkpoint, CheckpointStore, decode, encode
from dfnet.config import TrainConfig
from dfnet.errors import CheckpointError, ModelFormatError
from dfnet.model import FORMAT, FORMAT_VERSION, TrainedModel, read_record
from dfnet.nn import build_mlp

LEGACY = Path(__file__).parent / "data" / "legacy"
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((LEGACY / "expected.json").read_text())


@pytest.fixture
def legacy(tmp_path) -> Path:
    """A writable copy of the legacy fixtures (a resume writes into the checkpoint folder)."""
    return Path(shutil.copytree(LEGACY, tmp_path / "legacy"))


def full_model(dtype: str = "float32") -> TrainedModel:
    """A model with every field set to something other than its default."""
    network = build_mlp(6, [5], 3, activation="tanh", dtype=dtype)
    return TrainedModel(
        network, network.init_params(3, "uniform"),
        config=TrainConfig(hidden=(5,), activation="tanh", dtype=dtype, epochs=4, validation_split=0.25,
                           early_stopping=2, min_delta=0.01),
        history=[{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "rows": 12, "steps": 1, "batch_size": 12.0,
                  "seconds": 0.25, "val_loss": 1.5 / e, "val_accuracy": 0.25, "best_epoch": e} for e in (1, 2)],
        class_names=["cat", "dog", "eel"], run_id="run-7",
        early_stopping_result={"best_epoch": 2, "best_val_loss": 0.75, "stopped_epoch": None, "patience": 2,
                        "min_delta": 0.01},
        schedule_plan={"schedule": "average", "batch_size": 32, "models": 2, "local_steps": None,
                       "reason": "as asked", "epochs_per_job": 1, "jobs_per_epoch": 1})


def assert_same_model(got: TrainedModel, want: TrainedModel) -> None:
    """Every dataclass field equal: params exactly, in their dtype; the network by its config."""
    for f in dataclasses.fields(TrainedModel):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if f.name == "params":
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name
        elif f.name == "network":
            assert a.to_config() == b.to_config(), f.name
        elif f.name == "class_names":
            assert (list(a) if a is not None else None) == (list(b) if b is not None else None), f.name
        else:
            assert a == b, f.name


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def assert_legacy_model(model: TrainedModel, expected: dict, *, outcome: bool = True) -> None:
    assert str(model.params.dtype) == expected["params_dtype"] and sha256(model.params) == expected["params_sha256"]
    assert model.network.to_config() == expected["network"]
    assert model.config == TrainConfig.from_dict(expected["config"])
    assert model.history == expected["history"]
    assert list(model.class_names) == expected["class_names"] == CLASS_NAMES
    assert model.run_id == expected["run_id"] == "legacy"
    if outcome:  # the version 1 Spark ML row never held these
        assert model.early_stopping_result == expected["early_stopping"]
        assert model.schedule_plan == expected["schedule_plan"]


# --- the codec, no Spark ------------------------------------------------------------------

def test_a_record_describes_itself_and_is_plain_json():
    record, weights = full_model().to_record()
    assert record["format"] == FORMAT == "dfnet.model" and record["format_version"] == FORMAT_VERSION == 2
    assert set(record) == {"format", "format_version", "network", "config", "history", "class_names", "run_id",
                           "early_stopping_result", "schedule_plan"}
    assert json.loads(json.dumps(record)) == record
    assert weights.shape == (full_model().network.num_params,)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_record_round_trip_keeps_every_field(dtype):
    model = full_model(dtype)
    record, weights = model.to_record()
    assert_same_model(TrainedModel.from_record(json.dumps(record), weights, source="s"), model)
    assert_same_model(TrainedModel.from_record(record, weights.astype(np.float64), source="s"), model)


def test_a_model_with_only_a_network_round_trips():
    network = build_mlp(4, [3], 2)
    model = TrainedModel(network, network.init_params(0, "uniform"))
    assert_same_model(TrainedModel.from_record(*model.to_record(), source="s"), model)


def test_version_1_records_are_read():
    model = full_model()
    record, weights = model.to_record()
    old = {k: v for k, v in record.items() if k != "format"} | {"format_version": 1}
    assert_same_model(TrainedModel.from_record(old, weights, source="s"), model)
    # before run ids, early stopping and plans existed
    oldest = {k: old[k] for k in ("format_version", "network", "config", "history", "class_names")}
    loaded = TrainedModel.from_record(oldest, weights, source="s")
    assert (loaded.run_id, loaded.early_stopping_result, loaded.schedule_plan) == (None, None, None)


def record_with(**changes) -> dict:
    record, _ = full_model().to_record()
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


@pytest.mark.parametrize("record, words", [
    (record_with(format_version=3), ["model format version 3", "reads versions 1, 2"]),
    (record_with(format_version=None), ["model format version None"]),
    (record_with(format_version="2"), ["model format version '2'"]),
    (record_with(format_version=True), ["model format version True"]),
    (record_with(format=...), ["format None, expected 'dfnet.model'"]),
    (record_with(format="dfnet.checkpoint"), ["format 'dfnet.checkpoint'"]),
    (record_with(network=...), ["no 'network'"]),
    (record_with(history={"epoch": 1}), ["'history' is a dict, not a list"]),
    (record_with(run_id=7), ["'run_id' is a int, not a str or NoneType"]),
    (record_with(network={"layers": [{"type": "swish"}], "loss": "mse", "input_shape": [6]}), ["corrupt model"]),
    (record_with(config={"dropout_rate": 0.5}), ["corrupt model", "dropout_rate"]),
    ("{not json", ["corrupt model record", "JSONDecodeError"]),
    (b"\xff\xfe", ["corrupt model record", "UnicodeDecodeError"]),
    ("[1, 2]", ["a model record is a JSON object, this is a list"]),
], ids=["future-version", "no-version", "version-text", "version-bool", "no-format-tag", "other-format",
        "no-network", "history-not-list", "run-id-not-text", "unknown-layer", "unknown-config-key", "not-json",
        "not-utf8", "not-an-object"])
def test_bad_records_are_refused_naming_the_source(record, words):
    weights = full_model().params
    with pytest.raises(ModelFormatError) as info:
        TrainedModel.from_record(record, weights, source="/models/m7")
    message = str(info.value)
    assert message.startswith("/models/m7: ")
    for word in words:
        assert word in message


@pytest.mark.parametrize("weights, words", [
    (lambda n: np.zeros(n - 1), ["holds {m} values", "needs {n}"]),
    (lambda n: np.zeros((n, 1)), ["holds {m} values", "needs {n}"]),
    (lambda n: b"not a numpy file", ["corrupt model"]),
    (lambda n: b"", ["corrupt model"]),
], ids=["one-short", "two-dimensional", "garbage-npy", "empty-npy"])
def test_bad_weights_are_refused_naming_the_source(weights, words):
    record, params = full_model().to_record()
    bad = weights(params.size)
    with pytest.raises(ModelFormatError) as info:
        TrainedModel.from_record(record, bad, source="src")
    assert str(info.value).startswith("src: ")
    for word in words:
        assert word.format(m=getattr(bad, "size", 0), n=params.size) in str(info.value)


def test_read_record_builds_nothing():
    """A checkpoint's record may name a network this dfnet does not build; reading it only checks its form."""
    fields = read_record({"format": FORMAT, "format_version": 2, "network": {"layers": []}}, "s")
    assert fields == {"network": {"layers": []}, "config": None, "history": [], "class_names": None,
                      "run_id": None, "early_stopping_result": None, "schedule_plan": None}


def test_checkpoint_blob_carries_the_model_record():
    model = full_model()
    early = {"best_loss": 0.75, "best_epoch": 2, "wait": 0, "best_params": model.params * 2}
    checkpoint = Checkpoint.from_model(model, 2, "adam", {"steps": 4, "m": np.ones(3)}, {"rows": 12, "partitions": 2},
                                       stopper_state=early)
    copy = decode(encode(checkpoint), "ck")
    assert_same_model(copy.model(), model)
    assert copy.epoch == 2 and copy.data == {"rows": 12, "partitions": 2} and copy.optimizer == "adam"
    assert copy.optimizer_state["steps"] == 4 and np.array_equal(copy.optimizer_state["m"], np.ones(3))
    assert np.array_equal(copy.stopper_state.pop("best_params"), early["best_params"])
    assert copy.stopper_state == {"best_loss": 0.75, "best_epoch": 2, "wait": 0}
    meta = _checkpoint_meta(encode(checkpoint))
    assert meta["format"] == "dfnet.checkpoint" and meta["format_version"] == 2
    assert meta["model"] == model.to_record()[0]


def test_checkpoint_as_train_builds_it_still_encodes():
    """train.py's positional construction, without class names or a run id."""
    model = full_model()
    record, params = model.to_record()
    checkpoint = Checkpoint(3, params, "sgd", {"steps": 0}, record["history"], record["network"], record["config"],
                            {"rows": 12, "partitions": 2}, stopper_state=None)
    loaded = decode(encode(checkpoint)).model()
    assert (loaded.class_names, loaded.run_id, loaded.early_stopping_result, loaded.schedule_plan) == (None,) * 4
    assert loaded.history == model.history and loaded.config == model.config


def _checkpoint_meta(blob: bytes) -> dict:
    payload = blob[blob.index(b"\n", len(b"DFNETCKPT 1\n")) + 1:]
    with np.load(io.BytesIO(payload)) as npz:
        return json.loads(npz["meta"].tobytes())


def _reencode(blob: bytes, change) -> bytes:
    """The checkpoint with its meta changed and its header's hash made right again."""
    payload = blob[blob.index(b"\n", len(b"DFNETCKPT 1\n")) + 1:]
    with np.load(io.BytesIO(payload)) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    change(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    header = json.dumps({"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}).encode()
    return b"DFNETCKPT 1\n" + header + b"\n" + payload


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(format_version=9), ["checkpoint format version 9", "reads versions 1, 2"]),
    (lambda m: m.pop("format"), ["format None, expected 'dfnet.checkpoint'"]),
    (lambda m: m["model"].update(format_version=9), ["(its model): model format version 9"]),
    (lambda m: m["model"].update(history="many"), ["(its model): corrupt model record ('history'"]),
], ids=["meta-version", "meta-tag", "record-version", "record-field"])
def test_checkpoint_with_a_bad_record_is_a_checkpoint_error(change, words):
    blob = _reencode(encode(Checkpoint.from_model(full_model(), 1, "sgd", {}, {})), change)
    with pytest.raises(CheckpointError) as info:
        decode(blob, "/ck/checkpoint-000001.dfnet")
    assert str(info.value).startswith("/ck/checkpoint-000001.dfnet")
    for word in words:
        assert word in str(info.value)


def test_version_1_checkpoint_meta_decodes():
    """The layout before the codec, rebuilt from the new one: network, config and history as keys."""
    model = full_model()
    blob = encode(Checkpoint.from_model(model, 2, "sgd", {"steps": 1}, {"rows": 12, "partitions": 2}))

    def to_version_1(meta):
        record = meta.pop("model")
        meta.pop("format")
        meta.update(format_version=1, network=record["network"], config=record["config"], history=record["history"])

    copy = decode(_reencode(blob, to_version_1), "old")
    assert (copy.network, copy.config, copy.history) == (model.network.to_config(), model.config.to_dict(),
                                                          model.history)
    assert copy.run_id is None and copy.class_names is None


# --- the stores, with Spark -------------------------------------------------------------

def test_folder_round_trip_keeps_every_field(tmp_path):
    model = full_model()
    path = model.save(tmp_path / "model")
    assert json.loads((path / "model.json").read_text()) == model.to_record()[0]
    assert_same_model(TrainedModel.load(path), model)


def test_spark_ml_round_trip_keeps_every_field(spark, tmp_path):
    from dfnet.ml import DFNetModel

    model = full_model()
    path = str(tmp_path / "spark-ml")
    DFNetModel.from_trained(model).write().save(path)
    [data] = [p for p in Path(path).iterdir() if p.name.startswith("data-")]
    frame = spark.read.parquet(str(data))
    assert frame.columns == ["format_version", "record", "weights", "metadata"]
    assert dict(frame.dtypes)["weights"] == "array<double>"
    [row] = frame.collect()
    assert row["format_version"] == 2 and json.loads(row["record"]) == model.to_record()[0]
    assert_same_model(DFNetModel.load(path).trained_model, model)


def test_spark_ml_reader_takes_a_dfnet_folder_through_the_codec(spark, tmp_path):
    from dfnet.ml import DFNetModel

    model = full_model()
    model.save(tmp_path / "model")
    assert_same_model(DFNetModel.load(str(tmp_path / "model")).trained_model, model)


def test_checkpoint_store_round_trip_keeps_every_field(spark, tmp_path):
    model = full_model()
    store = CheckpointStore(spark, str(tmp_path / "ckpt"))
    store.save(Checkpoint.from_model(model, 2, "adam", {"steps": 2}, {"rows": 12, "partitions": 2}))
    assert_same_model(store.latest().model(), model)


def test_mlflow_pyfunc_round_trip_keeps_every_field(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no test reaches the internet
    mlflow = pytest.importorskip("mlflow")
    import pandas as pd

    from dfnet.tracking import load_trained_model, log_pyfunc_model

    model = full_model()
    before = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        experiment = mlflow.create_experiment("codec", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            uri = log_pyfunc_model(model, run_id=run.info.run_id, features_col="features")
        assert_same_model(load_trained_model(uri), model)
        X = np.random.default_rng(0).random((3, 6))
        scored = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"features": [list(x) for x in X]}))
        want = np.argmax(model.network.forward(model.params, X.astype(np.float32)), axis=1)
        assert scored["prediction"].tolist() == want.tolist()
    finally:
        mlflow.set_tracking_uri(before or "")


# --- models saved by dfnet 586172c (format version 1) ------------------------------------

def test_legacy_folder_loads_to_the_recorded_values(expected):
    assert_legacy_model(TrainedModel.load(LEGACY / "model"), expected)


def test_legacy_spark_ml_model_loads_to_the_recorded_values(spark, expected):
    from dfnet.ml import DFNetModel

    loaded = DFNetModel.load(str(LEGACY / "spark_ml_model"))
    assert_legacy_model(loaded.trained_model, expected, outcome=False)
    assert (loaded.trained_model.early_stopping_result, loaded.trained_model.schedule_plan) == (None, None)
    assert loaded.getLayers() == [64, 4, 10]


def test_legacy_spark_ml_folder_and_dfnet_folder_agree(spark, expected):
    from dfnet.ml import DFNetModel

    assert_legacy_model(DFNetModel.load(str(LEGACY / "model")).trained_model, expected)


def test_legacy_estimator_loads_its_params(spark, expected):
    from dfnet.ml import DFNetClassifier

    loaded = DFNetClassifier.load(str(LEGACY / "spark_ml_estimator"))
    want = expected["estimator"]
    assert loaded.uid == want["uid"]
    assert (loaded.getLayers(), loaded.getMaxIter(), loaded.getSeed()) == (want["layers"], want["maxIter"],
                                                                          want["seed"])
    assert loaded.getOrDefault("patience") == want["patience"]
    assert loaded.getOrDefault("validationSplit") == want["validationSplit"]


def test_legacy_checkpoints_decode_to_the_recorded_values(spark, expected):
    store = CheckpointStore(spark, str(LEGACY / "checkpoint_dir"), keep=None)
    assert [str(e) for e in store.epochs()] == sorted(expected["checkpoints"])
    for epoch, want in expected["checkpoints"].items():
        checkpoint = store.read(int(epoch))
        assert sha256(checkpoint.params) == want["params_sha256"] and str(checkpoint.params.dtype) == want["params_dtype"]
        assert (checkpoint.optimizer, checkpoint.history, checkpoint.network, checkpoint.config, checkpoint.data) == \
            (want["optimizer"], want["history"], want["network"], want["config"], want["data"])
        early = dict(checkpoint.stopper_state)
        best = early.pop("best_params")
        assert early == want["early_stopping"]
        assert (None if best is None else sha256(best)) == want["early_best_params_sha256"]
        assert checkpoint.run_id is None  # version 1 checkpoints did not hold it
    last = store.read(max(map(int, expected["checkpoints"])))
    assert last.model().network.to_config() == expected["network"]


def test_legacy_checkpoint_resumes_to_the_legacy_model(spark, legacy, expected):
    """The run checkpointed by dfnet 586172c, resumed from its epoch 2, ends with the weights that
    dfnet saved at the end of the uninterrupted run (a cosine schedule fixes the epochs)."""
    from dfnet.datasets import load_arrays, to_dataframe
    from dfnet.train import fit

    shutil.rmtree(legacy / "checkpoint_dir" / "checkpoint-000003.dfnet")
    images, labels = load_arrays("digits", "train")
    df = to_dataframe(spark, images, labels, max_value=16.0, num_partitions=2)
    model = fit(df, TrainConfig.from_dict(expected["config"]), run_id="legacy", class_names=CLASS_NAMES,
                verbose=False, checkpoint_dir=str(legacy / "checkpoint_dir"), resume=True)
    # the outcome of each epoch, not its timing or step bookkeeping
    outcome = lambda history: [{k: h.get(k) for k in ("epoch", "loss", "accuracy", "rows", "val_loss",  # noqa: E731
                                                      "val_accuracy")} for h in history]
    assert model.history[:2] == expected["history"][:2]
    assert outcome(model.history) == outcome(expected["history"])
    assert sha256(model.params) == expected["params_sha256"]
    assert model.early_stopping_result == expected["early_stopping"]
