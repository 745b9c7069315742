"""Convolutional layers on NHWC image batches, in pure numpy.

Images are ``(n, H, W, C)`` batches, row-major, so a flat ``(n, H*W*C)`` pixel
row reshapes to an image without copying (a flat 784 MNIST row is one
``(28, 28, 1)`` image).

A stride-1 convolution is one matrix product on *patches* (im2col): every
output pixel's ``kh x kw x C`` neighbourhood as one row of ``kh*kw*C`` values,
ordered ``(dy, dx, c)`` row-major. :func:`image_patches` cuts them for a batch,
:func:`patches_of_image` for one flat image row (what a Spark UDF does), and
:func:`col2im` scatter-adds patch gradients back onto the image.

The layers have the surface described in :mod:`dfnet.nn.layers`. A
:class:`Conv2D` also starts from precomputed patches (``forward_patches``), so
the first convolution of a network can be fed patches cut elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .layers import BIASED_INITS, INITIALIZERS, Array, Layer

PADDINGS = ("valid", "same")


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (size, size) if np.isscalar(size) else tuple(size)
    if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def _pads(kernel_size: tuple[int, int], padding: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Zero rows/columns (before, after) added on each spatial axis. "same" puts the
    odd one of an even kernel on the bottom/right, like TensorFlow."""
    if padding == "valid":
        return (0, 0), (0, 0)
    return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size)  # type: ignore[return-value]


def conv_output_hw(image_hw: tuple[int, int], kernel_size: int | Sequence[int], padding: str) -> tuple[int, int]:
    """``(H_out, W_out)`` of a stride-1 convolution of an ``(H, W)`` image."""
    kh, kw = _pair(kernel_size, "kernel_size")
    if _check_padding(padding) == "same":
        return int(image_hw[0]), int(image_hw[1])
    return int(image_hw[0]) - kh + 1, int(image_hw[1]) - kw + 1


def image_patches(X: Array, kernel_size: int | Sequence[int], padding: str = "valid") -> Array:
    """im2col for stride 1: ``(n, H, W, C)`` -> ``(n, H_out, W_out, kh*kw*C)``.

    Patch values are ordered ``(dy, dx, c)`` row-major; "same" zero-pads so the
    output keeps ``H x W``. One copy of the (padded) batch per window position.
    """
    kh, kw = _pair(kernel_size, "kernel_size")
    if X.ndim != 4:
        raise ValueError(f"expected an (n, H, W, C) batch, got shape {X.shape}")
    (top, bottom), (left, right) = _pads((kh, kw), _check_padding(padding))
    if top or bottom or left or right:
        X = np.pad(X, ((0, 0), (top, bottom), (left, right), (0, 0)))
    if X.shape[1] < kh or X.shape[2] < kw:
        raise ValueError(f"kernel {kh}x{kw} is larger than the {padding} image {X.shape[1]}x{X.shape[2]}")
    windows = sliding_window_view(X, (kh, kw), axis=(1, 2))  # (n, Ho, Wo, C, kh, kw), a view
    n, Ho, Wo, C = windows.shape[:4]
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n, Ho, Wo, kh * kw * C)


def patches_of_image(flat_pixels: Array, image_shape: Sequence[int], kernel_size: int | Sequence[int],
                     padding: str = "valid") -> Array:
    """Patches of ONE image given as a flat row of ``H*W*C`` pixels: ``(H_out*W_out, kh*kw*C)``.

    E.g. 8x8x1 with a 3x3 "valid" kernel gives 36 patches of 9 values.
    """
    image = np.asarray(flat_pixels).reshape((1, *image_shape))
    P = image_patches(image, kernel_size, padding)
    return P.reshape(-1, P.shape[-1])


def col2im(dP: Array, image_shape: Sequence[int], kernel_size: int | Sequence[int], padding: str = "valid") -> Array:
    """Adjoint of :func:`image_patches`: ``(n, H_out, W_out, kh*kw*C)`` -> ``(n, H, W, C)``.

    Every patch value is added back onto the pixel it was cut from (one strided
    add per kernel offset), then the padding is cropped off.
    """
    kh, kw = _pair(kernel_size, "kernel_size")
    H, W, C = (int(d) for d in image_shape)
    (top, bottom), (left, right) = _pads((kh, kw), _check_padding(padding))
    n, Ho, Wo, _ = dP.shape
    dP = dP.reshape(n, Ho, Wo, kh, kw, C)
    dX = np.zeros((n, H + top + bottom, W + left + right, C), dtype=dP.dtype)
    for dy in range(kh):
        for dx in range(kw):
            dX[:, dy:dy + Ho, dx:dx + Wo, :] += dP[:, :, :, dy, dx, :]
    return dX[:, top:top + H, left:left + W, :]


class Conv2D(Layer):
    """Stride-1 2-D convolution (cross-correlation, as in every framework) of NHWC images.

    ``Y = patches @ K + b`` with ``K`` of shape ``(kh*kw*in_channels, filters)``
    (rows in the patch order ``(dy, dx, c)``) and ``b`` of shape ``(filters,)``.
    The spatial size is not fixed: it comes from the input.
    """

    kind = "conv2d"
    param_names = ("K", "b")

    def __init__(self, in_channels: int, filters: int, kernel_size: int | Sequence[int], padding: str = "valid"):
        self.in_channels, self.filters = int(in_channels), int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.padding = _check_padding(padding)

    @property
    def patch_size(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1] * self.in_channels

    @property
    def param_shapes(self) -> list[tuple[int, ...]]:
        return [(self.patch_size, self.filters), (self.filters,)]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[2] != self.in_channels:
            raise ValueError(f"{self!r} needs (H, W, {self.in_channels}) inputs, got {tuple(input_shape)}")
        Ho, Wo = conv_output_hw(input_shape[:2], self.kernel_size, self.padding)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{self!r}: kernel larger than the input {tuple(input_shape)}")
        return Ho, Wo, self.filters

    def init_params(self, rng: np.random.Generator, scheme: str, dtype: np.dtype) -> list[Array]:
        K = INITIALIZERS[scheme](rng, self.patch_size, self.filters)
        if scheme in BIASED_INITS:
            b = INITIALIZERS[scheme](rng, 1, self.filters)[0]
        else:
            b = np.zeros(self.filters)
        return [K.astype(dtype), b.astype(dtype)]

    def forward(self, params, X):
        return self.forward_patches(params, image_patches(X, self.kernel_size, self.padding))

    def forward_patches(self, params: list[Array], P: Array) -> tuple[Array, Array]:
        """Forward from patches ``P`` of shape ``(n, H_out, W_out, kh*kw*in_channels)``."""
        K, b = params
        n, Ho, Wo, size = P.shape
        if size != self.patch_size:
            raise ValueError(f"{self!r} needs patches of {self.patch_size} values, got {size}")
        Y = P.reshape(-1, size) @ K + b
        return Y.reshape(n, Ho, Wo, self.filters), P

    def param_grads(self, params, cache, dY):
        dY = dY.reshape(-1, self.filters)
        return [cache.reshape(-1, self.patch_size).T @ dY, dY.sum(axis=0)]

    def backward(self, params, cache, dY):
        K, _ = params
        P = cache
        Ho, Wo = P.shape[1:3]
        if self.padding == "same":
            image_shape = (Ho, Wo, self.in_channels)
        else:
            image_shape = (Ho + self.kernel_size[0] - 1, Wo + self.kernel_size[1] - 1, self.in_channels)
        dP = (dY.reshape(-1, self.filters) @ K.T).reshape(P.shape)
        return (col2im(dP, image_shape, self.kernel_size, self.padding),
                self.param_grads(params, cache, dY))

    def to_config(self) -> dict:
        return {"type": self.kind, "in_channels": self.in_channels, "filters": self.filters,
                "kernel_size": list(self.kernel_size), "padding": self.padding}


class MaxPool2D(Layer):
    """Maximum over ``pool_size`` windows every ``stride`` pixels (default: ``pool_size``).

    Windows that would run past the edge are dropped (floor). The gradient goes to
    the window's maximum; on a tie, only to the first one in row-major order.
    """

    kind = "maxpool2d"

    def __init__(self, pool_size: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None):
        self.pool_size = _pair(pool_size, "pool_size")
        self.stride = self.pool_size if stride is None else _pair(stride, "stride")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] < self.pool_size[0] or input_shape[1] < self.pool_size[1]:
            raise ValueError(f"{self!r} needs (H, W, C) inputs of at least {self.pool_size}, "
                             f"got {tuple(input_shape)}")
        (ph, pw), (sh, sw) = self.pool_size, self.stride
        return (input_shape[0] - ph) // sh + 1, (input_shape[1] - pw) // sw + 1, input_shape[2]

    def forward(self, params, X):
        (ph, pw), (sh, sw) = self.pool_size, self.stride
        # One path for every stride: for non-overlapping windows a reshape of the
        # cropped batch measured no faster (the copy and argmax dominate).
        view = sliding_window_view(X, (ph, pw), axis=(1, 2))[:, ::sh, ::sw]  # (n, Ho, Wo, C, ph, pw)
        windows = view.reshape(*view.shape[:4], ph * pw)
        first_max = windows.argmax(axis=-1)
        Y = np.take_along_axis(windows, first_max[..., None], axis=-1)[..., 0]
        return Y, (X.shape, first_max)

    def backward(self, params, cache, dY):
        (ph, pw), (sh, sw) = self.pool_size, self.stride
        shape, first_max = cache
        Ho, Wo = dY.shape[1:3]
        dX = np.zeros(shape, dtype=dY.dtype)
        zero = dY.dtype.type(0)
        for k in range(ph * pw):
            dy, dx = divmod(k, pw)
            dX[:, dy:dy + sh * Ho:sh, dx:dx + sw * Wo:sw] += np.where(first_max == k, dY, zero)
        return dX, []

    def to_config(self) -> dict:
        return {"type": self.kind, "pool_size": list(self.pool_size), "stride": list(self.stride)}


class Flatten(Layer):
    """``(n, H, W, C)`` (or any ``(n, ...)``) -> ``(n, H*W*C)``, row-major."""

    kind = "flatten"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)

    def forward(self, params, X):
        return X.reshape(X.shape[0], -1), X.shape

    def backward(self, params, cache, dY):
        return dY.reshape(cache), []


CONV_LAYERS: dict[str, type[Layer]] = {"conv2d": Conv2D, "maxpool2d": MaxPool2D, "flatten": Flatten}
