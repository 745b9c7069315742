"""TrainedModel persistence: round trips, and every kind of broken folder refused with ModelFormatError."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.errors import ModelFormatError
from dfnet.model import TrainedModel
from dfnet.nn import build_mlp
from dfnet.train import fit

MODEL_FILES = {"model.json", "weights.npy"}


@pytest.fixture(scope="module")
def digits(spark):
    """The digits test split (360 real 8x8 images) as numpy and as a DataFrame."""
    images, labels = load_arrays("digits", "test")
    df = to_dataframe(spark, images, labels, max_value=16.0).cache()
    X = (images.reshape(len(images), -1) / np.float32(16.0)).astype(np.float32)
    yield df, X, labels
    df.unpersist()


@pytest.fixture(scope="module")
def fitted(digits):
    """A real fit: two classic full-batch epochs of a 64-8-10 network, so config and history are real."""
    df, _, _ = digits
    config = TrainConfig(hidden=(8,), activation="tanh", epochs=2, schedule="classic", optimizer="adam", lr=0.05,
                         seed=4)
    model = fit(df, config, verbose=False)
    model.class_names = [f"digit-{i}" for i in range(10)]
    return model


def hand_built(dtype="float64", hidden=(5,), n_out=3, seed=0):
    net = build_mlp(6, list(hidden), n_out, activation="sigmoid", loss="mse", dtype=dtype)
    return TrainedModel(net, net.init_params(seed, "uniform"),
                        config=TrainConfig(hidden=tuple(hidden), activation="sigmoid", loss="mse", dtype=dtype),
                        history=[{"epoch": 1, "loss": 0.5, "accuracy": 0.25, "rows": 10, "steps": 1,
                                  "batch_size": 10.0, "seconds": 0.01}],
                        class_names=["a", "b", "c"][:n_out])


def test_round_trip_of_a_trained_model_keeps_everything(fitted, digits, tmp_path):
    df, X, labels = digits
    path = fitted.save(tmp_path / "model")
    assert sorted(os.listdir(path)) == sorted(MODEL_FILES)
    loaded = TrainedModel.load(path)

    assert loaded.params.dtype == fitted.params.dtype == np.float32
    np.testing.assert_array_equal(loaded.params, fitted.params)
    assert loaded.network.to_config() == fitted.network.to_config()
    assert loaded.config == fitted.config
    assert loaded.history == fitted.history and [h["epoch"] for h in loaded.history] == [1, 2]
    assert list(loaded.class_names) == list(fitted.class_names)

    # Same predictions, in Spark and against the numpy forward pass of the original.
    expected = fitted.network.forward(fitted.params, X)
    for model in (fitted, loaded):
        rows = model.predict(df).orderBy("id").collect()
        np.testing.assert_array_equal([r["prediction"] for r in rows], np.argmax(expected, axis=1))
        np.testing.assert_allclose([r["probability"] for r in rows], expected, rtol=1e-6)
    # And the same evaluation, which also carries the class names.
    original, reloaded = fitted.evaluate(df), loaded.evaluate(df)
    np.testing.assert_array_equal(reloaded.confusion, original.confusion)
    assert reloaded.accuracy == pytest.approx(np.mean(np.argmax(expected, axis=1) == labels))
    assert "Class 3 (digit-3)" in reloaded.report()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_of_a_hand_built_model_is_exact(dtype, tmp_path):
    model = hand_built(dtype)
    loaded = TrainedModel.load(model.save(tmp_path / "m"))
    assert loaded.params.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded.params, model.params)
    X = np.random.default_rng(0).random((4, 6))
    np.testing.assert_array_equal(loaded.network.forward(loaded.params, X), model.network.forward(model.params, X))
    assert (loaded.config, loaded.history, list(loaded.class_names)) == (model.config, model.history,
                                                                         list(model.class_names))


def test_model_without_config_history_or_names_round_trips(tmp_path):
    net = build_mlp(3, [2], 2)
    model = TrainedModel(net, net.init_params(1))
    loaded = TrainedModel.load(model.save(tmp_path / "bare"))
    assert loaded.config is None and loaded.history == [] and loaded.class_names is None
    np.testing.assert_array_equal(loaded.params, model.params)


def test_saving_again_replaces_the_model_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "m"
    hand_built(seed=1).save(path)
    second = hand_built(seed=2, hidden=(7,))
    second.save(path)
    assert sorted(os.listdir(path)) == sorted(MODEL_FILES)
    loaded = TrainedModel.load(path)
    np.testing.assert_array_equal(loaded.params, second.params)
    assert loaded.network.to_config() == second.network.to_config()


def test_failed_save_leaves_no_temp_files_and_the_previous_model_intact(tmp_path):
    """A history entry json cannot write (a numpy float, easy to append by accident) makes save fail.
    The folder must still hold the previous model, whole."""
    path = tmp_path / "m"
    first = hand_built(seed=1)
    first.save(path)
    broken = hand_built(seed=2, hidden=(7,))
    broken.history.append({"epoch": 2, "loss": np.float32(0.25)})
    with pytest.raises(TypeError):
        broken.save(path)
    assert sorted(os.listdir(path)) == sorted(MODEL_FILES)
    loaded = TrainedModel.load(path)
    np.testing.assert_array_equal(loaded.params, first.params)
    assert loaded.network.to_config() == first.network.to_config()


# --- broken folders ----------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    model = hand_built()
    return model, model.save(tmp_path / "model")


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(ModelFormatError, match=r"not a dfnet model folder \(missing model.json\)"):
        TrainedModel.load(tmp_path / "nothing-here")


@pytest.mark.parametrize("name", sorted(MODEL_FILES))
def test_missing_file_is_named(saved, name):
    _, path = saved
    (path / name).unlink()
    with pytest.raises(ModelFormatError) as info:
        TrainedModel.load(path)
    assert f"missing {name}" in str(info.value) and str(path) in str(info.value)


def rewrite_json(path, change):
    meta = json.loads((path / "model.json").read_text())
    change(meta)
    (path / "model.json").write_text(json.dumps(meta))


CORRUPT_JSON = [
    ("truncated", lambda p: (p / "model.json").write_text((p / "model.json").read_text()[:40])),
    ("not-utf8", lambda p: (p / "model.json").write_bytes(b"\xff\xfe\x00garbage")),
    ("empty", lambda p: (p / "model.json").write_text("")),
    ("a-list", lambda p: (p / "model.json").write_text("[1, 2, 3]")),
    ("no-network", lambda p: rewrite_json(p, lambda m: m.pop("network"))),
    ("unknown-layer", lambda p: rewrite_json(p, lambda m: m["network"]["layers"][1].update(type="swish"))),
    ("unknown-loss", lambda p: rewrite_json(p, lambda m: m["network"].update(loss="hinge"))),
    ("layer-missing-size", lambda p: rewrite_json(p, lambda m: m["network"]["layers"][0].pop("n_out"))),
    ("unknown-config-key", lambda p: rewrite_json(p, lambda m: m["config"].update(dropout_rate=0.5))),
]


@pytest.mark.parametrize("corrupt", [c[1] for c in CORRUPT_JSON], ids=[c[0] for c in CORRUPT_JSON])
def test_corrupt_model_json_is_refused(saved, corrupt):
    _, path = saved
    corrupt(path)
    with pytest.raises(ModelFormatError) as info:
        TrainedModel.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("weights, words", [
    (lambda n: np.zeros(n - 1), ["holds {m} values", "needs {n}"]),
    (lambda n: np.zeros(n + 5), ["holds {m} values", "needs {n}"]),
    (lambda n: np.zeros((n, 1)), ["holds {m} values", "needs {n}"]),
    (lambda n: np.zeros(0), ["holds 0 values", "needs {n}"]),
], ids=["one-short", "five-long", "two-dimensional", "empty-array"])
def test_weights_of_the_wrong_length_are_refused(saved, weights, words):
    model, path = saved
    n = model.network.num_params
    bad = weights(n)
    np.save(path / "weights.npy", bad)
    with pytest.raises(ModelFormatError) as info:
        TrainedModel.load(path)
    for word in words:
        assert word.format(m=bad.size, n=n) in str(info.value)


@pytest.mark.parametrize("content", [
    b"this is not a numpy file",
    b"",  # e.g. a copy that failed before writing anything
    None,  # the first 100 bytes of a real .npy: header fine, data cut off
], ids=["garbage", "zero-bytes", "truncated"])
def test_unreadable_weights_are_refused(saved, content):
    _, path = saved
    target = path / "weights.npy"
    target.write_bytes(target.read_bytes()[:100] if content is None else content)
    with pytest.raises(ModelFormatError) as info:
        TrainedModel.load(path)
    assert str(path) in str(info.value)


def test_pickled_object_weights_are_refused_not_unpickled(saved):
    _, path = saved
    np.save(path / "weights.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelFormatError, match=r"corrupt model \(ValueError: Object arrays cannot be loaded"):
        TrainedModel.load(path)


@pytest.mark.parametrize("other", [
    lambda: build_mlp(6, [4], 3, activation="sigmoid", loss="mse"),  # hidden size
    lambda: build_mlp(6, [5], 4, activation="sigmoid", loss="mse"),  # classes
    lambda: build_mlp(6, [5], 3, activation="tanh", loss="mse"),  # activation, same parameter count
    lambda: build_mlp(6, [5], 3, activation="sigmoid", loss="mse", dtype="float32"),  # dtype
], ids=["hidden", "classes", "activation", "dtype"])
def test_expect_refuses_a_different_architecture(saved, other):
    _, path = saved
    with pytest.raises(ModelFormatError) as info:
        TrainedModel.load(path, expect=other())
    assert "differs from the expected" in str(info.value) and str(path) in str(info.value)


def test_expect_accepts_the_same_architecture(saved):
    model, path = saved
    same = build_mlp(6, [5], 3, activation="sigmoid", loss="mse")
    loaded = TrainedModel.load(path, expect=same)
    np.testing.assert_array_equal(loaded.params, model.params)
