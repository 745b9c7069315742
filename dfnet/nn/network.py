"""Sequential networks whose parameters and gradients are each ONE flat vector.

The flat vector is what travels through Spark (one array column, one
broadcast), so every engine calls the same two functions here:
``forward(params, X)`` and ``loss_and_grad(params, X, labels)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .layers import ACTIVATIONS, INITIALIZERS, Dense, Layer, Softmax, layer_from_config
from .losses import LOSSES, Loss


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
    input_shape : shape of one example as the first layer sees it, e.g. ``(784,)``.
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

    def forward(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Network output for a batch ``X`` of shape ``(n, num_features)``: ``(n, num_classes)``."""
        out = self._as_batch(X)
        for layer, p in zip(self.layers, self.unflatten(params)):
            out, _ = layer.forward(p, out)
        return out

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, labels: np.ndarray) -> LossAndGrad:
        """Summed loss, summed gradient (flat), and correct count on a batch.

        ``X`` has shape ``(n, num_features)``; ``labels`` are class indices ``(n,)``.
        """
        views = self.unflatten(params)
        out = self._as_batch(X)
        caches = []
        for layer, p in zip(self.body, views):
            out, cache = layer.forward(p, out)
            caches.append(cache)
        labels = np.asarray(labels, dtype=np.int64)
        loss, probs, delta = self.head(out, labels)
        grad = np.empty(self.num_params, dtype=self.dtype)
        for i in reversed(range(len(self.body))):
            delta = self.backward_layer(i, views[i], caches[i], delta, grad)
        correct = int(np.sum(np.argmax(probs, axis=1) == labels))
        return LossAndGrad(loss, grad, correct, int(X.shape[0]))

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
                       grad: np.ndarray) -> np.ndarray:
        """Backward through layer ``i``: write its parameter gradients into the flat ``grad``,
        return the gradient with respect to its input."""
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


def build_mlp(n_in: int, hidden: Sequence[int], n_out: int, *, activation: str = "relu",
              loss: str = "cross-entropy", output: str | None = None, dtype: str = "float64") -> Sequential:
    """A multilayer perceptron ``n_in -> hidden... -> n_out``.

    ``output`` is the final activation; by default softmax for cross-entropy and
    sigmoid for MSE (the classic network).
    """
    if activation not in ACTIVATIONS or activation == "softmax":
        raise ValueError(f"unknown hidden activation {activation!r}; known: sigmoid, relu, tanh")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {sorted(LOSSES)}")
    output = output or ("softmax" if loss == "cross-entropy" else "sigmoid")
    if loss == "cross-entropy" and output != "softmax":
        raise ValueError("cross-entropy needs a softmax output layer")
    layers: list[Layer] = []
    sizes = [n_in, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [Dense(a, b), ACTIVATIONS[activation]()]
    layers += [Dense(sizes[-1], n_out), ACTIVATIONS[output]()]
    return Sequential(layers, LOSSES[loss](), (n_in,), dtype)
