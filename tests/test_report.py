"""Figures show the real numbers: each is checked against an independent computation.

The figure functions take no Spark: their networks are small CNNs with random
parameters. ``run_figures`` (the figures of one training run) is checked at the
end on models trained for two epochs on the real digits, in the shared session.
"""

from __future__ import annotations

import os
import re

import numpy as np
import plotly.offline
import pytest

from dfnet.report import (
    activation_figure,
    activation_maps,
    confusion_figure,
    history_figure,
    kernel_figure,
    per_class_figure,
    run_figures,
    sample_predictions,
    samples_figure,
    write_report,
)
from dfnet.nn import build_cnn
from dfnet.train import EpochRecord


def _cnn(input_shape=(8, 8, 1), filters=4, kernel=3):
    """Conv2D(3x3) -> ReLU -> MaxPool(2) -> Flatten -> Dense -> Softmax, random weights and biases."""
    net = build_cnn(input_shape, [(filters, kernel)], n_out=3)
    params = np.random.default_rng(1).normal(size=net.num_params)
    return net, params


def _kernel(params, kh, kw, C, filters, f, c):
    """Kernel f on input channel c, read from the flat vector by the (dy, dx, c) row order."""
    K = params[:kh * kw * C * filters].reshape(kh * kw * C, filters)
    return np.array([[K[(dy * kw + dx) * C + c, f] for dx in range(kw)] for dy in range(kh)])


def _heatmaps(fig):
    return [t for t in fig.data if t.type == "heatmap"]


# --- kernels -----------------------------------------------------------------------

def test_kernel_figure_one_heatmap_per_filter_with_the_kernel_values():
    net, params = _cnn(filters=5)
    fig = kernel_figure(net, params)
    maps = _heatmaps(fig)
    assert len(maps) == 5
    for f, trace in enumerate(maps):
        np.testing.assert_allclose(np.asarray(trace.z), _kernel(params, 3, 3, 1, 5, f, 0))
    assert [a.text for a in fig.layout.annotations] == [f"kernel {f}" for f in range(1, 6)]
    limit = np.abs(params[:45]).max()
    axis = fig.layout.coloraxis
    assert (axis.cmin, axis.cmax, axis.cmid) == pytest.approx((-limit, limit, 0))
    assert all(t.coloraxis == "coloraxis" for t in maps)
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis.scaleanchor == "x"


def test_kernel_figure_channel_choice_on_multichannel_input():
    net, params = _cnn(input_shape=(6, 6, 2), filters=3)
    one = kernel_figure(net, params, channel=1)
    mean = kernel_figure(net, params, channel="mean")
    for f in range(3):
        c0, c1 = (_kernel(params, 3, 3, 2, 3, f, c) for c in (0, 1))
        np.testing.assert_allclose(np.asarray(one.data[f].z), c1)
        np.testing.assert_allclose(np.asarray(mean.data[f].z), (c0 + c1) / 2)
    assert "input channel 1 of 2" in one.layout.title.text
    assert "mean of 2 input channels" in mean.layout.title.text
    with pytest.raises(ValueError, match="channel"):
        kernel_figure(net, params, channel=2)


@pytest.mark.parametrize("layer", [1, 2, 3, 4, 5])
def test_kernel_figure_refuses_a_layer_that_is_not_conv(layer):
    net, params = _cnn()
    with pytest.raises(ValueError, match=rf"layer={layer} is \w+\(.*not a Conv2D.*\[0\]"):
        kernel_figure(net, params, layer=layer)
    with pytest.raises(ValueError, match="out of range"):
        kernel_figure(net, params, layer=len(net.layers))


# --- activations -------------------------------------------------------------------

def _reference_maps(image, params, filters=4):
    """Valid 3x3 cross-correlation + bias -> ReLU, then 2x2 max pooling, by loops."""
    K = params[:9 * filters].reshape(9, filters)
    b = params[9 * filters:10 * filters]
    conv = np.zeros((6, 6, filters))
    for y in range(6):
        for x in range(6):
            for f in range(filters):
                conv[y, x, f] = sum(image[y + dy, x + dx] * K[dy * 3 + dx, f] for dy in range(3) for dx in range(3))
                conv[y, x, f] += b[f]
    relu = np.maximum(conv, 0)
    pooled = np.array([[[relu[2 * y:2 * y + 2, 2 * x:2 * x + 2, f].max() for f in range(filters)]
                        for x in range(3)] for y in range(3)])
    return conv, relu, pooled


def test_activation_figure_matches_an_independent_convolution():
    net, params = _cnn()
    image = np.random.default_rng(2).random((8, 8))
    _, relu, pooled = _reference_maps(image, params)
    fig = activation_figure(net, params, image.ravel())
    maps = _heatmaps(fig)
    assert len(maps) == 1 + 4 + 4  # input, after ReLU, after pooling
    np.testing.assert_allclose(np.asarray(maps[0].z), image)
    for f in range(4):
        np.testing.assert_allclose(np.asarray(maps[1 + f].z), relu[:, :, f], atol=1e-12)
        np.testing.assert_allclose(np.asarray(maps[5 + f].z), pooled[:, :, f], atol=1e-12)
    assert relu.min() == 0 and relu.max() > 0  # the ReLU really clipped something
    row_titles = [fig.layout[name].title.text for name in ("yaxis", "yaxis5", "yaxis9")]
    assert row_titles == ["input", "1: ReLU", "2: MaxPool2D"]


def test_activation_figure_explicit_layers_and_bad_choice():
    net, params = _cnn()
    image = np.random.default_rng(3).random((8, 8, 1))
    conv, _, _ = _reference_maps(image[:, :, 0], params)
    fig = activation_figure(net, params, image, layers=[0], max_maps=2)
    maps = _heatmaps(fig)
    assert len(maps) == 1 + 2
    np.testing.assert_allclose(np.asarray(maps[1].z), conv[:, :, 0], atol=1e-12)
    np.testing.assert_allclose(np.asarray(maps[2].z), conv[:, :, 1], atol=1e-12)
    assert [i for i, _, _ in activation_maps(net, params, image)] == [0, 1, 2]
    with pytest.raises(ValueError, match="layer 3 has no image-shaped output"):
        activation_figure(net, params, image, layers=[3])
    with pytest.raises(ValueError, match="image has 63 values"):
        activation_figure(net, params, np.zeros(63))


def test_tall_grids_and_deeper_networks():
    net = build_cnn((10, 10, 1), [(15, 3), (3, 3)], n_out=2, pool=None)
    params = np.random.default_rng(5).normal(size=net.num_params)
    column = kernel_figure(net, params, max_cols=1)  # 15 rows: the gaps must shrink to fit
    assert len(_heatmaps(column)) == 15 and column.layout.title.text == "Layer 0 Conv2D kernels (3x3)"
    assert "mean of 15 input channels" in kernel_figure(net, params, layer=2, channel="mean").layout.title.text
    fig = activation_figure(net, params, np.zeros(100), max_maps=4)
    assert len(_heatmaps(fig)) == 1 + 4 + 3  # input, first ReLU, second ReLU


# --- history, confusion, per class -------------------------------------------------

def test_history_figure_from_records_and_dicts():
    records = [EpochRecord(e, 1.0 / e, 0.5 + e / 10, 100, 2, 50.0, 0.1, val_loss=1.5 / e, val_accuracy=0.4 + e / 10)
               for e in (1, 2, 3)]
    fig = history_figure(records)
    by = {(t.name, t.xaxis): t for t in fig.data}
    assert set(by) == {("train", "x"), ("validation", "x"), ("train", "x2"), ("validation", "x2")}
    assert list(by["train", "x"].x) == [1, 2, 3]
    np.testing.assert_allclose(by["train", "x"].y, [1.0, 0.5, 1 / 3])
    np.testing.assert_allclose(by["validation", "x2"].y, [0.5, 0.6, 0.7])
    assert sum(t.showlegend for t in fig.data) == 2

    dicts = [r.as_dict() for r in records]
    for d in dicts:
        del d["val_loss"], d["val_accuracy"]
    fig = history_figure(dicts)
    assert [(t.name, list(t.x)) for t in fig.data] == [("train", [1, 2, 3])] * 2
    np.testing.assert_allclose(fig.data[1].y, [0.6, 0.7, 0.8])


def test_confusion_figure_is_the_matrix_true_on_y():
    confusion = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    fig = confusion_figure(confusion, class_names=["cat", "dog", "emu"])
    trace = fig.data[0]
    np.testing.assert_array_equal(np.asarray(trace.z), confusion)
    np.testing.assert_array_equal(np.asarray(trace.text), confusion)
    assert trace.texttemplate == "%{text}"
    assert list(trace.x) == list(trace.y) == ["cat", "dog", "emu"]
    assert fig.layout.yaxis.title.text == "true" and fig.layout.xaxis.title.text == "predicted"
    assert fig.layout.yaxis.autorange == "reversed"
    with pytest.raises(ValueError, match="square"):
        confusion_figure(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="class_names has 2 names, expected 3"):
        confusion_figure(confusion, class_names=["a", "b"])


def test_per_class_figure_bars_from_evaluation_rows():
    per_class = [{"class": c, "tp": 1, "fp": 0, "fn": 0, "tn": 1, "precision": p, "recall": r, "f1": f, "support": 4}
                 for c, p, r, f in ((1, 0.5, 0.25, 1 / 3), (0, 1.0, 0.8, 8 / 9))]
    fig = per_class_figure(per_class)
    assert [t.name for t in fig.data] == ["precision", "recall", "F1"]
    assert all(list(t.x) == ["0", "1"] for t in fig.data)
    np.testing.assert_allclose(fig.data[0].y, [1.0, 0.5])
    np.testing.assert_allclose(fig.data[2].y, [8 / 9, 1 / 3])
    assert fig.layout.barmode == "group"


# --- samples -----------------------------------------------------------------------

def test_samples_figure_puts_mistakes_first():
    rng = np.random.default_rng(4)
    images = rng.random((6, 16))
    labels = np.array([0, 1, 2, 0, 1, 2])
    predictions = np.array([0, 1, 0, 0, 2, 2])  # mistakes at rows 2 and 4
    probabilities = np.full((6, 3), 0.05)
    probabilities[np.arange(6), predictions] = [0.9, 0.8, 0.93, 0.7, 0.61, 0.99]
    fig = samples_figure(images, labels, predictions, probabilities, (4, 4), max_images=4)
    maps = _heatmaps(fig)
    assert [t.name for t in maps] == ["sample 2", "sample 4", "sample 0", "sample 1"]
    np.testing.assert_allclose(np.asarray(maps[0].z), images[2].reshape(4, 4))
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["pred 0 (p=0.93) / true 2", "pred 2 (p=0.61) / true 1",
                      "pred 0 (p=0.90) / true 0", "pred 1 (p=0.80) / true 1"]
    assert [a.font.color for a in fig.layout.annotations] == ["crimson", "crimson", "black", "black"]
    assert "2 mistakes of 4 shown" in fig.layout.title.text

    named = samples_figure(images, labels, predictions, probabilities.max(axis=1), (4, 4, 1),
                           class_names=["a", "b", "c"])
    assert len(_heatmaps(named)) == 6
    assert named.layout.annotations[0].text == "pred a (p=0.93) / true c"


def test_three_channel_samples_are_drawn_in_colour():
    rng = np.random.default_rng(5)
    images = rng.random((3, 4 * 5 * 3))  # (H, W, C) = (4, 5, 3), channels last as dfnet.images gives them
    labels, predictions = np.array([0, 1, 1]), np.array([0, 1, 0])
    fig = samples_figure(images, labels, predictions, np.array([0.9, 0.8, 0.7]), (4, 5, 3))
    pictures = [t for t in fig.data if t.type == "image"]
    assert [t.name for t in pictures] == ["sample 2", "sample 0", "sample 1"]
    expected = np.rint(images[2].reshape(4, 5, 3) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(pictures[0].z), expected)
    assert pictures[0].meta["prediction"] == 0 and pictures[0].meta["label"] == 1
    # four channels are no RGB picture: their mean is drawn as a heatmap
    four = samples_figure(rng.random((2, 2 * 2 * 4)), [0, 1], [0, 1], np.array([0.9, 0.8]), (2, 2, 4))
    assert {t.type for t in four.data} == {"heatmap"}


# --- the report --------------------------------------------------------------------

def test_write_report_embeds_plotly_once_and_one_div_per_figure(tmp_path):
    net, params = _cnn()
    figures = {"Kernels <conv>": kernel_figure(net, params),
               "Confusion": confusion_figure(np.eye(3, dtype=int)),
               "History": history_figure([{"epoch": 1, "loss": 0.5, "accuracy": 0.9}])}
    path = write_report(tmp_path / "out" / "report.html", figures, title="Run & report")
    text = path.read_text(encoding="utf-8")
    assert text.count(plotly.offline.get_plotlyjs()) == 1
    assert len(re.findall(r"\* plotly\.js v\d", text)) == 1
    assert text.count('class="plotly-graph-div"') == 3
    assert "<h2>Kernels &lt;conv&gt;</h2>" in text and "<h1>Run &amp; report</h1>" in text
    assert "<script src=" not in text  # nothing fetched: opens offline
    assert os.listdir(path.parent) == ["report.html"]

    write_report(path, [confusion_figure(np.eye(2, dtype=int))])
    text = path.read_text(encoding="utf-8")
    assert text.count('class="plotly-graph-div"') == 1 and "<h2>Confusion matrix</h2>" in text
    assert os.listdir(path.parent) == ["report.html"]


def test_write_report_failure_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(path, [confusion_figure(np.eye(2, dtype=int))])
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.html"]


# --- the figures of a training run (Spark) -----------------------------------------

RUN_HEADINGS = ["Training history", "Confusion matrix", "Per-class metrics", "Test samples"]


@pytest.fixture(scope="module")
def digits(spark):
    from dfnet.datasets import load_dataframe

    return load_dataframe(spark, "digits", "train"), load_dataframe(spark, "digits", "test")


@pytest.fixture(scope="module")
def mlp(digits):
    """Two epochs of a small MLP, the test split scored after each (val_* in the history)."""
    from dfnet.config import TrainConfig
    from dfnet.train import fit

    train, test = digits
    model = fit(train, TrainConfig(epochs=2, hidden=(16,), batch_size=128), validation_df=test, verbose=False)
    model.class_names = [f"d{i}" for i in range(10)]
    return model


@pytest.fixture(scope="module")
def cnn(digits):
    from dfnet.config import TrainConfig
    from dfnet.train import fit

    train, _ = digits
    return fit(train, TrainConfig(model="cnn", kernels=(4,), hidden=(16,), epochs=2, batch_size=64,
                                  schedule="average"), verbose=False)


@pytest.fixture(scope="module")
def scored(mlp, digits):
    """Every test row with the MLP's prediction and probabilities, in input (id) order: the reference."""
    rows = mlp.predict(digits[1]).orderBy("id").collect()
    return {"image": np.array([r["image"] for r in rows]), "label": np.array([r["label"] for r in rows]),
            "prediction": np.array([r["prediction"] for r in rows]),
            "probability": np.array([r["probability"] for r in rows])}


def test_run_figures_of_an_mlp_and_a_cnn(mlp, cnn, digits):
    _, test = digits
    assert list(run_figures(mlp, test)) == RUN_HEADINGS
    figures = run_figures(cnn, test, max_images=4)
    assert list(figures) == [*RUN_HEADINGS, "Kernels", "Activation maps"]
    assert len(_heatmaps(figures["Kernels"])) == 4
    samples = _heatmaps(figures["Test samples"])
    assert len(samples) == 4 and all(np.asarray(t.z).shape == (8, 8) for t in samples)
    activations = figures["Activation maps"]
    # its input row is the first image of the sample grid, named in the title
    np.testing.assert_allclose(np.asarray(activations.data[0].z), np.asarray(samples[0].z))
    first = samples[0].meta
    assert f"(true {first['label']}, predicted {first['prediction']})" in activations.layout.title.text


def test_history_figure_of_a_run_has_validation_lines_only_when_the_history_does(mlp, digits):
    import dataclasses

    _, test = digits
    evaluation = mlp.evaluate(test)
    assert all({"val_loss", "val_accuracy"} <= set(h) for h in mlp.history)
    history = run_figures(mlp, test, evaluation, max_images=1)["Training history"]
    by = {(t.name, t.xaxis): t for t in history.data}
    assert set(by) == {("train", "x"), ("validation", "x"), ("train", "x2"), ("validation", "x2")}
    np.testing.assert_allclose(by["validation", "x"].y, [h["val_loss"] for h in mlp.history])
    np.testing.assert_allclose(by["validation", "x2"].y, [h["val_accuracy"] for h in mlp.history])
    np.testing.assert_allclose(by["train", "x2"].y, [h["accuracy"] for h in mlp.history])

    train_only = dataclasses.replace(mlp, history=[{k: v for k, v in h.items() if not k.startswith("val_")}
                                                   for h in mlp.history])
    history = run_figures(train_only, test, evaluation, max_images=1)["Training history"]
    assert [t.name for t in history.data] == ["train", "train"]
    assert "Training history" not in run_figures(dataclasses.replace(mlp, history=[]), test, evaluation, max_images=1)


def test_confusion_heatmap_is_the_matrix_of_the_collected_predictions(mlp, digits, scored):
    figures = run_figures(mlp, digits[1], max_images=1)
    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (scored["label"], scored["prediction"]), 1)
    heatmap = figures["Confusion matrix"].data[0]
    np.testing.assert_array_equal(np.asarray(heatmap.z), expected)
    assert list(heatmap.x) == list(heatmap.y) == [f"d{i}" for i in range(10)]
    bars = {t.name: t for t in figures["Per-class metrics"].data}
    tp = np.diag(expected)
    np.testing.assert_allclose(bars["recall"].y, tp / expected.sum(axis=1))
    np.testing.assert_allclose(bars["precision"].y, np.divide(tp, expected.sum(axis=0),
                                                              out=np.zeros(10), where=expected.sum(axis=0) > 0))


def test_samples_are_mistakes_first_with_the_probabilities_predict_gives(mlp, digits, scored):
    wrong = np.flatnonzero(scored["prediction"] != scored["label"])
    right = np.flatnonzero(scored["prediction"] == scored["label"])
    assert 0 < len(wrong) and len(right) >= 3, "two epochs should leave some mistakes and some right answers"
    shown = len(wrong) + 3  # every mistake, then the first three right answers
    expected = np.concatenate([wrong, right[:3]])
    fig = run_figures(mlp, digits[1], max_images=shown)["Test samples"]
    traces = _heatmaps(fig)
    assert len(traces) == shown
    for trace, row in zip(traces, expected):
        meta = trace.meta
        assert (meta["label"], meta["prediction"]) == (scored["label"][row], scored["prediction"][row])
        assert meta["probability"] == pytest.approx(scored["probability"][row][meta["prediction"]], rel=1e-6)
        np.testing.assert_allclose(np.asarray(trace.z), scored["image"][row].reshape(8, 8), rtol=1e-6)
    titles = [a.text for a in fig.layout.annotations]
    row = expected[0]
    assert titles[0] == (f"pred d{scored['prediction'][row]} (p={scored['probability'][row].max():.2f}) "
                         f"/ true d{scored['label'][row]}")
    assert [a.font.color for a in fig.layout.annotations] == ["crimson"] * len(wrong) + ["black"] * 3
    assert fig.layout.title.text.startswith(f"Test samples: {len(wrong)} mistakes of {shown} shown "
                                            f"({len(wrong)} of {len(scored['label'])} test rows)")


def test_sample_predictions_fetches_only_what_it_shows(mlp, digits, scored):
    images, labels, predictions, probabilities = sample_predictions(mlp, digits[1], 5)
    assert images.shape == (5, 64) and probabilities.shape == (5, 10)
    wrong = np.flatnonzero(scored["prediction"] != scored["label"])[:5]
    np.testing.assert_array_equal(labels, scored["label"][wrong])
    np.testing.assert_array_equal(predictions, scored["prediction"][wrong])
    np.testing.assert_allclose(probabilities, scored["probability"][wrong], rtol=1e-6)
    assert [len(a) for a in sample_predictions(mlp, digits[1], 0)] == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="max_rows must be >= 0, got -1"):
        sample_predictions(mlp, digits[1], -1)


def test_trained_model_report_returns_the_figures_and_writes_them(mlp, digits, tmp_path):
    path = tmp_path / "run" / "report.html"
    figures = mlp.report(digits[1], path, max_images=6, title="digits MLP")
    assert list(figures) == RUN_HEADINGS
    text = path.read_text(encoding="utf-8")
    assert text.count('class="plotly-graph-div"') == len(figures)
    assert "<h1>digits MLP</h1>" in text and all(f"<h2>{h}</h2>" in text for h in figures)
    assert list(mlp.report(digits[1], max_images=1)) == RUN_HEADINGS  # no path: nothing written
    assert os.listdir(path.parent) == ["report.html"]
