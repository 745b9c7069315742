"""Layers on whole batches, in pure numpy.

Every layer has the same small surface:

- ``param_shapes`` : shapes of its parameter arrays (empty for activations),
- ``forward(params, X) -> (Y, cache)`` on a batch ``X`` of shape ``(n, ...)``,
- ``backward(params, cache, dY) -> (dX, grads)`` where ``grads`` are the
  gradients of the *summed* loss with respect to each parameter array,
- ``param_grads(params, cache, dY) -> grads`` without ``dX``, for a network's
  first layer (nobody needs the gradient with respect to the data),
- ``to_config()`` / ``repr``.

Parameters are views into one flat vector owned by :class:`~dfnet.nn.network.Sequential`,
so a layer never allocates or keeps weights itself. Convolutional layers live in
:mod:`dfnet.nn.conv`; the registry of all layer types (``LAYERS``,
``layer_from_config``) in :mod:`dfnet.nn.network`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

Array = np.ndarray


class Layer:
    """Base layer: no parameters, identity shape."""

    kind: ClassVar[str] = "layer"
    param_names: ClassVar[tuple[str, ...]] = ()

    @property
    def param_shapes(self) -> list[tuple[int, ...]]:
        return []

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one example's output given one example's input shape."""
        return input_shape

    def init_params(self, rng: np.random.Generator, scheme: str, dtype: np.dtype) -> list[Array]:
        return []

    def forward(self, params: list[Array], X: Array) -> tuple[Array, Any]:
        raise NotImplementedError

    def backward(self, params: list[Array], cache: Any, dY: Array) -> tuple[Array, list[Array]]:
        raise NotImplementedError

    def param_grads(self, params: list[Array], cache: Any, dY: Array) -> list[Array]:
        """The parameter gradients of ``backward`` alone; layers override it to skip ``dX``."""
        return self.backward(params, cache, dY)[1]

    def to_config(self) -> dict:
        return {"type": self.kind}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer ``Y = X @ W + b`` with ``W`` of shape ``(n_in, n_out)``."""

    kind = "dense"
    param_names = ("W", "b")

    def __init__(self, n_in: int, n_out: int):
        self.n_in, self.n_out = int(n_in), int(n_out)

    @property
    def param_shapes(self) -> list[tuple[int, ...]]:
        return [(self.n_in, self.n_out), (self.n_out,)]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.n_in,):
            raise ValueError(f"{self!r} needs inputs of shape ({self.n_in},), got {tuple(input_shape)}")
        return (self.n_out,)

    def init_params(self, rng: np.random.Generator, scheme: str, dtype: np.dtype) -> list[Array]:
        W = INITIALIZERS[scheme](rng, self.n_in, self.n_out)
        if scheme in BIASED_INITS:
            b = INITIALIZERS[scheme](rng, 1, self.n_out)[0]
        else:
            b = np.zeros(self.n_out)
        return [W.astype(dtype), b.astype(dtype)]

    def forward(self, params, X):
        W, b = params
        return X @ W + b, X

    def backward(self, params, cache, dY):
        W, _ = params
        return dY @ W.T, self.param_grads(params, cache, dY)

    def param_grads(self, params, cache, dY):
        X = cache
        return [X.T @ dY, dY.sum(axis=0)]

    def to_config(self) -> dict:
        return {"type": self.kind, "n_in": self.n_in, "n_out": self.n_out}


class Sigmoid(Layer):
    """Logistic function, computed without overflow for large ``|x|``."""

    kind = "sigmoid"

    def forward(self, params, X):
        Y = sigmoid(X)
        return Y, Y

    def backward(self, params, cache, dY):
        Y = cache
        return dY * Y * (1.0 - Y), []


class ReLU(Layer):
    kind = "relu"

    def forward(self, params, X):
        mask = X > 0
        return X * mask, mask

    def backward(self, params, cache, dY):
        return dY * cache, []


class Tanh(Layer):
    kind = "tanh"

    def forward(self, params, X):
        Y = np.tanh(X)
        return Y, Y

    def backward(self, params, cache, dY):
        return dY * (1.0 - cache * cache), []


class Softmax(Layer):
    """Softmax over the last axis (shifted by the row maximum, so it never overflows)."""

    kind = "softmax"

    def forward(self, params, X):
        Y = softmax(X)
        return Y, Y

    def backward(self, params, cache, dY):
        # Jacobian-vector product of softmax; the cross-entropy loss skips this
        # (see Sequential.loss_and_grad) because p - y is exact and cheaper.
        S = cache
        return S * (dY - np.sum(dY * S, axis=-1, keepdims=True)), []


def sigmoid(X: Array) -> Array:
    """Numerically stable logistic function: no overflow and no floating-point warning for any
    finite input (``exp`` only ever sees ``-|x|``; its underflow to 0 for ``|x|`` beyond ~88 in
    float32 or ~745 in float64 is the correct limit, so it is not reported)."""
    out = np.empty_like(X)
    pos = X >= 0
    with np.errstate(under="ignore"):
        out[pos] = 1.0 / (1.0 + np.exp(-X[pos]))
        ex = np.exp(X[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def softmax(X: Array) -> Array:
    """Softmax over the last axis, shifted by the row maximum so ``exp`` never overflows; the
    terms that underflow to 0 are the correct limit, so the underflow is not reported."""
    Z = X - X.max(axis=-1, keepdims=True)
    with np.errstate(under="ignore"):
        np.exp(Z, out=Z)
    Z /= Z.sum(axis=-1, keepdims=True)
    return Z


# --- initialisation -------------------------------------------------------------

def _classic(rng, n_in, n_out):
    # The classic write-up: every weight uniform in [0, 0.5), all positive.
    return rng.random((n_in, n_out)) * 0.5


def _uniform(rng, n_in, n_out):
    # The centred twin of the classic scheme: uniform in [-0.25, 0.25).
    return (rng.random((n_in, n_out)) - 0.5) * 0.5


def _xavier(rng, n_in, n_out):
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, (n_in, n_out))


def _he(rng, n_in, n_out):
    return rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)


INITIALIZERS = {"classic": _classic, "uniform": _uniform, "xavier": _xavier, "he": _he}
#: Schemes that draw the biases like the weights (the classic write-up does);
#: the others start biases at zero.
BIASED_INITS = frozenset({"classic", "uniform"})

ACTIVATIONS: dict[str, type[Layer]] = {"sigmoid": Sigmoid, "relu": ReLU, "tanh": Tanh, "softmax": Softmax}


class Dropout(Layer):
    """Inverted dropout: in training each value is kept with probability ``1 - rate`` and scaled
    by ``1 / (1 - rate)``; at prediction (no mask given) it is the identity.

    Its masks are not drawn from a generator but computed from a key (see
    :func:`dropout_keep`), so every engine, batching and schedule that sees the
    same ``(seed, epoch, step, row key)`` applies the same mask, and a replay
    or a resumed run is bit-identical.
    """

    kind = "dropout"

    def __init__(self, rate: float):
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def forward(self, params, X, mask: Array | None = None):
        if mask is None:
            return X, None
        return X * mask, mask

    def backward(self, params, cache, dY):
        return (dY if cache is None else dY * cache), []

    def to_config(self) -> dict:
        return {"type": self.kind, "rate": self.rate}



_MIX1, _MIX2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: Array) -> Array:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic): a counter-based hash."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


class DropoutNoise:
    """The key of one training step's dropout masks: ``(seed, epoch, step)`` and the batch's row keys.

    ``mask(layer, shape, rate, dtype)`` gives layer ``layer``'s keep mask for the
    batch, ``(n, *shape)``, scaled by ``1 / (1 - rate)``; unit ``u`` of row ``r``
    is kept when ``hash(seed, epoch, step, layer, key[r], u)`` mapped to
    [0, 1) is at least ``rate``.
    """

    def __init__(self, seed: int, epoch: int, step: int, keys: Array):
        head = np.array([seed, epoch, step], dtype=np.uint64)
        z = np.uint64(0x6466_6E65_7444_524F)  # "dfnetDRO"
        with np.errstate(over="ignore"):
            for value in head:
                z = _splitmix64(np.array([z ^ value], dtype=np.uint64))[0]
        self.head = z
        self.keys = np.asarray(keys, dtype=np.int64).view(np.uint64)

    def subset(self, rows) -> "DropoutNoise":
        """The same step's key for a slice or index array of the batch's rows."""
        other = object.__new__(DropoutNoise)
        other.head, other.keys = self.head, self.keys[rows]
        return other

    def mask(self, layer: int, shape: tuple[int, ...], rate: float, dtype) -> Array:
        units = int(np.prod(shape))
        with np.errstate(over="ignore"):
            row = _splitmix64(_splitmix64(self.keys ^ self.head) ^ np.uint64(layer))
            z = _splitmix64(row[:, None] ^ (np.arange(units, dtype=np.uint64) * _GOLDEN)[None, :])
        uniform = (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        keep = (uniform >= rate).astype(dtype)
        keep *= np.asarray(1.0 / (1.0 - rate), dtype=dtype)
        return keep.reshape((len(self.keys), *shape))
