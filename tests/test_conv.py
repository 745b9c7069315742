"""Convolutional layers: im2col and the direct convolution against naive loops, every
backward pass against central finite differences (float64)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradcheck import assert_close, numeric_grad

from dfnet.nn import (LOSSES, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Sigmoid, Softmax, Tanh,
                      build_cnn, col2im, image_patches, patches_of_image)



def naive_padded(X, kh, kw, padding):
    """Zero padding written out the way TensorFlow documents it."""
    if padding == "valid":
        return X
    pad_h, pad_w = kh - 1, kw - 1  # (out - 1) * stride + k - in, with out = in and stride 1
    Xp = np.zeros((X.shape[0], X.shape[1] + pad_h, X.shape[2] + pad_w, X.shape[3]))
    Xp[:, pad_h // 2:pad_h // 2 + X.shape[1], pad_w // 2:pad_w // 2 + X.shape[2]] = X
    return Xp


def naive_patches(X, kh, kw, padding):
    Xp = naive_padded(X, kh, kw, padding)
    n, Hp, Wp, C = Xp.shape
    out = np.zeros((n, Hp - kh + 1, Wp - kw + 1, kh * kw * C))
    for b in range(n):
        for i in range(Hp - kh + 1):
            for j in range(Wp - kw + 1):
                out[b, i, j] = [Xp[b, i + dy, j + dx, c] for dy in range(kh) for dx in range(kw) for c in range(C)]
    return out


def naive_conv(X, kernel, bias, padding):
    """Direct convolution; ``kernel`` is ``(kh, kw, C, filters)``."""
    kh, kw, C, F = kernel.shape
    Xp = naive_padded(X, kh, kw, padding)
    n, Hp, Wp, _ = Xp.shape
    Y = np.zeros((n, Hp - kh + 1, Wp - kw + 1, F))
    for b in range(n):
        for i in range(Hp - kh + 1):
            for j in range(Wp - kw + 1):
                for f in range(F):
                    total = bias[f]
                    for dy in range(kh):
                        for dx in range(kw):
                            for c in range(C):
                                total += Xp[b, i + dy, j + dx, c] * kernel[dy, dx, c, f]
                    Y[b, i, j, f] = total
    return Y


CASES = [((6, 7, 1), 3, "valid"), ((6, 7, 3), 3, "same"), ((5, 6, 2), (2, 3), "same"),
         ((5, 5, 2), 4, "same"), ((6, 5, 3), (2, 2), "valid"), ((4, 4, 1), 1, "same")]


@pytest.mark.parametrize("image_shape,kernel,padding", CASES)
def test_image_patches_match_naive_loops(image_shape, kernel, padding):
    X = np.random.default_rng(0).standard_normal((2, *image_shape))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    P = image_patches(X, kernel, padding)
    np.testing.assert_array_equal(P, naive_patches(X, kh, kw, padding))
    if padding == "same":
        assert P.shape[1:3] == image_shape[:2]
    flat_rows = X.reshape(2, -1)
    np.testing.assert_array_equal(patches_of_image(flat_rows[1], image_shape, kernel, padding),
                                  P[1].reshape(-1, P.shape[-1]))


@pytest.mark.parametrize("image_shape,kernel,padding", CASES)
def test_col2im_is_the_adjoint_of_image_patches(image_shape, kernel, padding):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, *image_shape))
    dP = rng.standard_normal(image_patches(X, kernel, padding).shape)
    assert np.sum(image_patches(X, kernel, padding) * dP) == pytest.approx(
        np.sum(X * col2im(dP, image_shape, kernel, padding)), rel=1e-12)


def test_patch_counts_of_digits_and_mnist_images():
    assert patches_of_image(np.arange(64.0), (8, 8, 1), 3, "valid").shape == (36, 9)
    mnist = patches_of_image(np.arange(784.0), (28, 28, 1), 5, "valid")
    assert mnist.shape == (576, 25)
    # a flat MNIST row is a row-major 28x28 image: the first patch is its top-left 5x5 corner
    np.testing.assert_array_equal(mnist[0], np.arange(784.0).reshape(28, 28)[:5, :5].ravel())


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("channels,kernel", [(1, 3), (3, (2, 3))])
def test_conv2d_forward_matches_direct_convolution(padding, channels, kernel):
    rng = np.random.default_rng(2)
    layer = Conv2D(channels, 4, kernel, padding)
    K, b = [rng.standard_normal(s) for s in layer.param_shapes]
    X = rng.standard_normal((2, 5, 6, channels))
    Y, _ = layer.forward([K, b], X)
    kh, kw = layer.kernel_size
    np.testing.assert_allclose(Y, naive_conv(X, K.reshape(kh, kw, channels, 4), b, padding), rtol=1e-12, atol=1e-12)
    assert Y.shape[1:] == layer.output_shape(X.shape[1:])


def distinct_values(rng, shape):
    """Inputs whose values differ by at least 0.01, so no max-pool window has a tie."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 0.3


@pytest.mark.parametrize("layer,shape", [
    (Conv2D(1, 2, 3, "valid"), (2, 5, 6, 1)),
    (Conv2D(1, 2, 3, "same"), (2, 5, 6, 1)),
    (Conv2D(3, 2, 3, "valid"), (2, 5, 5, 3)),
    (Conv2D(3, 2, (2, 3), "same"), (2, 5, 6, 3)),
    (MaxPool2D(2), (2, 4, 6, 3)),
    (MaxPool2D(2), (2, 5, 7, 2)),  # odd sizes: the last row and column are dropped
    (MaxPool2D(3, stride=2), (2, 7, 6, 2)),  # overlapping windows
    (MaxPool2D((2, 3), stride=(1, 2)), (1, 4, 7, 2)),
    (Flatten(), (2, 3, 4, 2)),
    (ReLU(), (2, 3, 4, 2)), (Sigmoid(), (2, 3, 4, 2)), (Tanh(), (2, 3, 4, 2)),
], ids=repr)
def test_layer_backward_matches_finite_differences(layer, shape):
    rng = np.random.default_rng(3)
    X = distinct_values(rng, shape)
    if isinstance(layer, ReLU):
        X[np.abs(X) < 1e-3] = 0.5  # keep away from the kink
    params = [p + rng.standard_normal(p.shape) * 0.1 for p in layer.init_params(rng, "xavier", np.dtype("float64"))]
    Y, cache = layer.forward(params, X)
    assert Y.shape[1:] == layer.output_shape(shape[1:])
    weights = rng.standard_normal(Y.shape)  # scalar objective sum(weights * Y)

    def objective():
        return float(np.sum(weights * layer.forward(params, X)[0]))

    dX, grads = layer.backward(params, cache, weights)
    assert_close(dX, numeric_grad(objective, X))
    for p, g, g_only in zip(params, grads, layer.param_grads(params, cache, weights)):
        assert g.shape == p.shape
        assert_close(g, numeric_grad(objective, p))
        np.testing.assert_array_equal(g_only, g)


def test_max_pool_gives_a_tied_window_gradient_to_its_first_maximum_only():
    pool = MaxPool2D(2)
    X = np.array([[1.0, 3.0], [3.0, 3.0]]).reshape(1, 2, 2, 1)
    Y, cache = pool.forward([], X)
    dX, _ = pool.backward([], cache, np.ones((1, 1, 1, 1)))
    assert Y.item() == 3.0
    np.testing.assert_array_equal(dX[0, :, :, 0], [[0.0, 1.0], [0.0, 0.0]])


def small_cnn(loss: str, image_shape=(7, 8, 2)) -> Sequential:
    layers = [Conv2D(image_shape[2], 3, 3, "same"), Sigmoid(), MaxPool2D(2),
              Conv2D(3, 4, (2, 2), "valid"), ReLU(), MaxPool2D(2, stride=1),
              Flatten()]
    shape = image_shape
    for layer in layers:
        shape = layer.output_shape(shape)
    layers += [Dense(int(np.prod(shape)), 5), ReLU(), Dense(5, 3), Softmax() if loss == "cross-entropy" else Sigmoid()]
    return Sequential(layers, LOSSES[loss](), image_shape)


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_cnn_gradient_matches_finite_differences(loss):
    net = small_cnn(loss)
    rng = np.random.default_rng(4)
    params = net.init_params(5, "xavier")
    X, labels = rng.random((3, net.num_features)), rng.integers(0, 3, 3)
    result = net.loss_and_grad(params, X, labels)
    numeric = numeric_grad(lambda: net.loss_and_grad(params, X, labels).loss_sum, params)
    assert_close(result.grad_sum, numeric)
    assert result.count == 3 and net.output_shape == (3,)


def test_built_cnn_with_stacked_same_convolutions_matches_finite_differences():
    net = build_cnn((5, 5, 3), [(2, 3), (2, 3)], padding="same", pool=None, activation="tanh",
                    dense=[4], n_out=3, loss="mse")
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2D", "Tanh", "Conv2D", "Tanh", "Flatten", "Dense", "Tanh", "Dense", "Sigmoid"]
    rng = np.random.default_rng(6)
    params = net.init_params(7, "xavier")
    X, labels = rng.random((2, 75)), rng.integers(0, 3, 2)
    numeric = numeric_grad(lambda: net.loss_and_grad(params, X, labels).loss_sum, params)
    assert_close(net.loss_and_grad(params, X, labels).grad_sum, numeric)


def test_precomputed_patches_give_exactly_the_same_step():
    net = build_cnn((8, 8, 1), [(4, 3), (6, 2)], dense=[10], n_out=10, conv_activation="sigmoid")
    rng = np.random.default_rng(8)
    params = net.init_params(9, "he")
    X, labels = rng.random((6, 64)), rng.integers(0, 10, 6)
    assert net.patch_shape == (6, 6, 9)
    reference = net.loss_and_grad(params, X, labels)
    batched = image_patches(X.reshape(6, 8, 8, 1), 3, "valid")
    per_image = np.stack([patches_of_image(row, (8, 8, 1), 3, "valid") for row in X])  # what a UDF yields
    for patches in (batched, per_image, per_image.reshape(-1, 9)):
        step = net.loss_and_grad(params, None, labels, patches=patches)
        assert step.loss_sum == reference.loss_sum and step.correct == reference.correct and step.count == 6
        np.testing.assert_array_equal(step.grad_sum, reference.grad_sum)
        np.testing.assert_array_equal(net.forward(params, None, patches=patches), net.forward(params, X))


def test_patches_need_a_convolution_first():
    net = build_cnn((6, 6, 1), [], pool=None, n_out=2)  # Flatten first
    with pytest.raises(ValueError, match="needs a Conv2D first layer"):
        net.forward(net.init_params(0), None, patches=np.zeros((1, 36)))


def test_first_layer_skips_the_input_gradient():
    net = build_cnn((6, 6, 1), [(2, 3)], n_out=2)
    params = net.init_params(0)
    views = net.unflatten(params)
    X = np.random.default_rng(0).random((2, 6, 6, 1))
    _, cache = net.layers[0].forward(views[0], X)
    grad = np.zeros(net.num_params)
    assert net.backward_layer(0, views[0], cache, np.ones((2, 4, 4, 2)), grad) is None
    assert np.all(grad[:net.layers[0].patch_size * 2 + 2] != 0)


def test_config_round_trip_rebuilds_the_same_cnn():
    net = build_cnn((9, 8, 2), [(3, (2, 3)), (4, 3)], padding="same", pool=2, dense=[6], n_out=4,
                    activation="tanh", conv_activation="relu", dtype="float32")
    clone = Sequential.from_config(json.loads(net.to_json()))
    assert repr(clone) == repr(net) and clone.to_config() == net.to_config()
    params = net.init_params(1, "uniform")
    X = np.random.default_rng(0).random((3, 144)).astype(np.float32)
    out = clone.forward(params, X)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, net.forward(params, X))


def test_shape_mistakes_are_caught_when_the_network_is_built():
    with pytest.raises(ValueError, match="MaxPool2D"):
        build_cnn((4, 4, 1), [(2, 3), (2, 1)], pool=2, n_out=2)  # the second pool gets a 1x1 image
    with pytest.raises(ValueError, match="kernel larger"):
        build_cnn((4, 4, 1), [(2, 5)], n_out=2)
    with pytest.raises(ValueError, match=r"needs \(H, W, 3\) inputs"):
        Sequential([Conv2D(3, 2, 3)], LOSSES["mse"](), (5, 5, 1))
    with pytest.raises(ValueError, match=r"needs inputs of shape \(10,\)"):
        Sequential([Flatten(), Dense(10, 2)], LOSSES["mse"](), (3, 3, 1))
    with pytest.raises(ValueError, match="padding must be one of"):
        Conv2D(1, 2, 3, "full")
