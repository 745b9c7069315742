"""The numpy core: every backward pass against central finite differences (float64)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradcheck import assert_close, numeric_grad

from dfnet.nn import LOSSES, Dense, ReLU, Sequential, Sigmoid, Softmax, Tanh, build_mlp
from dfnet.nn.layers import sigmoid, softmax



@pytest.mark.parametrize("layer", [Dense(5, 3), Sigmoid(), ReLU(), Tanh(), Softmax()], ids=repr)
def test_layer_backward_matches_finite_differences(layer):
    rng = np.random.default_rng(1)
    n_in = 5
    X = rng.standard_normal((4, n_in))
    if isinstance(layer, ReLU):
        X[np.abs(X) < 1e-3] = 0.5  # keep away from the kink where the derivative jumps
    params = layer.init_params(rng, "xavier", np.dtype("float64"))
    params = [p + rng.standard_normal(p.shape) * 0.1 for p in params]
    Y, _ = layer.forward(params, X)
    weights = rng.standard_normal(Y.shape)  # scalar objective sum(weights * Y)

    def objective():
        return float(np.sum(weights * layer.forward(params, X)[0]))

    _, cache = layer.forward(params, X)
    dX, grads = layer.backward(params, cache, weights)
    assert_close(dX, numeric_grad(objective, X))
    for p, g in zip(params, grads):
        assert g.shape == p.shape
        assert_close(g, numeric_grad(objective, p))


@pytest.mark.parametrize("activation,loss", [("sigmoid", "mse"), ("relu", "cross-entropy"),
                                             ("tanh", "cross-entropy"), ("tanh", "mse")])
def test_network_gradient_matches_finite_differences(activation, loss):
    net = build_mlp(6, [5, 4], 3, activation=activation, loss=loss)
    rng = np.random.default_rng(2)
    params = net.init_params(3, "xavier")
    X, labels = rng.random((7, 6)), rng.integers(0, 3, 7)
    result = net.loss_and_grad(params, X, labels)
    numeric = numeric_grad(lambda: net.loss_and_grad(params, X, labels).loss_sum, params)
    assert_close(result.grad_sum, numeric)
    assert result.count == 7


def test_losses_are_sums_an_independent_formula_agrees():
    rng = np.random.default_rng(4)
    logits, labels = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ce, p, _ = LOSSES["cross-entropy"]().from_logits(logits, labels)
    assert ce == pytest.approx(-np.log(probs[np.arange(6), labels]).sum(), rel=1e-12)
    np.testing.assert_allclose(p, probs, rtol=1e-12)
    mse, _ = LOSSES["mse"]().value_and_grad(probs, labels)
    assert mse == pytest.approx(0.5 * sum(((probs[i] - np.eye(4)[labels[i]]) ** 2).sum() for i in range(6)))


def test_flat_vector_round_trips_through_views():
    net = build_mlp(4, [3], 2)
    params = net.init_params(0, "he")
    assert params.shape == (4 * 3 + 3 + 3 * 2 + 2,) == (net.num_params,)
    views = net.unflatten(params)
    views[0][0][0, 0] = 42.0  # views share memory with the flat vector
    assert params[0] == 42.0
    with pytest.raises(ValueError, match="flat parameter vector of 23"):
        net.unflatten(np.zeros(5))


def test_initialisations_have_their_documented_ranges():
    net = build_mlp(784, [64], 2, activation="sigmoid", loss="mse")
    classic = net.init_params(0, "classic")
    assert classic.min() >= 0 and classic.max() < 0.5 and classic.mean() == pytest.approx(0.25, abs=0.01)
    centred = net.init_params(0, "uniform")
    assert centred.min() >= -0.25 and centred.max() < 0.25 and abs(centred.mean()) < 0.01
    he = net.init_params(0, "he")
    W = net.unflatten(he)[0][0]
    assert W.std() == pytest.approx(np.sqrt(2 / 784), rel=0.05)
    assert np.all(net.unflatten(he)[0][1] == 0)


def test_float32_network_keeps_float32_and_agrees_with_float64():
    net64 = build_mlp(10, [8], 3, dtype="float64")
    net32 = build_mlp(10, [8], 3, dtype="float32")
    params = net64.init_params(5, "xavier")
    rng = np.random.default_rng(6)
    X, y = rng.random((20, 10)), rng.integers(0, 3, 20)
    r64 = net64.loss_and_grad(params, X, y)
    r32 = net32.loss_and_grad(params.astype(np.float32), X.astype(np.float32), y)
    assert r32.grad_sum.dtype == np.float32 and net32.forward(params.astype(np.float32), X).dtype == np.float32
    np.testing.assert_allclose(r32.grad_sum, r64.grad_sum, rtol=1e-3, atol=1e-5)


def test_activations_are_stable_for_huge_inputs():
    x = np.array([[-1e4, -800.0, 0.0, 800.0, 1e4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sigmoid(x)
        p = softmax(x)
        loss, _, _ = LOSSES["cross-entropy"]().from_logits(x, np.array([0]))
    assert np.all(np.isfinite(s)) and s[0, 0] == 0.0 and s[0, -1] == 1.0
    assert np.all(np.isfinite(p)) and p[0, -1] == pytest.approx(1.0)
    assert np.isfinite(loss) and loss == pytest.approx(2e4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("big", [1e4, 1e30])
def test_activations_and_losses_raise_no_floating_point_error_on_huge_inputs(dtype, big):
    """Under np.errstate(all="raise") and warnings-as-errors, not even an underflow is reported:
    exp of a huge negative number is 0, the correct limit, and every result is finite."""
    x = np.array([[-big, -1.0, 0.0, 1.0, big], [big, -big, 0.0, -big, big]], dtype=dtype)
    labels = np.array([0, 1])
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sigmoid(x)
        p = softmax(x)
        loss, probs, grad = LOSSES["cross-entropy"]().from_logits(x, labels)
        mse, mse_grad = LOSSES["mse"]().value_and_grad(s, labels)
        net = build_mlp(5, [4], 2, activation="sigmoid", dtype=dtype)
        out = net.forward(net.init_params(0, "xavier"), x)  # hidden sigmoids saturate, output softmax
    for array in (s, p, probs, grad, mse_grad, out):
        assert array.dtype == np.dtype(dtype) and np.all(np.isfinite(array))
    assert (s[0, 0], s[0, -1]) == (0.0, 1.0)
    np.testing.assert_array_equal(p[0], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(p[1], [0.5, 0, 0, 0, 0.5])
    # 2 big per row, and log 2 for the tie in row 1
    assert np.isfinite(loss) and loss == pytest.approx(4 * big + np.log(2), rel=1e-6)
    assert np.isfinite(mse)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_on_probabilities_of_exactly_zero_is_finite(dtype):
    """A probability of exactly 0 for the true class (a softmax that underflowed) gives a large,
    finite loss and gradient, not inf: the floor is the dtype's smallest normal number."""
    probs = np.array([[0.0, 1.0], [1.0, 0.0], [0.25, 0.75]], dtype=dtype)
    labels = np.array([0, 1, 1])
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = LOSSES["cross-entropy"]().value_and_grad(probs, labels)
    tiny = np.finfo(dtype).tiny
    assert np.isfinite(loss) and loss == pytest.approx(-2 * np.log(tiny) - np.log(0.75), rel=1e-6)
    assert grad.dtype == np.dtype(dtype) and np.all(np.isfinite(grad))
    assert grad[0, 0] == pytest.approx(-1 / tiny, rel=1e-6) and grad[2, 1] == pytest.approx(-4 / 3)


def test_config_round_trip_rebuilds_the_same_function():
    net = build_mlp(6, [5], 3, activation="tanh")
    clone = Sequential.from_config(net.to_config())
    params = net.init_params(1)
    X = np.random.default_rng(0).random((3, 6))
    np.testing.assert_array_equal(clone.forward(params, X), net.forward(params, X))
    assert "Dense(n_in=6, n_out=5)" in repr(clone)
