"""TrainConfig: every constraint names the parameter and the bad value; dict round trips."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from dfnet.config import CONSTRAINTS, DEFAULT_LR, HIDDEN_ACTIVATIONS, PRESETS, TrainConfig, field_help
from dfnet.errors import ConfigError
from dfnet.nn.layers import ACTIVATIONS
from dfnet.optim import Adam

# (field, bad value, words the message must contain besides the field and the value)
BAD_VALUES = [
    # one of a set: the message lists the allowed options
    ("model", "resnet", ["must be one of", "'mlp'", "'cnn'"]),
    ("activation", "softplus", ["must be one of", "'sigmoid'", "'relu'", "'tanh'"]),
    ("loss", "hinge", ["must be one of", "'mse'", "'cross-entropy'"]),
    ("init", "zeros", ["must be one of", "'auto'", "'he'", "'xavier'", "'classic'"]),
    ("optimizer", "rmsprop", ["must be one of", "'sgd'", "'momentum'", "'adam'"]),
    ("schedule", "online", ["must be one of", "'classic'", "'minibatch'"]),
    ("dtype", "float16", ["must be one of", "'float32'", "'float64'"]),
    ("aggregate", "reduce", ["must be one of", "'agg'", "'collect'"]),
    # layer sizes
    ("hidden", (64, 0), ["positive layer sizes"]),
    ("hidden", (64, -3), ["positive layer sizes"]),
    ("hidden", (8.5,), ["positive layer sizes"]),
    ("hidden", (True,), ["positive layer sizes"]),
    ("hidden", "64", ["positive layer sizes"]),
    # open lower bound
    ("lr", 0.0, ["must be > 0"]),
    ("lr", -1.0, ["must be > 0"]),
    ("lr", float("nan"), ["NaN"]),
    ("lr", "0.1", ["must be a number"]),
    ("sample", 0.0, ["must be > 0"]),
    # closed ranges
    ("sample", 1.5, ["must be <= 1"]),
    ("sample", float("nan"), ["NaN"]),
    ("momentum", 1.5, ["must be < 1"]),
    ("momentum", -0.1, ["must be >= 0"]),
    ("beta1", -0.5, ["must be >= 0"]),
    ("beta2", 2.0, ["must be < 1"]),
    # integers
    ("epochs", 0, ["must be >= 1"]),
    ("epochs", 2.5, ["must be an integer"]),
    ("epochs", True, ["must be an integer"]),
    ("batch_size", 0, ["must be >= 1"]),
    ("batch_size", 64.0, ["must be an integer"]),
    ("partitions", 0, ["must be >= 1"]),
    ("partitions", "4", ["must be an integer"]),
    ("seed", -1, ["must be >= 0"]),
    # convolutions
    ("kernels", (), ["non-empty list of positive filter counts"]),
    ("kernels", (8, 0), ["non-empty list of positive filter counts"]),
    ("kernel_size", 0, ["must be >= 1"]),
    ("kernel_size", 3.0, ["must be an integer"]),
    ("pool", 0, ["must be >= 1"]),
    ("conv_activation", "softmax", ["must be one of", "'sigmoid'", "'relu'", "'tanh'"]),
    ("padding", "full", ["must be one of", "'valid'", "'same'"]),
    ("image_shape", (28, 28), ["(H, W, C)"]),
    ("image_shape", (28, 28, 0), ["(H, W, C)"]),
    ("patches", "udf", ["must be one of", "'inline'", "'explode'"]),
    ("patch_rows", "pixel", ["must be one of", "'image-row'", "'position'"]),
]


@pytest.mark.parametrize("field, value, words", BAD_VALUES,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_VALUES])
def test_validate_names_the_parameter_the_value_and_the_rule(field, value, words):
    config = TrainConfig(**{field: value})
    with pytest.raises(ConfigError) as info:
        config.validate()
    message = str(info.value)
    assert f"{field}=" in message
    assert repr(value) in message
    for word in words:
        assert word in message


def test_config_error_is_a_value_error():
    # Callers that only know the standard library can still catch it.
    with pytest.raises(ValueError):
        TrainConfig(epochs=0).validate()


@pytest.mark.parametrize("changes", [
    {},
    {"lr": None, "partitions": None},  # optional fields
    {"lr": 1e-6, "sample": 1.0, "momentum": 0.0, "beta1": 0.0, "epochs": 1, "batch_size": 1, "seed": 0},
    {"hidden": (), "activation": "tanh", "init": "xavier"},
    {"hidden": [32, 16], "partitions": 3, "dtype": "float64"},
    PRESETS["classic"],
    PRESETS["digits-cnn"],
    {"model": "cnn", "kernels": (16, 32), "pool": None, "padding": "same", "image_shape": (28, 28, 1),
     "patches": "explode", "patch_rows": "position"},
], ids=["defaults", "optional-none", "boundaries", "no-hidden-layer", "list-hidden", "classic-preset",
        "digits-cnn-preset", "cnn"])
def test_valid_configs_pass_and_validate_returns_the_config(changes):
    config = TrainConfig(**changes)
    assert config.validate() is config


def test_every_field_is_checked():
    """A new field without a constraint would slip through validate(); each field must reject garbage."""
    for f in dataclasses.fields(TrainConfig):
        with pytest.raises(ConfigError, match=f"^{f.name}="):
            TrainConfig(**{f.name: object()}).validate()


@pytest.mark.parametrize("field", ["beta1", "beta2"])
def test_adam_betas_of_one_are_rejected(field):
    """Adam divides by ``1 - beta**t``: a beta of exactly 1 divides by zero on the first step."""
    params = np.zeros(3)
    with np.errstate(divide="ignore", invalid="ignore"):
        Adam(0.01, **{field: 1.0}).step(params, np.array([1.0, -2.0, 0.5]))
    assert not np.all(np.isfinite(params))  # what training with such a config would do
    with pytest.raises(ConfigError, match=f"{field}=1.0"):
        TrainConfig(optimizer="adam", **{field: 1.0}).validate()


def test_learning_rate_defaults_per_optimizer_and_explicit_lr_wins():
    for optimizer, lr in DEFAULT_LR.items():
        assert TrainConfig(optimizer=optimizer).learning_rate == lr
        assert TrainConfig(optimizer=optimizer, lr=0.123).learning_rate == 0.123


@pytest.mark.parametrize("activation, init, scheme", [
    ("relu", "auto", "he"), ("sigmoid", "auto", "xavier"), ("tanh", "auto", "xavier"),
    ("relu", "classic", "classic"), ("sigmoid", "he", "he"),
])
def test_init_scheme_resolves_auto_by_activation(activation, init, scheme):
    assert TrainConfig(activation=activation, init=init).init_scheme == scheme


CUSTOM = TrainConfig(model="mlp", hidden=(32, 16), activation="tanh", loss="mse", init="uniform",
                     optimizer="momentum", lr=0.03, momentum=0.8, beta1=0.85, beta2=0.95, epochs=7,
                     schedule="classic", sample=0.6, batch_size=10, partitions=3, seed=11, dtype="float64")


CNN = TrainConfig(model="cnn", kernels=(6, 12), kernel_size=5, pool=None, conv_activation="tanh", padding="same",
                  image_shape=(14, 28, 2), patches="explode", patch_rows="position", hidden=(20,))


@pytest.mark.parametrize("config", [TrainConfig(), CUSTOM, TrainConfig(**PRESETS["classic"]), CNN,
                                    TrainConfig(**PRESETS["digits-cnn"])],
                         ids=["defaults", "custom", "classic", "cnn", "digits-cnn"])
def test_to_dict_from_dict_round_trip_through_json(config):
    d = config.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert d["hidden"] == list(config.hidden)
    assert d["kernels"] == (None if config.kernels is None else list(config.kernels))
    restored = TrainConfig.from_dict(json.loads(json.dumps(d)))  # what a saved model goes through
    assert restored == config
    assert isinstance(restored.hidden, tuple) and (restored.kernels is None or isinstance(restored.kernels, tuple))
    assert restored.image_shape is None or isinstance(restored.image_shape, tuple)
    assert restored.validate() == config


def test_image_shape_is_inferred_for_square_single_channel_images_only():
    assert TrainConfig(model="cnn").resolve_image_shape(784) == (28, 28, 1)
    assert TrainConfig(model="cnn", image_shape=(14, 28, 2)).resolve_image_shape(784) == (14, 28, 2)
    with pytest.raises(ConfigError, match="images of 783 values are not square"):
        TrainConfig(model="cnn").resolve_image_shape(783)
    with pytest.raises(ConfigError, match=r"image_shape=\(28, 28, 3\) holds 2352 values but the images have 784"):
        TrainConfig(model="cnn", image_shape=(28, 28, 3)).resolve_image_shape(784)


def test_digits_cnn_preset_is_the_classic_digits_cnn():
    from dfnet.train import build_network

    config = TrainConfig(**PRESETS["digits-cnn"]).validate()
    assert (config.model, config.kernels, config.kernel_size, config.pool) == ("cnn", (10,), 3, 2)
    assert (config.conv_activation_name, config.activation, config.loss) == ("sigmoid", "relu", "cross-entropy")
    net = build_network(config, 64, 10)
    assert [type(layer).__name__ for layer in net.layers] == \
        ["Conv2D", "Sigmoid", "MaxPool2D", "Flatten", "Dense", "ReLU", "Dense", "Softmax"]
    assert net.input_shape == (8, 8, 1) and net.patch_shape == (6, 6, 9)
    assert net.layers[4].n_in == 3 * 3 * 10  # 6x6 maps pooled to 3x3, 10 of them


def test_from_dict_accepts_a_partial_dict_and_fills_defaults():
    config = TrainConfig.from_dict({"epochs": 3, "hidden": [8]})
    assert config == TrainConfig(epochs=3, hidden=(8,))


def test_from_dict_rejects_unknown_keys_and_names_them():
    d = {**TrainConfig().to_dict(), "learning_rate": 0.1, "dropout_rate": 0.5}
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(d)
    assert "dropout" in str(info.value) and "learning_rate" in str(info.value)
    assert "hidden" not in str(info.value)


def test_from_dict_does_not_modify_its_argument():
    d = CUSTOM.to_dict()
    before = json.dumps(d)
    TrainConfig.from_dict(d)
    assert json.dumps(d) == before


def test_replace_returns_a_new_config_and_leaves_the_original():
    config = TrainConfig()
    changed = config.replace(epochs=9, lr=0.5)
    assert (changed.epochs, changed.lr) == (9, 0.5)
    assert (config.epochs, config.lr) == (30, None)


def test_classic_preset_is_the_classic_network():
    c = TrainConfig(**PRESETS["classic"]).validate()
    assert (c.hidden, c.activation, c.loss, c.init_scheme) == ((64,), "sigmoid", "mse", "classic")
    assert (c.optimizer, c.learning_rate, c.schedule, c.epochs) == ("sgd", 0.1, "classic", 50)
    assert math.isclose(c.sample, 0.7)


def test_cosine_schedule_decays_from_lr_towards_zero():
    config = TrainConfig(optimizer="sgd", lr=0.2, epochs=4, lr_schedule="cosine").validate()
    rates = [config.lr_at(e) for e in range(1, 5)]
    expected = [0.2 * (1 + np.cos(np.pi * k / 4)) / 2 for k in range(4)]
    np.testing.assert_allclose(rates, expected)
    assert rates[0] == 0.2 and all(a > b > 0 for a, b in zip(rates, rates[1:]))
    assert TrainConfig(optimizer="sgd", lr=0.2, lr_schedule="constant", epochs=4).lr_at(3) == 0.2


def test_collect_aggregation_is_refused_on_the_rdd_engines():
    with pytest.raises(ConfigError, match="aggregate='collect' applies to the dataframe engine"):
        TrainConfig(engine="rdd", aggregate="collect").validate()
    assert TrainConfig(engine="dataframe", aggregate="collect").validate().aggregate == "collect"


def test_unset_kernels_give_two_blocks_from_24_pixels_and_one_block_below():
    from dfnet.train import build_network

    def convs(num_features, **changes):
        net = build_network(TrainConfig(model="cnn", **changes).validate(), num_features, 10)
        return [layer.filters for layer in net.layers if type(layer).__name__ == "Conv2D"]

    assert convs(28 * 28) == [16, 32]  # MNIST: 26 -> 13 -> 11 -> 5
    assert convs(24 * 24) == [16, 32]
    assert convs(23 * 23) == [10]
    assert convs(8 * 8) == [10]  # the digits: a second block does not fit
    assert convs(32 * 32 * 3, image_shape=(32, 32, 3)) == [16, 32]
    assert convs(28 * 28, kernels=(6,)) == [6]  # an explicit choice is kept


def test_every_field_has_a_doc_and_a_rule():
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(CONSTRAINTS) == set(fields)
    for name in fields:
        doc, rule = field_help(name).rsplit("; ", 1)
        assert len(doc) > 10 and rule == CONSTRAINTS[name].rule, name
    assert field_help("epochs") == "passes over the training rows; an integer >= 1"
    assert field_help("sample").endswith("; a number in (0, 1]")
    assert field_help("lr").endswith("; a number > 0, or None")
    assert field_help("optimizer").endswith("; one of 'sgd', 'momentum', 'adam'")


def test_hidden_activations_are_the_registry_but_softmax():
    assert HIDDEN_ACTIVATIONS == ("sigmoid", "relu", "tanh")
    assert set(HIDDEN_ACTIVATIONS) == set(ACTIVATIONS) - {"softmax"}
    with pytest.raises(ConfigError, match="activation='softmax': must be one of"):
        TrainConfig(activation="softmax").validate()
