"""predict() and evaluate() on real MNIST digits, against numpy forward passes and scikit-learn."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from pyspark.sql import functions as F
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, multilabel_confusion_matrix,
                             precision_recall_fscore_support)

from dfnet.datasets import load_arrays, load_dataframe
from dfnet.errors import DataValidationError
from dfnet.evaluate import evaluate, predict
from dfnet.nn import build_mlp
from dfnet.optim import Adam

ROWS = 1500  # the first 1,500 official test digits: every class present, quick to evaluate
CLASSES = list(range(10))


@pytest.fixture(scope="module")
def test_digits(shared_data):
    """Pixels as dfnet stores them (float32 in [0, 1]) and labels of the first ROWS t10k digits."""
    images, labels = load_arrays("mnist", "test", shared_data)
    X = (images[:ROWS].reshape(ROWS, -1) / np.float32(255)).astype(np.float32)
    return X, labels[:ROWS]


@pytest.fixture(scope="module")
def trained(shared_data):
    """A 784-16-10 network fitted in numpy on the 5,000 MNIST training digits (no Spark, ~1 s)."""
    images, labels = load_arrays("mnist", "train", shared_data)
    X = images.reshape(len(images), -1).astype(np.float64) / 255.0
    net = build_mlp(784, [16], 10, activation="relu", dtype="float64")
    params = net.init_params(0, "he")
    optimizer = Adam(0.01)
    for _ in range(60):
        step = net.loss_and_grad(params, X, labels)
        optimizer.step(params, step.grad_sum / step.count)
    return net, params


@pytest.fixture(scope="module")
def always_three():
    """A network whose output ignores the image: zero weights and a bias that favours class 3."""
    net = build_mlp(784, [4], 10, activation="relu", dtype="float64")
    params = np.zeros(net.num_params)
    params[-10 + 3] = 5.0  # the last 10 parameters are the output layer's bias
    return net, params


@pytest.fixture(scope="module")
def frame(spark, shared_data):
    """The test digits with two extra columns of the user's, over 3 partitions, cached."""
    df = load_dataframe(spark, "mnist", "test", data_dir=shared_data, num_partitions=3)
    df = (df.where(F.col("id") < ROWS)
            .withColumn("source", F.concat(F.lit("t10k-"), F.col("id").cast("string")))
            .withColumn("weight", F.col("id") / 7.0)
            .cache())
    assert df.count() == ROWS
    yield df
    df.unpersist()


def sklearn_figures(y_true, y_pred):
    """Everything evaluate() reports, computed by scikit-learn from plain arrays."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=CLASSES, zero_division=0)
    per_class = multilabel_confusion_matrix(y_true, y_pred, labels=CLASSES)  # [[tn, fp], [fn, tp]]
    return {
        "confusion": confusion_matrix(y_true, y_pred, labels=CLASSES),
        "accuracy": accuracy_score(y_true, y_pred),
        "tn": per_class[:, 0, 0], "fp": per_class[:, 0, 1], "fn": per_class[:, 1, 0], "tp": per_class[:, 1, 1],
        "precision": precision, "recall": recall, "f1": f1, "support": support,
        "macro_f1": f1_score(y_true, y_pred, labels=CLASSES, average="macro", zero_division=0),
    }


def test_predictions_and_probabilities_equal_numpy_forward(frame, trained, test_digits):
    net, params = trained
    X, labels = test_digits
    rows = predict(frame, net, params).orderBy("id").collect()
    assert [r["id"] for r in rows] == list(range(ROWS))
    expected = net.forward(params, X.astype(np.float64))
    probabilities = np.array([r["probability"] for r in rows])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal([r["prediction"] for r in rows], np.argmax(expected, axis=1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    # A useful model, so the metrics below are not about a degenerate confusion matrix.
    assert 0.6 < np.mean(np.argmax(expected, axis=1) == labels) < 1.0


def test_float32_network_predicts_like_numpy_float32(frame, trained, test_digits):
    net64, params64 = trained
    net = build_mlp(784, [16], 10, activation="relu", dtype="float32")
    params = params64.astype(np.float32)
    X, _ = test_digits
    rows = predict(frame, net, params).orderBy("id").collect()
    expected = net.forward(params, X)
    assert expected.dtype == np.float32
    np.testing.assert_allclose(np.array([r["probability"] for r in rows]), expected, rtol=1e-5, atol=1e-7)
    agree = np.mean(np.array([r["prediction"] for r in rows]) == np.argmax(expected, axis=1))
    assert agree > 0.998  # only near-ties may flip between BLAS kernels


def test_predict_keeps_every_original_column_and_row(frame, trained):
    net, params = trained
    out = predict(frame, net, params)
    assert out.columns == frame.columns + ["prediction", "probability"]
    assert out.schema.fields[:len(frame.columns)] == frame.schema.fields
    assert dict(out.dtypes)["prediction"] == "int" and dict(out.dtypes)["probability"] == "array<double>"
    before = [r.asDict() for r in frame.orderBy("id").collect()]
    after = [{k: r[k] for k in frame.columns} for r in out.orderBy("id").collect()]
    assert len(after) == ROWS
    assert after == before


def test_custom_output_column_names(frame, trained, test_digits):
    net, params = trained
    out = predict(frame.withColumnRenamed("image", "pixels"), net, params, features_col="pixels",
                  prediction_col="guess", probability_col="scores")
    assert out.columns[-2:] == ["guess", "scores"]
    rows = out.orderBy("id").collect()
    expected = net.forward(params, test_digits[0].astype(np.float64))
    np.testing.assert_array_equal([r["guess"] for r in rows], np.argmax(expected, axis=1))


@pytest.mark.parametrize("model, drop_class", [("trained", None), ("always_three", None), ("always_three", 7),
                                               ("trained", 0)],
                         ids=["trained", "always-3", "always-3-no-sevens", "trained-no-zeros"])
def test_evaluate_matches_scikit_learn(request, frame, model, drop_class):
    """Confusion matrix, TP/FP/FN/TN, precision, recall, F1 and accuracy, including classes never predicted
    (precision 0, as scikit-learn with zero_division=0) and classes absent from the labels."""
    net, params = request.getfixturevalue(model)
    df = frame if drop_class is None else frame.where(F.col("label") != drop_class)
    predictions = predict(df, net, params).cache()
    try:
        pairs = predictions.select("label", "prediction").collect()
        result = evaluate(predictions, 10)
    finally:
        predictions.unpersist()
    y_true = np.array([r["label"] for r in pairs])
    y_pred = np.array([r["prediction"] for r in pairs])
    ref = sklearn_figures(y_true, y_pred)

    np.testing.assert_array_equal(result.confusion, ref["confusion"])
    assert result.accuracy == pytest.approx(ref["accuracy"], rel=1e-12)
    assert result.count == len(y_true)
    assert [c["class"] for c in result.per_class] == CLASSES
    for key in ("tp", "fp", "fn", "tn", "support"):
        assert [c[key] for c in result.per_class] == list(ref[key]), key
    for key in ("precision", "recall", "f1"):
        np.testing.assert_allclose([c[key] for c in result.per_class], ref[key], rtol=1e-12, atol=0, err_msg=key)
    assert result.as_dict()["macro_f1"] == pytest.approx(ref["macro_f1"], rel=1e-12)
    if drop_class is not None:
        absent = result.per_class[drop_class]
        assert absent["support"] == 0 and absent["tn"] + absent["fp"] == len(y_true)


def test_as_dict_is_json_and_consistent(frame, trained):
    net, params = trained
    result = evaluate(predict(frame, net, params), 10)
    d = json.loads(json.dumps(result.as_dict()))
    confusion = np.array(d["confusion_matrix"])
    assert d["count"] == ROWS == confusion.sum()
    assert d["test_accuracy"] == pytest.approx(np.trace(confusion) / ROWS)
    assert [c["tp"] for c in d["per_class"]] == list(np.diag(confusion))
    assert [c["support"] for c in d["per_class"]] == list(confusion.sum(axis=1))
    assert d["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in d["per_class"]]))


def test_evaluate_with_custom_label_and_prediction_columns(frame, trained):
    net, params = trained
    plain = evaluate(predict(frame, net, params), 10)
    renamed = predict(frame.withColumnRenamed("label", "digit"), net, params, prediction_col="guess")
    custom = evaluate(renamed, 10, label_col="digit", prediction_col="guess")
    np.testing.assert_array_equal(custom.confusion, plain.confusion)


def test_evaluate_rejects_labels_outside_the_classes(frame, always_three):
    net, params = always_three  # predicts 3 everywhere, a valid class of a 5-class evaluation
    with pytest.raises(DataValidationError, match=r"'label' holds label [5-9], outside the model's 5 classes"):
        evaluate(predict(frame, net, params), 5)


@pytest.mark.parametrize("bad_prediction", [3, -1], ids=["too-large", "negative"])
def test_evaluate_rejects_predictions_outside_the_classes(spark, bad_prediction):
    """A prediction column from another model (or a -1 'no answer' marker) must not be counted
    into some class: a negative index would silently land in the last column of the matrix."""
    df = spark.createDataFrame([(0, 0), (1, 1), (2, 2), (1, bad_prediction)], "label int, prediction int")
    with pytest.raises(DataValidationError, match=rf"'prediction'.*{bad_prediction}"):
        evaluate(df, 3)


def test_evaluate_counts_a_plain_label_prediction_frame(spark):
    # Hand-checkable: 6 rows, 3 classes.
    df = spark.createDataFrame([(0, 0), (0, 0), (0, 1), (1, 1), (2, 1), (2, 2)], "label int, prediction int")
    result = evaluate(df, 3)
    np.testing.assert_array_equal(result.confusion, [[2, 1, 0], [0, 1, 0], [0, 1, 1]])
    assert result.accuracy == pytest.approx(4 / 6)
    assert [(c["tp"], c["fp"], c["fn"], c["tn"]) for c in result.per_class] == [(2, 0, 1, 3), (1, 2, 0, 3),
                                                                                (1, 0, 1, 4)]
    assert [c["precision"] for c in result.per_class] == pytest.approx([1.0, 1 / 3, 1.0])
    assert [c["recall"] for c in result.per_class] == pytest.approx([2 / 3, 1.0, 0.5])


def test_report_has_the_matrix_and_one_block_per_class(frame, trained):
    net, params = trained
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    result = evaluate(predict(frame, net, params), 10, class_names=names)
    text = result.report()
    assert f"Test accuracy {result.accuracy:.4f} on {ROWS} rows" in text
    headers = re.findall(r"^Class (\d+) \((\w+)\)$", text, flags=re.M)
    assert headers == [(str(i), names[i]) for i in range(10)]
    blocks = re.findall(r"^  TP (\d+)  FP (\d+)  FN (\d+)  TN (\d+)\n"
                        r"  precision ([\d.]+)  recall ([\d.]+)  F1 ([\d.]+)$", text, flags=re.M)
    assert len(blocks) == 10
    confusion = result.confusion
    for i, block in enumerate(blocks):
        tp, fp, fn, tn = map(int, block[:4])
        assert (tp, fp, fn) == (confusion[i, i], confusion[:, i].sum() - confusion[i, i],
                                confusion[i].sum() - confusion[i, i])
        assert tp + fp + fn + tn == ROWS
        assert float(block[4]) == pytest.approx(tp / (tp + fp) if tp + fp else 0.0, abs=5e-5)
        assert float(block[5]) == pytest.approx(tp / (tp + fn), abs=5e-5)
    # The matrix rows are printed in full under their class index.
    for i, row in enumerate(confusion):
        assert re.search(rf"^ +{i}" + "".join(rf" +{v}" for v in row) + "$", text, flags=re.M)


def test_report_without_class_names_uses_indices(frame, always_three):
    net, params = always_three
    text = evaluate(predict(frame, net, params), 10).report()
    assert re.findall(r"^Class (\d+) \((\d+)\)$", text, flags=re.M) == [(str(i), str(i)) for i in range(10)]
