"""Dropout and weight decay: finite differences with fixed masks, and every engine path and
schedule against an independent numpy replay of its steps (same masks, same decay)."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.engine import make_engine
from dfnet.engine.data import decode_images
from dfnet.engine.patches import PatchRows
from dfnet.errors import ConfigError
from dfnet.nn.layers import Dropout, DropoutNoise
from dfnet.nn.network import build_cnn, build_mlp
from dfnet.optim import make_optimizer
from dfnet.schedules import gradient_steps
from dfnet.train import build_network, fit


@pytest.fixture(scope="module")
def digits_rows():
    images, labels = load_arrays("digits", "train")
    return images[:240], labels[:240]


def finite_difference_check(net, params, noise, X=None, patches=None, labels=None, checks=40, seed=0):
    """Central differences of the summed loss at ``checks`` random coordinates, masks fixed by ``noise``."""
    analytic = net.loss_and_grad(params, X, labels, patches=patches, noise=noise).grad_sum
    rng = np.random.default_rng(seed)
    for i in rng.choice(net.num_params, checks, replace=False):
        h = 1e-6
        up, down = params.copy(), params.copy()
        up[i] += h
        down[i] -= h
        numeric = (net.loss_and_grad(up, X, labels, patches=patches, noise=noise).loss_sum -
                   net.loss_and_grad(down, X, labels, patches=patches, noise=noise).loss_sum) / (2 * h)
        assert numeric == pytest.approx(analytic[i], rel=1e-5, abs=1e-7), i


def test_dropout_gradients_match_finite_differences_with_fixed_masks():
    rng = np.random.default_rng(1)
    X, y = rng.random((12, 20)), rng.integers(0, 4, 12)
    mlp = build_mlp(20, [16, 8], 4, activation="tanh", dropout=0.3)
    assert sum(isinstance(layer, Dropout) for layer in mlp.layers) == 2
    params = mlp.init_params(2, "xavier")
    noise = DropoutNoise(seed=5, epoch=2, step=7, keys=np.arange(100, 112))
    finite_difference_check(mlp, params, noise, X=X, labels=y)
    cnn = build_cnn((6, 6, 1), [(3, 3)], dense=[8], n_out=3, activation="tanh", dropout=0.25)
    assert sum(isinstance(layer, Dropout) for layer in cnn.layers) == 2  # after the conv maps and the dense layer
    finite_difference_check(cnn, cnn.init_params(3, "xavier"), noise.subset(slice(0, 5)),
                            X=rng.random((5, 36)), labels=rng.integers(0, 3, 5))


def test_dropout_masks_are_keyed_by_row_not_by_batch_and_off_without_a_key():
    net = build_mlp(10, [400], 2, dropout=0.4)
    params = net.init_params(0, "he")
    keys = np.arange(50) * 7919
    noise = DropoutNoise(1, 1, 3, keys)
    mask = noise.mask(2, (400,), 0.4, np.float64)
    assert set(np.unique(mask)) == {0.0, 1 / 0.6}
    assert abs((mask == 0).mean() - 0.4) < 0.02  # 20,000 draws
    # The same rows in another batch, in another order, get the same masks.
    np.testing.assert_array_equal(noise.subset([7, 3]).mask(2, (400,), 0.4, np.float64), mask[[7, 3]])
    assert not np.array_equal(DropoutNoise(1, 1, 4, keys).mask(2, (400,), 0.4, np.float64), mask)  # new step
    assert not np.array_equal(noise.mask(4, (400,), 0.4, np.float64), mask)  # another layer
    X = np.random.default_rng(0).random((50, 10))
    np.testing.assert_array_equal(net.forward(params, X),
                                  build_mlp(10, [400], 2).forward(params, X))  # prediction: no dropout


def test_weight_decay_is_decoupled_for_adam_and_l2_for_sgd_and_spares_biases():
    net = build_mlp(3, [2], 2)
    mask = net.decay_mask()
    np.testing.assert_array_equal(mask, [True] * 6 + [False] * 2 + [True] * 4 + [False] * 2)  # W1 b1 W2 b2
    p0 = np.linspace(-1, 1, net.num_params)
    g = np.linspace(0.5, -0.3, net.num_params)
    sgd = p0.copy()
    make_optimizer("sgd", 0.1, weight_decay=0.01, decay_mask=mask).step(sgd, g)
    np.testing.assert_allclose(sgd, p0 - 0.1 * (g + 0.01 * p0 * mask), rtol=1e-15)
    adam, plain = p0.copy(), p0.copy()
    make_optimizer("adam", 0.1, weight_decay=0.01, decay_mask=mask).step(adam, g)
    make_optimizer("adam", 0.1).step(plain, g)
    np.testing.assert_allclose(adam, plain - 0.1 * 0.01 * p0 * mask, rtol=1e-14)  # AdamW: outside the moments


def test_dropout_needs_the_dataframe_engine():
    with pytest.raises(ConfigError, match="dropout=0.2 runs on the dataframe engine"):
        TrainConfig(dropout=0.2, engine="rdd", schedule="minibatch").validate()
    with pytest.raises(ConfigError, match="dropout=1.0: must be < 1"):
        TrainConfig(dropout=1.0).validate()


def _step_inputs(pdf, engine):
    """One step's cached rows as numpy inputs, labels and row keys (whole images for patches)."""
    rows = engine.rows
    if not isinstance(rows, PatchRows):
        return ({"X": decode_images(pdf["_x"], rows.num_features, rows.dtype)}, pdf["_label"].to_numpy(),
                pdf["_row"].to_numpy())
    pdf = pdf.sort_values(["_row", "_pos"])
    P = decode_images(pdf["_x"], rows.row_values, rows.dtype).reshape((-1, *rows.patch_shape))
    every = rows.rows_per_image
    return {"X": None, "patches": P}, pdf["_label"].to_numpy()[::every], pdf["_row"].to_numpy()[::every]


SYNC_CASES = [  # model, patches, schedule, optimizer
    ("mlp", "inline", "minibatch", "adam"),
    ("mlp", "inline", "classic", "momentum"),
    ("cnn", "inline", "minibatch", "sgd"),
    ("cnn", "explode", "minibatch", "adam"),
]


@pytest.mark.parametrize("model,patches,schedule,optimizer", SYNC_CASES)
def test_synchronous_fit_with_dropout_and_weight_decay_equals_a_numpy_replay(spark, digits_rows, model, patches,
                                                                             schedule, optimizer):
    images, labels = digits_rows
    df = to_dataframe(spark, images, labels, max_value=16.0, num_partitions=3)
    config = TrainConfig(model=model, kernels=(3,), hidden=(12,), activation="tanh", optimizer=optimizer, lr=0.02,
                         lr_schedule="constant", epochs=2, schedule=schedule, batch_size=60, dtype="float64", seed=4,
                         patches=patches, partitions=2, dropout=0.3, weight_decay=0.05)
    net = build_network(config, 64, 10)
    start = net.init_params(6, "xavier")
    trained = fit(df, config, network=net, initial_params=start, verbose=False)

    engine = make_engine("dataframe", net, patches=patches)
    data = engine.prepare(df, features_col="image", label_col="label", num_partitions=2)
    try:
        params = start.copy()
        opt = make_optimizer(optimizer, 0.02, weight_decay=0.05, decay_mask=net.decay_mask())
        steps = 0
        for epoch in (1, 2):
            for step, rows in enumerate(gradient_steps(data, config, epoch), start=1):
                pdf = rows.toPandas()
                if len(pdf) == 0:
                    continue
                inputs, y, keys = _step_inputs(pdf, engine)
                result = net.loss_and_grad(params, labels=y, noise=DropoutNoise(4, epoch, step, keys), **inputs)
                opt.step(params, result.grad_sum / result.count)
                steps += 1
    finally:
        data.release()
    assert steps >= 2
    np.testing.assert_allclose(trained.params, params, rtol=1e-9, atol=1e-12)
    # The masks matter: without dropout the same run ends elsewhere.
    plain = fit(df, config.replace(dropout=0.0), network=build_network(config.replace(dropout=0.0), 64, 10),
                initial_params=start, verbose=False)
    assert np.abs(plain.params - trained.params).max() > 1e-4


@pytest.mark.parametrize("schedule,patches", [("auto", "inline"), ("average", "inline"), ("average", "explode")])
def test_model_averaging_with_dropout_and_weight_decay_equals_a_numpy_replay(spark, digits_rows, schedule, patches):
    """auto (one model over the coalesced cache here: 240 rows) and average (a model per partition):
    every task's local steps replayed with the same permutation, masks and decoupled decay."""
    images, labels = digits_rows
    df = to_dataframe(spark, images, labels, max_value=16.0, num_partitions=3)
    model = "cnn" if patches == "explode" else "mlp"
    config = TrainConfig(model=model, kernels=(3,), hidden=(12,), activation="tanh", optimizer="adam", lr=0.01,
                         epochs=2, schedule=schedule, batch_size=16, local_steps=4, dtype="float64", seed=9,
                         patches=patches, partitions=2, dropout=0.25, weight_decay=0.1)
    net = build_network(config, 64, 10)
    start = net.init_params(5, "xavier")
    trained = fit(df, config, network=net, initial_params=start, verbose=False)

    engine = make_engine("dataframe", net, patches=patches)
    shuffle = dict(shuffle_seed=9) if schedule == "auto" else {}
    data = engine.prepare(df, features_col="image", label_col="label", num_partitions=2, **shuffle)
    try:
        pdf = data.frame.withColumn("p", F.spark_partition_id()).toPandas()
    finally:
        data.release()
    if schedule == "auto":  # one model: the coalesced task reads the partitions in order
        assert trained.schedule_plan["models"] == 1
        pdf["p"] = 0
    parts = {p: _step_inputs(g, engine) for p, g in pdf.groupby("p", sort=True)}
    params = start.copy()
    rounds = -(-(-(-max(len(y) for _, y, _ in parts.values()) // 16)) // 4)
    assert trained.history[0]["steps"] == rounds
    mask = net.decay_mask()
    for epoch in (1, 2):
        lr = config.lr_at(epoch)
        for r in range(rounds):
            weighted, used = np.zeros_like(params), 0
            for p, (inputs, y, keys) in parts.items():
                order = np.random.default_rng([9, epoch, p]).permutation(len(y))[r * 64:(r + 1) * 64]
                local, opt = params.copy(), make_optimizer("adam", lr, weight_decay=0.1, decay_mask=mask)
                for s in range(0, len(order), 16):
                    batch = order[s:s + 16]
                    step_inputs = {k: (None if v is None else v[batch]) for k, v in inputs.items()}
                    noise = DropoutNoise(9, epoch, r * 4 + s // 16, keys[batch])
                    step = net.loss_and_grad(local, labels=y[batch], noise=noise, **step_inputs)
                    opt.step(local, step.grad_sum / step.count)
                weighted += local * len(order)
                used += len(order)
            params = weighted / used
    np.testing.assert_allclose(trained.params, params, rtol=1e-9, atol=1e-12)
