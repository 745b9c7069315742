"""Plotly figures of a network and its results, and a self-contained HTML report.

Every ``*_figure`` function is pure: numpy arrays and plain Python objects in,
a new ``go.Figure`` out, no Spark, no files. What they show:

- :func:`kernel_figure`: the learned kernels of one Conv2D layer,
- :func:`activation_figure`: one image's feature maps, layer by layer,
- :func:`history_figure`: loss and accuracy per epoch (train, validation),
- :func:`confusion_figure`, :func:`per_class_figure`: the test-set figures of
  :class:`~dfnet.evaluate.Evaluation`,
- :func:`samples_figure`: test images with their predictions, mistakes first.

:func:`run_figures` computes all of them for a trained model and a test
DataFrame (the only function here that runs Spark: the evaluation, and a
bounded sample of predictions, mistakes first). :func:`write_report` puts any
of them into ONE HTML file that opens offline: plotly.js is embedded once in
the head, each figure is a ``<div>``. ``TrainedModel.report`` does both.

Images are drawn as heatmaps with the y axis reversed (row 0 at the top, so
images are upright) and x and y scaled 1:1.

>>> from dfnet.nn import build_cnn
>>> net = build_cnn((8, 8, 1), [(4, 3)], n_out=10)
>>> params = net.init_params(0)
>>> len(kernel_figure(net, params).data)
4
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import plotly.offline
from plotly.subplots import make_subplots

from .files import write_atomically
from .nn.conv import Conv2D
from .nn.layers import ACTIVATIONS, Layer
from .nn.network import Sequential

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from .evaluate import Evaluation
    from .model import TrainedModel

PIXEL_SCALE = "gray"  # black (low) to white (high), as MNIST is usually shown
KERNEL_SCALE = "RdBu_r"  # diverging: negative blue, 0 white, positive red
MAP_SCALE = "Viridis"


# --- helpers -----------------------------------------------------------------------

def _grid(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding ``n`` cells, at most ``max_cols`` wide."""
    cols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    return max(1, math.ceil(n / cols)), cols


def _spacing(rows: int, cols: int) -> dict:
    # Gaps as a share of the figure, shrinking with the grid so that make_subplots
    # (which needs gap * (n - 1) < 1) accepts any size and titles keep their room.
    return {"horizontal_spacing": min(0.03, 0.2 / cols), "vertical_spacing": min(0.1, 0.35 / rows)}


def _image_axes(fig: go.Figure) -> go.Figure:
    """Make every subplot an image: row 0 on top, square pixels, no ticks or grid."""
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.for_each_yaxis(lambda ax: ax.update(autorange="reversed", scaleanchor=ax.anchor, scaleratio=1,
                                            showticklabels=False, showgrid=False, zeroline=False,
                                            constrain="domain"))
    return fig.update_layout(plot_bgcolor="white")


def _conv_layer(network: Sequential, layer: int) -> Conv2D:
    if not -len(network.layers) <= layer < len(network.layers):
        raise ValueError(f"layer={layer} is out of range: the network has {len(network.layers)} layers")
    found = network.layers[layer]
    if not isinstance(found, Conv2D):
        convs = [i for i, x in enumerate(network.layers) if isinstance(x, Conv2D)]
        # A ValueError, not a TypeError: the argument is the index, and its value is what is wrong.
        raise ValueError(f"layer={layer} is {found!r}, not a Conv2D; the Conv2D layers are at {convs}")  # noqa: TRY004
    return found


def _as_record(record) -> dict:
    """An EpochRecord (or any dataclass) or a mapping as a plain dict."""
    if is_dataclass(record):
        return asdict(record)
    if isinstance(record, Mapping):
        return dict(record)
    raise TypeError(f"history entries must be EpochRecord or dict, got {type(record).__name__}")


def _names(k: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    if len(class_names) != k:
        raise ValueError(f"class_names has {len(class_names)} names, expected {k}")
    return [str(c) for c in class_names]


# --- the network -------------------------------------------------------------------

def kernel_figure(network: Sequential, params: np.ndarray, layer: int = 0, *,
                  channel: int | str = 0, max_cols: int = 8) -> go.Figure:
    """The kernels of the Conv2D ``network.layers[layer]`` as a grid of heatmaps.

    Kernel ``f`` (titled "kernel f+1") is column ``f`` of the layer's ``K``
    (shape ``(kh*kw*C, filters)``, rows in ``(dy, dx, c)`` order) reshaped to
    ``(kh, kw, C)``; with ``C > 1`` input channels it shows input ``channel``
    (an index, default 0) or ``channel="mean"``, the mean over channels.
    All kernels share one diverging colour scale centred on 0.

    Raises ValueError when the layer is not a Conv2D or ``channel`` is invalid.
    """
    conv = _conv_layer(network, layer)
    K = np.asarray(network.unflatten(params)[layer][0], dtype=np.float64)
    kh, kw = conv.kernel_size
    C = conv.in_channels
    kernels = K.reshape(kh, kw, C, conv.filters)
    if channel == "mean":
        shown, what = kernels.mean(axis=2), f", mean of {C} input channels"
    elif isinstance(channel, (int, np.integer)) and 0 <= channel < C:
        shown, what = kernels[:, :, channel], (f", input channel {channel} of {C}" if C > 1 else "")
    else:
        raise ValueError(f"channel must be 'mean' or an index in 0..{C - 1}, got {channel!r}")
    limit = float(np.abs(shown).max()) or 1.0
    rows, cols = _grid(conv.filters, max_cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"kernel {f + 1}" for f in range(conv.filters)],
                        **_spacing(rows, cols))
    for f in range(conv.filters):
        fig.add_trace(go.Heatmap(z=shown[:, :, f], coloraxis="coloraxis",
                                 hovertemplate="dy %{y}, dx %{x}: %{z:.4f}<extra></extra>"),
                      row=f // cols + 1, col=f % cols + 1)
    fig.update_layout(title=f"Layer {layer} {type(conv).__name__} kernels ({kh}x{kw}{what})",
                      coloraxis={"colorscale": KERNEL_SCALE, "cmin": -limit, "cmax": limit, "cmid": 0},
                      height=140 + 130 * rows, width=max(420, 110 * cols + 150))
    return _image_axes(fig)


def activation_maps(network: Sequential, params: np.ndarray,
                    image: np.ndarray) -> list[tuple[int, Layer, np.ndarray]]:
    """One image's outputs of every layer up to the first whose output is not a
    ``(1, H, W, C)`` map (the Flatten): ``[(layer index, layer, (H, W, C) map), ...]``.

    ``image``: ``H*W*C`` pixels, flat or shaped ``network.input_shape``. Pure numpy,
    the layers' own ``forward`` run one by one.
    """
    if len(network.input_shape) != 3:
        raise ValueError(f"activation maps need an image network, input_shape (H, W, C); "
                         f"this one takes {network.input_shape}")
    pixels = np.asarray(image, dtype=network.dtype)
    if pixels.size != network.num_features:
        raise ValueError(f"image has {pixels.size} values, the network takes {network.num_features} "
                         f"{network.input_shape}")
    X = pixels.reshape((1, *network.input_shape))
    maps = []
    for i, (layer, p) in enumerate(zip(network.layers, network.unflatten(params))):
        X, _ = layer.forward(p, X)
        if X.ndim != 4:
            break
        maps.append((i, layer, X[0]))
    return maps


def _default_layers(network: Sequential, maps: list[tuple[int, Layer, np.ndarray]]) -> list[int]:
    # A Conv2D's raw output is skipped when an activation follows: the activated map is the one that flows on.
    layers = network.layers
    return [i for i, layer, _ in maps
            if not (isinstance(layer, Conv2D) and i + 1 < len(layers) and layers[i + 1].kind in ACTIVATIONS)]


def activation_figure(network: Sequential, params: np.ndarray, image: np.ndarray, *,
                      layers: Sequence[int] | None = None, max_maps: int = 16) -> go.Figure:
    """One image and its feature maps: a row for the input, then a row per shown layer output.

    ``layers``: indices into ``network.layers`` whose outputs to show; by default
    every ``(H, W, C)`` output before the Flatten except a Conv2D's output that
    an activation follows (so: after each conv activation, after each pooling).
    Each row shows up to ``max_maps`` channels, one heatmap each, on one colour
    scale per row; the input is in grey.
    """
    maps = activation_maps(network, params, image)
    by_index = {i: (layer, Y) for i, layer, Y in maps}
    chosen = _default_layers(network, maps) if layers is None else list(layers)
    for i in chosen:
        if i not in by_index:
            raise ValueError(f"layer {i} has no image-shaped output; choose among {sorted(by_index)}")
    pixels = np.asarray(image, dtype=np.float64).reshape(network.input_shape)
    rows = [("input", pixels, PIXEL_SCALE)]
    rows += [(f"{i}: {type(by_index[i][0]).__name__}", by_index[i][1], MAP_SCALE) for i in chosen]
    cols = min(max_maps, max(Y.shape[2] for _, Y, _ in rows))
    titles = [f"{'channel' if r == 0 else 'map'} {c + 1}" if c < Y.shape[2] else ""
              for r, (_, Y, _) in enumerate(rows) for c in range(cols)]
    fig = make_subplots(rows=len(rows), cols=cols, subplot_titles=titles,
                        **_spacing(len(rows), cols))
    for r, (name, Y, scale) in enumerate(rows, start=1):
        low, high = float(Y.min()), float(Y.max())
        for c in range(min(cols, Y.shape[2])):
            fig.add_trace(go.Heatmap(z=Y[:, :, c], colorscale=scale, zmin=low, zmax=high, showscale=False,
                                     hovertemplate=f"{name} #{c + 1} (%{{y}}, %{{x}}): %{{z:.4f}}<extra></extra>"),
                          row=r, col=c + 1)
        fig.update_yaxes(title_text=name, row=r, col=1)
    fig.update_layout(title="Activation maps", height=120 + 140 * len(rows), width=max(500, 100 * cols + 120))
    return _image_axes(fig)


# --- training and evaluation -------------------------------------------------------

def history_figure(history: Sequence) -> go.Figure:
    """Loss and accuracy per epoch, two subplots; validation lines when the history has them.

    ``history``: EpochRecord objects or dicts with ``epoch``, ``loss``, ``accuracy``
    and optionally ``val_loss``, ``val_accuracy`` (``TrainedModel.history``).
    With early stopping (``best_epoch`` in the records) a dotted line marks the
    best epoch, whose weights the model keeps.
    """
    records = [_as_record(r) for r in history]
    epochs = [r["epoch"] for r in records]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Loss", "Accuracy"])
    for col, key in ((1, "loss"), (2, "accuracy")):
        # One colour per series in both subplots, so the single legend names both lines.
        for prefix, name, dash, color in (("", "train", "solid", "#636efa"), ("val_", "validation", "dash", "#ef553b")):
            values = [r.get(prefix + key) for r in records]
            if all(v is None for v in values):
                continue
            fig.add_trace(go.Scatter(x=epochs, y=values, name=name, legendgroup=name, showlegend=col == 1,
                                     mode="lines+markers", line={"dash": dash, "color": color}), row=1, col=col)
    best = records[-1].get("best_epoch") if records else None
    if best is not None:
        for col in (1, 2):
            fig.add_vline(x=best, line={"dash": "dot", "color": "#00a86b"}, row=1, col=col)
        fig.add_annotation(x=best, y=1.0, yref="paper", text=f"best epoch {best}", showarrow=False,
                           xanchor="left", font={"color": "#00a86b"})
    fig.update_xaxes(title_text="epoch", dtick=1 if len(epochs) <= 20 else None)
    return fig.update_layout(title="Training history", height=420)


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> go.Figure:
    """The confusion matrix as an annotated heatmap: true class on y (top to bottom),
    predicted class on x; ``confusion[i, j]`` counts rows of class i predicted as j."""
    z = np.asarray(confusion)
    if z.ndim != 2 or z.shape[0] != z.shape[1]:
        raise ValueError(f"confusion must be a square (k, k) matrix, got shape {z.shape}")
    names = _names(z.shape[0], class_names)
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, text=z, texttemplate="%{text}", colorscale="Blues",
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_xaxes(title_text="predicted", type="category", side="top")
    fig.update_yaxes(title_text="true", type="category", autorange="reversed", scaleanchor="x")
    side = 200 + 40 * len(names)
    return fig.update_layout(title="Confusion matrix", height=side, width=side + 100)


def per_class_figure(per_class: Sequence[Mapping], class_names: Sequence[str] | None = None) -> go.Figure:
    """Precision, recall and F1 per class as grouped bars.

    ``per_class``: :attr:`Evaluation.per_class`, one dict per class with keys
    ``class``, ``precision``, ``recall``, ``f1`` (and ``support``).
    """
    rows = sorted(per_class, key=lambda c: c["class"])
    names = [class_names[c["class"]] if class_names else str(c["class"]) for c in rows]
    support = [c.get("support") for c in rows]
    fig = go.Figure([go.Bar(x=names, y=[c[key] for c in rows], name=label, customdata=support,
                            hovertemplate=f"class %{{x}}: {label} %{{y:.4f}} (support %{{customdata}})<extra></extra>")
                     for key, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1"))])
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(range=[0, 1.05])
    return fig.update_layout(title="Per-class metrics", barmode="group", height=420)


def samples_figure(images: np.ndarray, labels: Sequence[int], predictions: Sequence[int],
                   probabilities: np.ndarray, image_shape: Sequence[int], max_images: int = 25,
                   class_names: Sequence[str] | None = None, *, max_cols: int = 5) -> go.Figure:
    """A grid of up to ``max_images`` images titled "pred k (p=0.93) / true j".

    Mistakes come first, then correct predictions, each group in input order;
    mistake titles are red. Each image's trace carries its exact numbers in
    ``meta``: ``row`` (index into ``images``), ``label``, ``prediction`` and
    ``probability`` (of the predicted class). ``images``: ``(n, H*W*C)`` pixels (or any shape with
    n first); ``probabilities``: ``(n, k)`` class probabilities, or ``(n,)`` the
    probability of the predicted class; ``image_shape``: ``(H, W)`` or
    ``(H, W, C)``: three-channel images are drawn in colour (RGB, pixels in
    [0, 1]), one-channel images as heatmaps, other channel counts as their
    channel mean.
    """
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    n = labels.shape[0]
    pixels = np.asarray(images, dtype=np.float64).reshape(n, *image_shape)
    colour = pixels.ndim == 4 and pixels.shape[3] == 3
    if pixels.ndim == 4 and not colour:
        pixels = pixels.mean(axis=3)
    probs = np.asarray(probabilities, dtype=np.float64)
    p_pred = probs[np.arange(n), predictions] if probs.ndim == 2 else probs.reshape(n)
    wrong = predictions != labels
    order = np.concatenate([np.flatnonzero(wrong), np.flatnonzero(~wrong)])[:max_images]
    name = (lambda c: str(class_names[c])) if class_names is not None else str
    titles = [f"pred {name(predictions[i])} (p={p_pred[i]:.2f}) / true {name(labels[i])}" for i in order]
    rows, cols = _grid(len(order), max_cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles or None,
                        **_spacing(rows, cols))
    low, high = (float(pixels.min()), float(pixels.max())) if n else (0.0, 1.0)
    for k, i in enumerate(order):
        meta = {"row": int(i), "label": int(labels[i]), "prediction": int(predictions[i]),
                "probability": float(p_pred[i])}
        if colour:
            trace = go.Image(z=np.clip(np.rint(pixels[i] * 255.0), 0, 255).astype(np.uint8), name=f"sample {i}",
                             hovertemplate=f"{titles[k]}<br>(%{{y}}, %{{x}}): %{{z}}<extra></extra>", meta=meta)
        else:
            trace = go.Heatmap(z=pixels[i], colorscale=PIXEL_SCALE, zmin=low, zmax=high, showscale=False,
                               name=f"sample {i}", hovertemplate=f"{titles[k]}<br>(%{{y}}, %{{x}}): "
                                                                 "%{z:.3f}<extra></extra>", meta=meta)
        fig.add_trace(trace, row=k // cols + 1, col=k % cols + 1)
    for annotation, i in zip(fig.layout.annotations, order):
        annotation.font = {"size": 11, "color": "crimson" if wrong[i] else "black"}
    fig.update_layout(title=f"Samples: {int(wrong[order].sum())} mistakes of {len(order)} shown "
                            f"({int(wrong.sum())} of {n} in all)", height=120 + 180 * rows, width=200 * cols + 80)
    return _image_axes(fig)


# --- one training run --------------------------------------------------------------

def _image_shape(model: "TrainedModel") -> tuple[int, ...]:
    """How to draw one input of ``model``: its (H, W, C), the config's image shape, a
    square, or else one row of pixels."""
    shape = model.network.input_shape
    if len(shape) == 3:
        return shape
    n = model.network.num_features
    if model.config is not None and model.config.image_shape is not None \
            and math.prod(model.config.image_shape) == n:
        return tuple(model.config.image_shape)
    side = math.isqrt(n)
    return (side, side) if side * side == n else (1, n)


def sample_predictions(model: "TrainedModel", df: "DataFrame", max_rows: int = 25, *, features_col: str = "image",
                       label_col: str = "label") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``max_rows`` rows of ``df`` with the model's predictions, mistakes first.

    One Spark job (after ``model.predict``'s validation): a top-k over
    (correct?, input position), so each partition sends at most ``max_rows``
    rows to the driver and the whole of ``df`` never is. Within each group the
    rows keep their input order. Returns ``(images (n, num_features) float64,
    labels (n,) int64, predictions (n,) int64, probabilities (n, k) float64)``.
    """
    from pyspark.sql import functions as F

    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    k = model.num_classes
    empty = (np.zeros((0, model.network.num_features)), np.zeros(0, np.int64), np.zeros(0, np.int64),
             np.zeros((0, k)))
    if max_rows == 0:
        return empty
    scored = model.predict(df.select(features_col, label_col), features_col=features_col,
                           prediction_col="__dfnet_prediction", probability_col="__dfnet_probability")
    label = F.col(label_col).cast("int")
    rows = (scored.select(F.col(features_col).alias("image"), label.alias("label"),
                          F.col("__dfnet_prediction").alias("prediction"),
                          F.col("__dfnet_probability").alias("probability"),
                          (F.col("__dfnet_prediction") == label).alias("correct"),
                          F.monotonically_increasing_id().alias("position"))
            .orderBy("correct", "position").limit(max_rows).collect())
    if not rows:
        return empty
    return (np.array([r["image"] for r in rows], dtype=np.float64),
            np.array([r["label"] for r in rows], dtype=np.int64),
            np.array([r["prediction"] for r in rows], dtype=np.int64),
            np.array([r["probability"] for r in rows], dtype=np.float64))


def run_figures(model: "TrainedModel", test_df: "DataFrame", evaluation: "Evaluation | None" = None, *,
                features_col: str = "image", label_col: str = "label",
                max_images: int = 25) -> dict[str, go.Figure]:
    """Every figure of one training run, in report order, keyed by heading.

    Parameters
    ----------
    model : a :class:`~dfnet.model.TrainedModel` (its ``history`` and
        ``class_names`` are used when present).
    test_df : labelled rows (``features_col``, ``label_col``) to evaluate on.
    evaluation : ``model.evaluate(test_df)`` if already computed; computed
        here (two small Spark jobs) when None.
    max_images : images in the sample grid; only these rows reach the driver.

    Returns
    -------
    ``{heading: figure}``, in this order (stable headings, details in each
    figure's title):

    - ``"Training history"``: loss and accuracy per epoch, train and, when the
      history has ``val_*``, validation lines (left out when there is no history),
    - ``"Confusion matrix"``, ``"Per-class metrics"``: precision, recall, F1,
    - ``"Test samples"``: up to ``max_images`` test images with predicted class
      and probability, mistakes first (see :func:`sample_predictions`),
    - for a network with a Conv2D: ``"Kernels"`` of the first Conv2D and
      ``"Activation maps"`` of the first image in the sample grid.

    Pass the result to :func:`write_report` for one offline HTML file, or show
    any figure in a notebook.
    """
    if evaluation is None:
        evaluation = model.evaluate(test_df, features_col=features_col, label_col=label_col)
    names = evaluation.class_names or model.class_names
    names = list(names) if names else None
    figures: dict[str, go.Figure] = {}
    if model.history:
        figures["Training history"] = history_figure(model.history)
    figures["Confusion matrix"] = confusion_figure(evaluation.confusion, names)
    figures["Per-class metrics"] = per_class_figure(evaluation.per_class, names)
    images, labels, predictions, probabilities = sample_predictions(
        model, test_df, max_images, features_col=features_col, label_col=label_col)
    samples = samples_figure(images, labels, predictions, probabilities, _image_shape(model),
                             max_images=max_images, class_names=names)
    # samples_figure only sees the fetched rows; the evaluation knows the whole test set.
    mistakes = evaluation.count - int(np.trace(evaluation.confusion))
    samples.update_layout(title=f"Test samples: {int((labels != predictions).sum())} mistakes of {len(labels)} "
                                f"shown ({mistakes} of {evaluation.count} test rows), mistakes first")
    figures["Test samples"] = samples
    convs = [i for i, layer in enumerate(model.network.layers) if isinstance(layer, Conv2D)]
    if convs:
        figures["Kernels"] = kernel_figure(model.network, model.params, convs[0])
        if len(images):
            name = (lambda c: str(names[c])) if names else str
            fig = activation_figure(model.network, model.params, images[0])
            fig.update_layout(title=f"Activation maps of the first sample (true {name(labels[0])}, "
                                    f"predicted {name(predictions[0])})")
            figures["Activation maps"] = fig
    return figures


# --- the report --------------------------------------------------------------------

def write_report(path: str | os.PathLike, figures: Mapping[str, go.Figure] | Sequence[go.Figure], *,
                 title: str = "dfnet report") -> Path:
    """Write ONE self-contained HTML file with a heading and a ``<div>`` per figure.

    ``figures``: ``{heading: figure}``, or a list (headed by each figure's title).
    plotly.js is embedded once in the head, so the file opens offline (~5 MB).
    Written to a temporary sibling and renamed into place: a failure never leaves a
    half-written report. Returns the path.
    """
    path = Path(path)
    items = (list(figures.items()) if isinstance(figures, Mapping)
             else [(fig.layout.title.text or f"Figure {i + 1}", fig) for i, fig in enumerate(figures)])
    sections = [f"<section>\n<h2>{html.escape(str(heading))}</h2>\n"
                f"{fig.to_html(full_html=False, include_plotlyjs=False, default_height=fig.layout.height or 450)}"
                f"\n</section>" for heading, fig in items]
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n"
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>\n'
            "<style>body { font-family: sans-serif; margin: 2em; } section { margin-bottom: 2em; }</style>\n"
            f"</head>\n<body>\n<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body>\n</html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: f.write(page.encode("utf-8")))
    return path
