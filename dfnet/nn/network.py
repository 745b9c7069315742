"""Sequential networks whose parameters and gradients are each ONE flat vector.

The flat vector is what travels through Spark (one array column, one
broadcast), so every engine calls the same two functions here:
``forward(params, X)`` and ``loss_and_grad(params, X, labels)``. A network
whose first layer is a :class:`~dfnet.nn.conv.Conv2D` also takes that layer's
patches precomputed (``patches=``), e.g. cut by a Spark UDF.

``LAYERS`` here is the registry of every layer type, dense and convolutional,
that ``layer_from_config`` and ``Sequential.from_config`` rebuild.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .conv import CONV_LAYERS, Conv2D, Flatten, MaxPool2D
from .layers import ACTIVATIONS, INITIALIZERS, Dense, Dropout, DropoutNoise, Layer, Softmax
from .losses import LOSSES, Loss

LAYERS: dict[str, type[Layer]] = {"dense": Dense, "dropout": Dropout, **ACTIVATIONS, **CONV_LAYERS}
#: Parameter arrays that weight decay shrinks (weights and kernels; never biases).
DECAYED_PARAMS = frozenset({"W", "K"})


def layer_from_config(config: dict) -> Layer:
    """Rebuild a layer from the dict produced by ``to_config``."""
    config = dict(config)
    kind = config.pop("type")
    if kind not in LAYERS:
        raise ValueError(f"unknown layer type {kind!r}; known: {sorted(LAYERS)}")
    return LAYERS[kind](**config)


@dataclass(frozen=True)
class LossAndGrad:
    """Sums over a batch: what one partition contributes to a step."""

    loss_sum: float
    grad_sum: np.ndarray  # flat, same length and dtype as the parameters
    correct: int
    count: int


class Sequential:
    """A stack of layers trained with one loss.

    Parameters
    ----------
    layers : list of Layer
    loss : Loss
    input_shape : shape of one example as the first layer sees it, e.g. ``(784,)``
        for an MLP, ``(28, 28, 1)`` (H, W, C) for a CNN.
    dtype : float32 or float64, the dtype of parameters and activations.
    """

    def __init__(self, layers: Sequence[Layer], loss: Loss, input_shape: tuple[int, ...],
                 dtype: str | np.dtype = "float64"):
        self.layers = list(layers)
        self.loss = loss
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self._slices: list[list[tuple[slice, tuple[int, ...]]]] = []
        offset = 0
        for layer in self.layers:
            entries = []
            for shape in layer.param_shapes:
                size = int(np.prod(shape))
                entries.append((slice(offset, offset + size), shape))
                offset += size
            self._slices.append(entries)
        self.num_params = offset
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        self.output_shape = shape
        first = self.layers[0] if self.layers else None
        #: One example's patches for a first Conv2D, ``(H_out, W_out, kh*kw*C)``, else None.
        self.patch_shape = (first.output_shape(self.input_shape)[:2] + (first.patch_size,)
                            if isinstance(first, Conv2D) else None)

    # --- parameters ----------------------------------------------------------------
    @property
    def num_features(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.output_shape))

    def unflatten(self, params: np.ndarray) -> list[list[np.ndarray]]:
        """Per-layer lists of views into the flat vector (no copies)."""
        if params.shape != (self.num_params,):
            raise ValueError(f"expected a flat parameter vector of {self.num_params} values, got shape {params.shape}")
        return [[params[s].reshape(shape) for s, shape in entries] for entries in self._slices]

    def decay_mask(self) -> np.ndarray:
        """A flat boolean vector, True where weight decay applies (:data:`DECAYED_PARAMS`)."""
        mask = np.zeros(self.num_params, dtype=bool)
        for layer, entries in zip(self.layers, self._slices):
            for name, (s, _) in zip(layer.param_names, entries):
                mask[s] = name in DECAYED_PARAMS
        return mask

    @property
    def has_dropout(self) -> bool:
        return any(isinstance(layer, Dropout) for layer in self.layers)

    def init_params(self, seed: int | np.random.Generator = 0, scheme: str = "xavier") -> np.ndarray:
        """A new flat parameter vector drawn with an initialisation scheme."""
        if scheme not in INITIALIZERS:
            raise ValueError(f"unknown init {scheme!r}; known: {sorted(INITIALIZERS)}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        parts = [p.ravel() for layer in self.layers for p in layer.init_params(rng, scheme, self.dtype)]
        return np.concatenate(parts).astype(self.dtype) if parts else np.zeros(0, self.dtype)

    # --- computation ---------------------------------------------------------------
    def _as_batch(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=self.dtype).reshape((X.shape[0],) + self.input_shape)

    def _first_forward(self, layer_params: list[np.ndarray], X: np.ndarray | None,
                       patches: np.ndarray | None) -> tuple[np.ndarray, object]:
        """Forward through layer 0, from ``X`` or from the first Conv2D's patches."""
        if patches is None:
            return self.layers[0].forward(layer_params, self._as_batch(X))
        if self.patch_shape is None:
            raise ValueError(f"patches= needs a Conv2D first layer, not {self.layers[0]!r}")
        P = np.asarray(patches, dtype=self.dtype).reshape((-1,) + self.patch_shape)
        return self.layers[0].forward_patches(layer_params, P)

    def forward(self, params: np.ndarray, X: np.ndarray | None, *, patches: np.ndarray | None = None) -> np.ndarray:
        """Network output for a batch ``X`` of shape ``(n, num_features)``: ``(n, num_classes)``.

        ``patches`` (``X`` is then ignored and may be None): the first Conv2D's
        patches in any row-major layout of ``(n, *patch_shape)``, e.g. the
        ``(H_out*W_out, kh*kw*C)`` blocks of :func:`~dfnet.nn.conv.patches_of_image`
        stacked per image.
        """
        views = self.unflatten(params)
        out, _ = self._first_forward(views[0], X, patches)
        for layer, p in zip(self.layers[1:], views[1:]):
            out, _ = layer.forward(p, out)
        return out

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray | None, labels: np.ndarray, *,
                      patches: np.ndarray | None = None, noise: DropoutNoise | None = None) -> LossAndGrad:
        """Summed loss, summed gradient (flat), and correct count on a batch.

        ``X`` has shape ``(n, num_features)``; ``labels`` are class indices ``(n,)``;
        ``patches`` as in :meth:`forward`. ``noise`` keys the training masks of
        the :class:`~dfnet.nn.layers.Dropout` layers (one row key per example);
        without it dropout is off, as at prediction.
        """
        views = self.unflatten(params)
        out, cache = self._first_forward(views[0], X, patches)
        caches = [cache]
        for i, (layer, p) in enumerate(zip(self.body[1:], views[1:]), start=1):
            if isinstance(layer, Dropout) and noise is not None and layer.rate > 0:
                out, cache = layer.forward(p, out, noise.mask(i, out.shape[1:], layer.rate, out.dtype))
            else:
                out, cache = layer.forward(p, out)
            caches.append(cache)
        labels = np.asarray(labels, dtype=np.int64)
        loss, probs, delta = self.head(out, labels)
        grad = np.empty(self.num_params, dtype=self.dtype)
        for i in reversed(range(len(self.body))):
            delta = self.backward_layer(i, views[i], caches[i], delta, grad)
        correct = int(np.sum(np.argmax(probs, axis=1) == labels))
        return LossAndGrad(loss, grad, correct, int(labels.shape[0]))

    # The three pieces of loss_and_grad, public so that an engine can run them
    # one record and one layer at a time (the classic RDD design).
    @property
    def body(self) -> list[Layer]:
        """The layers whose forward pass runs before the loss: all of them, except a final
        Softmax that the cross-entropy loss fuses (its gradient p - y is exact)."""
        fused = self.loss.fuses_softmax and isinstance(self.layers[-1], Softmax)
        return self.layers[:-1] if fused else self.layers

    def head(self, out: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Summed loss, class probabilities and d(loss)/d(out) for the body's output."""
        if len(self.body) < len(self.layers):
            return self.loss.from_logits(out, labels)
        loss, delta = self.loss.value_and_grad(out, labels)
        return loss, out, delta

    def backward_layer(self, i: int, layer_params: list[np.ndarray], cache, delta: np.ndarray,
                       grad: np.ndarray) -> np.ndarray | None:
        """Backward through layer ``i``: write its parameter gradients into the flat ``grad``,
        return the gradient with respect to its input (None for layer 0: the
        gradient with respect to the data is never used, so it is not computed)."""
        if i == 0:
            delta, grads = None, self.layers[0].param_grads(layer_params, cache, delta)
        else:
            delta, grads = self.layers[i].backward(layer_params, cache, delta)
        for (s, _), g in zip(self._slices[i], grads):
            grad[s] = g.ravel()
        return delta

    # --- description ---------------------------------------------------------------
    def to_config(self) -> dict:
        return {"input_shape": list(self.input_shape), "dtype": self.dtype.name, "loss": self.loss.name,
                "layers": [layer.to_config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        return cls([layer_from_config(c) for c in config["layers"]], LOSSES[config["loss"]](),
                   tuple(config["input_shape"]), config.get("dtype", "float64"))

    def to_json(self) -> str:
        return json.dumps(self.to_config())

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner},\n  loss={self.loss!r}, params={self.num_params})"


def _check_activation(name: str, parameter: str) -> str:
    if name not in ACTIVATIONS or name == "softmax":
        raise ValueError(f"unknown {parameter} {name!r}; known: sigmoid, relu, tanh")
    return name


def _dense_tail(n_in: int, hidden: Sequence[int], n_out: int, activation: str, loss: str,
                output: str | None, dropout: float = 0.0) -> list[Layer]:
    """Dense layers ``n_in -> hidden... -> n_out``, each hidden one followed by
    ``activation``, the last by ``output`` (default: softmax for cross-entropy,
    sigmoid for MSE, the classic network)."""
    _check_activation(activation, "hidden activation")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {sorted(LOSSES)}")
    output = output or ("softmax" if loss == "cross-entropy" else "sigmoid")
    if loss == "cross-entropy" and output != "softmax":
        raise ValueError("cross-entropy needs a softmax output layer")
    layers: list[Layer] = []
    sizes = [n_in, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [Dense(a, b), ACTIVATIONS[activation]()] + ([Dropout(dropout)] if dropout else [])
    return layers + [Dense(sizes[-1], n_out), ACTIVATIONS[output]()]


def build_mlp(n_in: int, hidden: Sequence[int], n_out: int, *, activation: str = "relu",
              loss: str = "cross-entropy", output: str | None = None, dtype: str = "float64",
              dropout: float = 0.0) -> Sequential:
    """A multilayer perceptron ``n_in -> hidden... -> n_out``.

    ``output`` is the final activation; by default softmax for cross-entropy and
    sigmoid for MSE (the classic network). ``dropout`` > 0 puts a
    :class:`~dfnet.nn.layers.Dropout` of that rate after each hidden activation.
    """
    layers = _dense_tail(n_in, hidden, n_out, activation, loss, output, dropout)
    return Sequential(layers, LOSSES[loss](), (n_in,), dtype)


def build_cnn(input_shape: Sequence[int], conv: Sequence[tuple[int, int | Sequence[int]]], *, n_out: int,
              dense: Sequence[int] = (), activation: str = "relu", conv_activation: str | None = None,
              padding: str = "valid", pool: int | None = 2, loss: str = "cross-entropy",
              output: str | None = None, dtype: str = "float64", dropout: float = 0.0) -> Sequential:
    """A convolutional network on ``(H, W, C)`` images.

    Each ``(filters, kernel_size)`` in ``conv`` is a block Conv2D ->
    ``conv_activation`` (default: ``activation``) -> MaxPool2D(``pool``) (no
    pooling when ``pool`` is None); then Flatten and the dense tail of
    :func:`build_mlp`: ``dense`` hidden sizes with ``activation``, then
    ``n_out`` outputs. ``dropout`` > 0 adds a Dropout after every hidden
    activation, the convolutions' included (before their pooling).

    >>> build_cnn((28, 28, 1), [(8, 5), (16, 3)], dense=[32], n_out=10).output_shape
    (10,)
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape}")
    conv_activation = _check_activation(conv_activation or activation, "conv activation")
    layers: list[Layer] = []
    shape = input_shape
    for filters, kernel_size in conv:
        block = [Conv2D(shape[2], filters, kernel_size, padding), ACTIVATIONS[conv_activation]()]
        if dropout:
            block.append(Dropout(dropout))
        if pool is not None:
            block.append(MaxPool2D(pool))
        for layer in block:
            shape = layer.output_shape(shape)
        layers += block
    layers.append(Flatten())
    layers += _dense_tail(int(np.prod(shape)), dense, n_out, activation, loss, output, dropout)
    return Sequential(layers, LOSSES[loss](), input_shape, dtype)
