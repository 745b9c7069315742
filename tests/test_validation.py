"""Bad input to fit() and predict() fails with a specific error, naming the problem, before any training."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import types as T

from dfnet.config import TrainConfig
from dfnet.errors import ConfigError, DataValidationError
from dfnet.evaluate import predict
from dfnet.nn import build_mlp
from dfnet.train import fit

FLOATS = T.ArrayType(T.FloatType())
DOUBLES = T.ArrayType(T.DoubleType())
INF = float("inf")
NAN = float("nan")
GOOD_IMAGES = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.0, 1.0, 0.0, 1.0], [0.9, 0.1, 0.9, 0.1]]
GOOD_LABELS = [0, 1, 1, 0]
CONFIG = TrainConfig(hidden=(3,), epochs=1, schedule="classic", optimizer="sgd", lr=0.1)


class RecordingCallback:
    """Records what a progress printer would be told."""

    def __init__(self):
        self.steps: list[tuple[int, int, int]] = []
        self.epochs: list[int] = []

    def on_step(self, epoch, step, steps):
        self.steps.append((epoch, step, steps))

    def on_epoch_end(self, record, total_epochs):
        self.epochs.append(record.epoch)


def frame(spark, images, labels=None, *, image_type=FLOATS, label_type=T.IntegerType(),
          image_col="image", label_col="label", extra=None):
    """A DataFrame with an explicit schema (so types are exactly what the case says)."""
    fields = [T.StructField(image_col, image_type)]
    if labels is not None:
        fields.append(T.StructField(label_col, label_type))
    rows = [(img,) if labels is None else (img, lab) for img, lab in zip(images, labels or [None] * len(images))]
    return spark.createDataFrame(rows, T.StructType(fields))


def with_pixel(value, row=1, col=2):
    images = [list(img) for img in GOOD_IMAGES]
    images[row][col] = value
    return images


# (id, builder(spark) -> DataFrame, extra fit kwargs, exception type, words the message must contain)
FIT_CASES = [
    ("missing-features-column",
     lambda s: frame(s, GOOD_IMAGES, GOOD_LABELS, image_col="pixels"), {},
     DataValidationError, ["'image'", "not found", "'pixels'", "'label'"]),
    ("missing-label-column",
     lambda s: frame(s, GOOD_IMAGES, GOOD_LABELS, label_col="target"), {},
     DataValidationError, ["'label'", "not found", "'image'", "'target'"]),
    ("features-are-strings",
     lambda s: frame(s, ["0.1,0.2,0.3,0.4"] * 4, GOOD_LABELS, image_type=T.StringType()), {},
     DataValidationError, ["'image'", "array<float> or array<double>", "got string"]),
    ("features-are-array-of-strings",
     lambda s: frame(s, [[str(v) for v in img] for img in GOOD_IMAGES], GOOD_LABELS,
                     image_type=T.ArrayType(T.StringType())), {},
     DataValidationError, ["'image'", "array of numbers", "got array<string>"]),
    ("labels-are-strings",
     lambda s: frame(s, GOOD_IMAGES, ["zero", "one", "one", "zero"], label_type=T.StringType()), {},
     DataValidationError, ["'label'", "integer class indices", "got string"]),
    ("ragged-image-lengths",
     lambda s: frame(s, [GOOD_IMAGES[0], GOOD_IMAGES[1][:3], GOOD_IMAGES[2], GOOD_IMAGES[3]], GOOD_LABELS), {},
     DataValidationError, ["'image'", "lengths from 3 to 4"]),
    ("images-longer-than-the-network-input",
     lambda s: frame(s, [img + [0.5] for img in GOOD_IMAGES], GOOD_LABELS),
     {"network": build_mlp(4, [3], 2, dtype="float32")},
     DataValidationError, ["'image'", "must have 4 values", "from 5 to 5"]),
    ("nan-pixel",
     lambda s: frame(s, with_pixel(NAN), GOOD_LABELS), {},
     DataValidationError, ["'image'", "1 image(s)", "NaN"]),
    ("plus-inf-pixel",
     lambda s: frame(s, with_pixel(INF), GOOD_LABELS), {},
     DataValidationError, ["'image'", "1 image(s)", "infinite"]),
    ("minus-inf-pixel",
     lambda s: frame(s, with_pixel(-INF, row=3, col=0), GOOD_LABELS, image_type=DOUBLES), {},
     DataValidationError, ["'image'", "1 image(s)", "infinite"]),
    ("null-pixel-inside-an-image",
     lambda s: frame(s, with_pixel(None), GOOD_LABELS), {},
     DataValidationError, ["'image'", "1 image(s)", "null"]),
    ("null-image-row",
     lambda s: frame(s, [GOOD_IMAGES[0], None, GOOD_IMAGES[2], GOOD_IMAGES[3]], GOOD_LABELS), {},
     DataValidationError, ["'image'", "1 null"]),
    ("null-label",
     lambda s: frame(s, GOOD_IMAGES, [0, None, 1, 0]), {},
     DataValidationError, ["'label'", "1 null"]),
    ("negative-label",
     lambda s: frame(s, GOOD_IMAGES, [0, -1, 1, 0]), {},
     DataValidationError, ["'label'", ">= 0", "-1"]),
    ("negative-label-with-num-classes",
     lambda s: frame(s, GOOD_IMAGES, [0, -1, 1, 0]), {"num_classes": 2},
     DataValidationError, ["'label'", "[0, 1]", "from -1 to 1"]),
    ("label-equal-to-num-classes",
     lambda s: frame(s, GOOD_IMAGES, [0, 1, 2, 0]), {"num_classes": 2},
     DataValidationError, ["'label'", "[0, 1]", "2-class", "from 0 to 2"]),
    ("label-beyond-network-outputs",
     lambda s: frame(s, GOOD_IMAGES, [0, 1, 3, 0]), {"network": build_mlp(4, [3], 3, dtype="float32")},
     DataValidationError, ["'label'", "[0, 2]", "3-class", "from 0 to 3"]),
    ("fractional-double-labels",
     lambda s: frame(s, GOOD_IMAGES, [0.0, 0.5, 1.0, 1.5], label_type=T.DoubleType()), {},
     DataValidationError, ["'label'", "2 non-integer"]),
    ("nan-label",
     lambda s: frame(s, GOOD_IMAGES, [0.0, NAN, 1.0, 0.0], label_type=T.DoubleType()), {},
     DataValidationError, ["'label'", "1 non-integer"]),
    ("infinite-label",
     lambda s: frame(s, GOOD_IMAGES, [0.0, INF, 1.0, 0.0], label_type=T.DoubleType()), {},
     DataValidationError, ["'label'"]),
    ("empty-dataframe",
     lambda s: frame(s, [], []), {},
     DataValidationError, ["empty", "no rows"]),
    ("invalid-config",
     lambda s: frame(s, GOOD_IMAGES, GOOD_LABELS), {"config": CONFIG.replace(lr=-1.0)},
     ConfigError, ["lr=-1.0", "> 0"]),
    ("network-dtype-differs-from-config",
     lambda s: frame(s, GOOD_IMAGES, GOOD_LABELS), {"network": build_mlp(4, [3], 2, dtype="float64")},
     ConfigError, ["dtype='float32'", "float64"]),
    ("initial-params-of-wrong-shape",
     lambda s: frame(s, GOOD_IMAGES, GOOD_LABELS), {"initial_params": np.zeros(7)},
     ConfigError, ["initial_params", "(7,)", f"({4 * 3 + 3 + 3 * 2 + 2},)"]),
]


@pytest.mark.parametrize("build, kwargs, error, words", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES])
def test_fit_rejects_bad_input_before_training(spark, build, kwargs, error, words):
    df = build(spark)
    recorder = RecordingCallback()
    kwargs = {"config": CONFIG, **kwargs}
    with pytest.raises(error) as info:
        fit(df, callbacks=[recorder], verbose=False, **kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert recorder.steps == [] and recorder.epochs == [], "a training step ran before the error"


def test_fit_reports_every_missing_column_as_listed_in_the_schema(spark):
    df = frame(spark, GOOD_IMAGES, GOOD_LABELS, image_col="pixels", label_col="digit")
    with pytest.raises(DataValidationError) as info:
        fit(df, CONFIG, verbose=False)
    assert "['pixels', 'digit']" in str(info.value)


def test_recording_callback_does_see_the_steps_of_a_valid_run(spark):
    """The control for the cases above: with valid input the callback records each step."""
    recorder = RecordingCallback()
    fit(frame(spark, GOOD_IMAGES, GOOD_LABELS), CONFIG.replace(epochs=2), callbacks=[recorder], verbose=False)
    assert recorder.steps == [(1, 1, 1), (2, 1, 1)]
    assert recorder.epochs == [1, 2]


# --- predict ------------------------------------------------------------------------------

NET = build_mlp(4, [3], 2, dtype="float32")
PARAMS = NET.init_params(0, "xavier")

PREDICT_CASES = [
    ("missing-features-column",
     lambda s: frame(s, GOOD_IMAGES, image_col="pixels"), {},
     ["'image'", "not found", "'pixels'"]),
    ("features-are-strings",
     lambda s: frame(s, ["a"] * 4, image_type=T.StringType()), {},
     ["'image'", "got string"]),
    ("features-are-array-of-strings",
     lambda s: frame(s, [["1"] * 4] * 4, image_type=T.ArrayType(T.StringType())), {},
     ["'image'", "got array<string>"]),
    ("images-of-the-wrong-length",
     lambda s: frame(s, [img[:3] for img in GOOD_IMAGES]), {},
     ["'image'", "must have 4 values", "from 3 to 3"]),
    ("ragged-image-lengths",
     lambda s: frame(s, [GOOD_IMAGES[0], GOOD_IMAGES[1] + [0.0], GOOD_IMAGES[2], GOOD_IMAGES[3]]), {},
     ["'image'", "must have 4 values", "from 4 to 5"]),
    ("nan-pixel", lambda s: frame(s, with_pixel(NAN)), {}, ["'image'", "NaN"]),
    ("plus-inf-pixel", lambda s: frame(s, with_pixel(INF)), {}, ["'image'", "infinite"]),
    ("minus-inf-pixel", lambda s: frame(s, with_pixel(-INF), image_type=DOUBLES), {}, ["'image'", "infinite"]),
    ("null-image-row",
     lambda s: frame(s, [GOOD_IMAGES[0], None, None, GOOD_IMAGES[3]]), {}, ["'image'", "2 null"]),
    ("empty-dataframe", lambda s: frame(s, []), {}, ["empty"]),
    ("existing-prediction-column",
     lambda s: frame(s, GOOD_IMAGES, [0, 1, 0, 1], label_col="prediction"), {},
     ["'prediction'", "already exists"]),
    ("existing-probability-column",
     lambda s: frame(s, GOOD_IMAGES, [0, 1, 0, 1], label_col="probability"), {},
     ["'probability'", "already exists"]),
    ("custom-output-column-exists",
     lambda s: frame(s, GOOD_IMAGES, GOOD_LABELS), {"prediction_col": "label"},
     ["'label'", "already exists"]),
]


@pytest.mark.parametrize("build, kwargs, words", [c[1:] for c in PREDICT_CASES],
                         ids=[c[0] for c in PREDICT_CASES])
def test_predict_rejects_bad_input_when_called(spark, build, kwargs, words):
    df = build(spark)
    # predict() is lazy otherwise: the error must come from the call itself, not a later action.
    with pytest.raises(DataValidationError) as info:
        predict(df, NET, PARAMS, **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def test_predict_with_another_output_name_accepts_a_frame_that_has_prediction(spark):
    df = frame(spark, GOOD_IMAGES, [7, 7, 7, 7], label_col="prediction")
    out = predict(df, NET, PARAMS, prediction_col="predicted_class").orderBy("image").collect()
    X = np.array(sorted(GOOD_IMAGES), dtype=np.float32)
    assert [r["prediction"] for r in out] == [7] * 4  # the user's column is untouched
    assert [r["predicted_class"] for r in out] == list(np.argmax(NET.forward(PARAMS, X), axis=1))


# --- valid input of other numeric types ---------------------------------------------------

@pytest.mark.parametrize("image_type, label_type, labels", [
    (DOUBLES, T.DoubleType(), [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]),
    (FLOATS, T.FloatType(), [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]),
    (DOUBLES, T.LongType(), [0, 0, 1, 1, 0, 1, 1, 0, 1, 0]),
], ids=["double-labels-array-double", "float-labels-array-float", "long-labels-array-double"])
def test_fit_accepts_other_numeric_types_and_reads_them_exactly(spark, image_type, label_type, labels):
    """One full-batch SGD epoch equals the same step in numpy on the same values."""
    rng = np.random.default_rng(5)
    images = rng.random((10, 4)).round(3)
    df = frame(spark, images.tolist(), labels, image_type=image_type, label_type=label_type)
    net = build_mlp(4, [3], 2, activation="tanh", dtype="float64")
    start = net.init_params(2, "uniform")
    config = TrainConfig(hidden=(3,), activation="tanh", epochs=1, schedule="classic", optimizer="sgd",
                         lr=0.5, dtype="float64")
    recorder = RecordingCallback()
    model = fit(df, config, network=net, initial_params=start, callbacks=[recorder], verbose=False)

    # Independent: what Spark stored (float32 arrays round pixels to float32), stepped in numpy.
    X = images.astype(np.float32 if image_type == FLOATS else np.float64).astype(np.float64)
    y = np.array(labels, dtype=np.int64)
    ref = net.loss_and_grad(start, X, y)
    assert recorder.steps == [(1, 1, 1)]
    [record] = model.history
    assert record["rows"] == 10 and record["steps"] == 1
    assert record["loss"] == pytest.approx(ref.loss_sum / 10, rel=1e-12)
    assert record["accuracy"] == pytest.approx(ref.correct / 10)
    np.testing.assert_allclose(model.params, start - 0.5 * ref.grad_sum / 10, rtol=1e-12, atol=1e-15)
    assert all(math.isfinite(v) for v in model.params)


def test_predict_accepts_array_double_features(spark):
    rng = np.random.default_rng(9)
    images = rng.random((6, 4))
    df = frame(spark, images.tolist(), image_type=DOUBLES)
    net = build_mlp(4, [3], 2, dtype="float64")
    params = net.init_params(1, "xavier")
    rows = predict(df, net, params).collect()
    got = {tuple(r["image"]): (r["prediction"], r["probability"]) for r in rows}
    expected = net.forward(params, images)
    for image, probs in zip(images, expected):
        prediction, probability = got[tuple(image)]
        assert prediction == int(np.argmax(probs))
        np.testing.assert_allclose(probability, probs, rtol=1e-12)
