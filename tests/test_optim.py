"""Optimizers against hand-written update formulas, on quadratics, and through checkpoints."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from dfnet.optim import SGD, Adam, Momentum, make_optimizer

START = np.array([0.5, -1.25, 2.0, 0.0, -0.3])


def gradient_sequence(steps: int = 6) -> list[np.ndarray]:
    """A fixed, varied sequence of gradients (signs flip, magnitudes span 1e-3 .. 1e1)."""
    rng = np.random.default_rng(42)
    return [rng.standard_normal(5) * 10.0 ** rng.integers(-3, 2, size=5) for _ in range(steps)]


# --- independent references: one scalar at a time, plain Python floats ------------------

def reference_sgd(p0, grads, lr):
    p = [float(v) for v in p0]
    for g in grads:
        p = [pi - lr * gi for pi, gi in zip(p, g)]
    return np.array(p)


def reference_momentum(p0, grads, lr, mu):
    p, vel = [float(v) for v in p0], [0.0] * len(p0)
    for g in grads:
        vel = [mu * vi - lr * gi for vi, gi in zip(vel, g)]
        p = [pi + vi for pi, vi in zip(p, vel)]
    return np.array(p)


def reference_adam(p0, grads, lr, b1, b2, eps=1e-8):
    """Algorithm 1 of Kingma & Ba (2015), written out per coordinate."""
    p, m, v = [float(x) for x in p0], [0.0] * len(p0), [0.0] * len(p0)
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi ** 2
            m_hat = m[i] / (1 - b1 ** t)
            v_hat = v[i] / (1 - b2 ** t)
            p[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return np.array(p)


CASES = {
    "sgd": (lambda: SGD(0.1), lambda p, g: reference_sgd(p, g, 0.1)),
    "momentum": (lambda: Momentum(0.05, 0.8), lambda p, g: reference_momentum(p, g, 0.05, 0.8)),
    "adam": (lambda: Adam(0.01, 0.85, 0.99), lambda p, g: reference_adam(p, g, 0.01, 0.85, 0.99)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("steps", [1, 2, 6])
def test_updates_match_hand_written_formulas(name, steps):
    make, reference = CASES[name]
    grads = gradient_sequence(steps)
    params = START.copy()
    optimizer = make()
    for g in grads:
        optimizer.step(params, g)
    np.testing.assert_allclose(params, reference(START, grads), rtol=1e-12, atol=1e-15)
    assert optimizer.steps == steps


@pytest.mark.parametrize("name", list(CASES))
def test_step_updates_in_place_and_keeps_float32(name):
    make, reference = CASES[name]
    grads = gradient_sequence(4)
    params = START.astype(np.float32)
    buffer = params  # the engine keeps this very array; a step must not rebind it
    optimizer = make()
    for g in grads:
        optimizer.step(params, g)
    assert params is buffer and params.dtype == np.float32
    assert not np.array_equal(params, START.astype(np.float32))
    # float32 rounding of each step's result, not float64 accuracy
    np.testing.assert_allclose(params, reference(START, grads), rtol=1e-5, atol=1e-6)


def test_adam_first_step_moves_each_coordinate_by_lr_against_the_gradient_sign():
    # After bias correction, step 1 is lr * g / (|g| + eps): a textbook property of Adam.
    g = np.array([3.0, -0.002, 50.0, -7.0, 1e-3])
    params = START.copy()
    Adam(0.01).step(params, g)
    np.testing.assert_allclose(START - params, 0.01 * np.sign(g) * np.abs(g) / (np.abs(g) + 1e-8), rtol=1e-9)


# --- minimising a quadratic -------------------------------------------------------------

CURVATURE = np.array([1.0, 4.0, 0.5, 2.0, 8.0])
MINIMUM = np.array([3.0, -2.0, 0.5, 1.0, -4.0])


def quadratic(p):
    return 0.5 * float(np.sum(CURVATURE * (p - MINIMUM) ** 2))


@pytest.mark.parametrize("make, steps, tol", [
    (lambda: SGD(0.1), 400, 1e-6),
    (lambda: Momentum(0.05, 0.9), 400, 1e-6),
    (lambda: Adam(0.05), 2000, 1e-3),
], ids=["sgd", "momentum", "adam"])
def test_minimises_a_quadratic(make, steps, tol):
    optimizer = make()
    params = np.zeros(5)
    start_value = quadratic(params)
    for _ in range(steps):
        optimizer.step(params, CURVATURE * (params - MINIMUM))
    assert quadratic(params) < 1e-6 * start_value
    np.testing.assert_allclose(params, MINIMUM, atol=tol)


# --- checkpoints ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_taken_mid_run_resumes_to_identical_results(name):
    """Checkpoint after 3 steps, let the original run go on, then resume the checkpoint elsewhere.

    The checkpoint must be a snapshot: steps taken after ``state_dict()`` must not change it.
    """
    make, _ = CASES[name]
    grads = gradient_sequence(7)
    params = START.copy()
    original = make()
    for g in grads[:3]:
        original.step(params, g)
    checkpoint, params_at_checkpoint = original.state_dict(), params.copy()
    for g in grads[3:]:
        original.step(params, g)

    resumed = make()
    resumed.load_state_dict(checkpoint)
    resumed_params = params_at_checkpoint.copy()
    for g in grads[3:]:
        resumed.step(resumed_params, g)
    np.testing.assert_array_equal(resumed_params, params)
    assert resumed.steps == original.steps == 7


@pytest.mark.parametrize("name", list(CASES))
def test_two_optimizers_loaded_from_one_checkpoint_are_independent(name):
    make, _ = CASES[name]
    grads = gradient_sequence(5)
    params = START.copy()
    first = make()
    for g in grads[:2]:
        first.step(params, g)
    checkpoint = first.state_dict()
    a, b = make(), make()
    a.load_state_dict(checkpoint)
    b.load_state_dict(checkpoint)
    pa, pb = params.copy(), params.copy()
    for g in grads[2:]:
        a.step(pa, g)  # runs a to the end first: b must not see a's updates
    for g in grads[2:]:
        b.step(pb, g)
    np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize("name", list(CASES))
def test_checkpoint_written_to_disk_resumes_to_identical_results(name, tmp_path):
    make, reference = CASES[name]
    grads = gradient_sequence(6)
    params = START.copy()
    optimizer = make()
    for g in grads[:2]:
        optimizer.step(params, g)
    state = copy.deepcopy(optimizer.state_dict())
    np.savez(tmp_path / "ckpt.npz", params=params,
             **{k: (np.array([]) if v is None else np.asarray(v)) for k, v in state.items()})

    with np.load(tmp_path / "ckpt.npz") as saved:
        restored = {k: saved[k] for k in saved.files if k != "params"}
        resumed_params = saved["params"].copy()
    restored["steps"] = int(restored["steps"])
    resumed = make()
    resumed.load_state_dict(restored)
    for g in grads[2:]:
        resumed.step(resumed_params, g)
    np.testing.assert_allclose(resumed_params, reference(START, grads), rtol=1e-12, atol=1e-15)


def test_state_dict_before_any_step_resumes_like_a_fresh_optimizer():
    grads = gradient_sequence(3)
    for name, (make, reference) in CASES.items():
        resumed = make()
        resumed.load_state_dict(make().state_dict())
        params = START.copy()
        for g in grads:
            resumed.step(params, g)
        np.testing.assert_allclose(params, reference(START, grads), rtol=1e-12, atol=1e-15, err_msg=name)


# --- the factory ------------------------------------------------------------------------

def test_make_optimizer_builds_each_kind_with_its_hyperparameters():
    sgd = make_optimizer("sgd", 0.3)
    momentum = make_optimizer("momentum", 0.2, momentum=0.7)
    adam = make_optimizer("adam", 0.01, beta1=0.8, beta2=0.95)
    assert type(sgd) is SGD and sgd.lr == 0.3
    assert type(momentum) is Momentum and (momentum.lr, momentum.momentum) == (0.2, 0.7)
    assert type(adam) is Adam and (adam.lr, adam.beta1, adam.beta2) == (0.01, 0.8, 0.95)


def test_make_optimizer_rejects_an_unknown_name_and_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"'rmsprop'.*sgd, momentum, adam"):
        make_optimizer("rmsprop", 0.1)
