"""One typed configuration object for a training run, shared by the CLI and the API.

Each field declares its default, type and doc once (the Spark ML Params of
:mod:`dfnet.ml` are generated from them). Allowed values live in one table
(:data:`CONSTRAINTS`), each rule with a ``rule`` text for docs, and are checked
once by :meth:`TrainConfig.validate`, whose errors name the parameter and the
bad value; the few rules that tie two fields together follow the table in
``validate``.

``model="cnn"`` adds convolution blocks in front of the ``hidden`` dense
layers: per entry of ``kernels`` one Conv2D (``kernel_size``, ``padding``)
-> ``conv_activation`` -> MaxPool2D(``pool``). ``patches`` says where the first
convolution's patches are cut: ``inline`` inside each step's numpy pass,
``explode`` once, by a Spark UDF + ``posexplode``, into cached patch rows
(:mod:`dfnet.engine.patches`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .nn.conv import PADDINGS
from .nn import layers
from .nn.layers import INITIALIZERS
from .nn.losses import LOSSES

SCHEDULES = ("auto", "classic", "minibatch", "average")
ENGINES = ("dataframe", "rdd", "rdd-batched")
LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("sgd", "momentum", "adam")
MODELS = ("mlp", "cnn")
#: The activations a hidden layer may have: the registry's, but softmax (an output layer).
HIDDEN_ACTIVATIONS = tuple(name for name in layers.ACTIVATIONS if name != "softmax")
PATCHES = ("inline", "explode")
PATCH_ROWS = ("image-row", "position")
AGGREGATES = ("auto", "agg", "collect", "sharded")
PARTIAL_DTYPES = ("float64", "float32")
#: Learning rate used when none is given, per optimizer.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "adam": 0.003}


def _field(default: Any, doc: str) -> Any:
    """A TrainConfig field: its default and what it means (``field_help``, the Spark ML Params' docs)."""
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclass
class TrainConfig:
    """Hyperparameters of one training run.

    The defaults are dfnet's own: a 128-unit ReLU layer, softmax cross-entropy,
    He init, Adam at 0.003 decayed by a cosine over 30 epochs, local
    mini-batches of 32-128 (:func:`auto_batch_size`) under the ``auto`` schedule (model averaging: one model
    per task slot and 16,384 rows at most, one Spark job per epoch whatever the data size; see
    :func:`dfnet.schedules.plan_auto`). They were chosen by measurement on the
    digits, MNIST and Fashion-MNIST (``benchmarks/defaults.py``).
    ``PRESETS['classic']`` is the classic 784-64-2 sigmoid/MSE network with one
    full-batch update per epoch.
    """

    # Each field's doc says what it is; CONSTRAINTS below says which values it takes. Both feed the
    # docs of the Spark ML Params (dfnet.ml) and field_help.
    model: str = _field("mlp", "the network: a dense MLP, or a cnn (convolution blocks in front of the dense layers)")
    engine: str = _field("dataframe", "how a step is computed: dataframe, or the RDD baselines rdd and rdd-batched")
    hidden: tuple[int, ...] = _field((128,), "sizes of the dense hidden layers (after the convolutions of a cnn)")
    activation: str = _field("relu", "activation after each hidden layer")
    kernels: tuple[int, ...] | None = _field(
        None, "cnn: filters of each convolution block (None: auto_kernels of the image size)")
    kernel_size: int = _field(3, "cnn: side of the square kernels (stride 1)")
    pool: int | None = _field(2, "cnn: max-pooling window after each convolution (None: no pooling)")
    conv_activation: str | None = _field(None, "cnn: activation after each convolution (None: the hidden activation)")
    padding: str = _field("valid", "cnn: padding of the convolutions")
    image_shape: tuple[int, int, int] | None = _field(None, "cnn: the images' (H, W, C) (None: square, one channel)")
    patches: str = _field("inline", "cnn: where the first convolution's patches are cut: inside each step's numpy "
                                    "pass, or explode them once into cached patch rows (dataframe engine only)")
    patch_rows: str = _field("image-row", "cnn, patches explode: one cached row per output row of an image, "
                                          "or per position")
    loss: str = _field("cross-entropy", "cross-entropy (softmax output) or mse (sigmoid output, one-hot targets)")
    init: str = _field("auto", "weight initialisation (auto: he for relu, xavier otherwise)")
    optimizer: str = _field("adam", "the optimizer")
    lr: float | None = _field(None, "learning rate (None: the optimizer's own, DEFAULT_LR)")
    lr_schedule: str = _field("cosine", "learning rate over the epochs: constant, or cosine decay "
                                        "(lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2 in each epoch)")
    momentum: float = _field(0.9, "momentum of the momentum optimizer")
    beta1: float = _field(0.9, "adam: decay rate of the gradient's running mean")
    beta2: float = _field(0.999, "adam: decay rate of the squared gradient's running mean")
    epochs: int = _field(30, "passes over the training rows")
    schedule: str = _field("auto", "how steps are planned: auto (model averaging planned from the data and the "
                                   "cluster), minibatch (exact SGD, one Spark job a batch), classic (one "
                                   "full-batch step an epoch) or average (partitions train locally, the driver "
                                   "averages their models)")
    sample: float = _field(1.0, "fraction of the rows used per epoch (sampled without replacement)")
    batch_size: int | None = _field(None, "rows per step (minibatch) or per local step (average, auto) "
                                          "(None: auto_batch_size)")
    local_steps: int | None = _field(None, "average: local steps per partition between averages (None: an epoch)")
    partitions: int | None = _field(None, "partitions of the cached training rows (None: the DataFrame's own)")
    aggregate: str = _field("auto", "dataframe engine: how a step adds the tasks' partial sums: collect (Arrow "
                                    "collect, added on the driver), agg (groupBy().agg on one reduce task), sharded "
                                    "(each task's vector cut into chunks, each chunk added on its own reduce task) "
                                    "or auto (collect while tasks x weights is small, else sharded; see "
                                    "dfnet.engine.sums.resolve_aggregate)")
    partial_dtype: str = _field("float64", "dataframe engine: the type of the tasks' partial sums on the wire "
                                           "(float32 halves the bytes; the adding stays float64)")
    seed: int = _field(0, "seed of the initial weights, the epochs' samples and batches, dropout and the "
                          "validation split")
    dtype: str = _field("float32", "the network's arithmetic")
    validation_split: float = _field(0.0, "fraction of the training rows held out for validation (by a seeded "
                                          "hash of the row key)")
    early_stopping: int | None = _field(None, "patience: stop after this many epochs without a lower validation "
                                              "loss, keeping the best epoch's weights (None: no early stopping)")
    min_delta: float = _field(0.0, "early stopping: how much lower than the best a validation loss must be to count")
    weight_decay: float = _field(0.0, "decay of the weights, not the biases: decoupled (AdamW) for adam, L2 for "
                                      "sgd and momentum")
    dropout: float = _field(0.0, "inverted dropout rate after each hidden activation (dense and convolutional); "
                                 "off when predicting")

    def validate(self) -> "TrainConfig":
        """Check every field against :data:`CONSTRAINTS`; return self."""
        for name, check in CONSTRAINTS.items():
            value = getattr(self, name)
            message = check(value)
            if message:
                raise ConfigError(f"{name}={value!r}: {message}")
        if self.partial_dtype != "float64" and self.engine != "dataframe":
            raise ConfigError(f"partial_dtype={self.partial_dtype!r} applies to the dataframe engine, not "
                              f"engine={self.engine!r}")
        if self.aggregate not in ("auto", "agg") and self.engine != "dataframe":
            raise ConfigError(f"aggregate={self.aggregate!r} applies to the dataframe engine, not engine={self.engine!r}")
        if self.schedule == "average" and self.engine != "dataframe":
            raise ConfigError(f"schedule='average' runs on the dataframe engine, not engine={self.engine!r}")
        if self.patches == "explode" and self.model != "cnn":
            raise ConfigError(f"patches='explode' cuts convolution patches: it needs model='cnn', "
                              f"not model={self.model!r}")
        if self.dropout and self.engine != "dataframe":
            raise ConfigError(f"dropout={self.dropout} runs on the dataframe engine, not engine={self.engine!r}: "
                              f"its masks are keyed by the cached rows' keys, which the RDD baselines do not carry")
        if self.patches == "explode" and self.engine != "dataframe":
            raise ConfigError(f"patches='explode' runs on the dataframe engine, not engine={self.engine!r}; "
                              f"the RDD engines cut patches inline")
        return self

    def resolved_batch_size(self, rows_per_model: int) -> int:
        """``batch_size``, or when None :func:`auto_batch_size` of the rows one model steps over."""
        return self.batch_size if self.batch_size is not None else auto_batch_size(rows_per_model)

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    def lr_at(self, epoch: int) -> float:
        """Learning rate of the steps in ``epoch`` (1-based)."""
        if self.lr_schedule == "cosine":
            return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))
        return self.learning_rate

    @property
    def init_scheme(self) -> str:
        if self.init != "auto":
            return self.init
        return "he" if self.activation == "relu" else "xavier"

    @property
    def conv_activation_name(self) -> str:
        return self.conv_activation or self.activation

    def resolve_kernels(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``kernels``, or :func:`auto_kernels` for images of ``image_shape``."""
        return tuple(self.kernels) if self.kernels is not None else auto_kernels(image_shape)

    def resolve_image_shape(self, num_features: int) -> tuple[int, int, int]:
        """``image_shape``, or a square single-channel image of ``num_features`` pixels."""
        if self.image_shape is not None:
            if math.prod(self.image_shape) != num_features:
                raise ConfigError(f"image_shape={tuple(self.image_shape)!r} holds {math.prod(self.image_shape)} "
                                  f"values but the images have {num_features}")
            return tuple(self.image_shape)  # type: ignore[return-value]
        side = math.isqrt(num_features)
        if side * side != num_features:
            raise ConfigError(f"model='cnn': images of {num_features} values are not square; "
                              f"give image_shape=(H, W, C) (--image-shape H,W,C)")
        return side, side, 1

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in _TUPLES:
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}")
        d = dict(d)
        for name in _TUPLES:
            if d.get(name) is not None:
                d[name] = tuple(d[name])
        return cls(**d)


_TUPLES = ("hidden", "kernels", "image_shape")  # lists in JSON
#: auto_batch_size aims at this many optimizer steps per model and epoch, within these bounds.
AUTO_BATCH_STEPS, AUTO_BATCH_MIN, AUTO_BATCH_MAX = 256, 32, 128


def auto_batch_size(rows_per_model: int) -> int:
    """The default batch: the power of two nearest ``rows_per_model / 256``, within [32, 128].

    Small data needs many optimizer steps per epoch, while every step costs a
    fixed update of all parameters, which larger batches amortise on large data
    (docs/performance.md, "The defaults against what a user would pick instead").
    """
    target = max(1.0, rows_per_model / AUTO_BATCH_STEPS)
    return int(min(AUTO_BATCH_MAX, max(AUTO_BATCH_MIN, 2 ** round(math.log2(target)))))


#: The default convolution blocks (``kernels`` unset): two blocks of 16 and 32 filters for images
#: of at least AUTO_TWO_BLOCKS_SIDE pixels on the shorter side, one block of 10 below, where a
#: second 3x3 convolution and 2x2 pooling would leave under 4x4 maps (accuracy of both on MNIST:
#: docs/performance.md, "The defaults against what a user would pick instead").
AUTO_TWO_BLOCKS_SIDE = 24
AUTO_KERNELS_SMALL = (10,)
AUTO_KERNELS_LARGE = (16, 32)


def auto_kernels(image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The filters of each convolution block for ``(H, W[, C])`` images when ``kernels`` is unset."""
    return AUTO_KERNELS_LARGE if min(image_shape[:2]) >= AUTO_TWO_BLOCKS_SIDE else AUTO_KERNELS_SMALL


# Each check returns None or what is wrong with a value; its ``rule`` says what it allows.
def _rule(rule: str):
    def attach(check):
        check.rule = rule
        return check
    return attach


def _one_of(options, *, optional=False):
    def check(v):
        return None if v in options or (optional and v is None) else f"must be one of {list(options)}"
    return _rule("one of " + ", ".join(map(repr, options)) + (", or None" if optional else ""))(check)


def _number(lo=None, hi=None, *, integer=False, lo_open=False, hi_open=False, optional=False):
    def check(v):
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return f"must be {'an integer' if integer else 'a number'}"
        if v != v:
            return "must not be NaN"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}"
        if hi is not None and (v >= hi if hi_open else v > hi):
            return f"must be {'<' if hi_open else '<='} {hi}"
        return None
    if hi is None:
        bounds = f" {'>' if lo_open else '>='} {lo}" if lo is not None else ""
    else:
        bounds = f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    kind = "an integer" if integer else "a number"
    return _rule(kind + bounds + (", or None" if optional else ""))(check)


@_rule("a list of positive layer sizes")
def _hidden(v):
    if not isinstance(v, (tuple, list)) or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v):
        return "must be a list of positive layer sizes, e.g. (64,) or (128, 64)"
    return None


@_rule("a non-empty list of positive filter counts, or None")
def _kernels(v):
    if v is None:
        return None
    if _hidden(v) or not v:
        return "must be a non-empty list of positive filter counts, e.g. (10,) or (16, 32)"
    return None


@_rule("three positive integers (H, W, C), or None")
def _image_shape(v):
    if v is None:
        return None
    if _hidden(v) or len(v) != 3:
        return "must be (H, W, C): three positive integers, e.g. (28, 28, 1)"
    return None


CONSTRAINTS = {
    "model": _one_of(MODELS),
    "engine": _one_of(ENGINES),
    "hidden": _hidden,
    "activation": _one_of(HIDDEN_ACTIVATIONS),
    "kernels": _kernels,
    "kernel_size": _number(1, integer=True),
    "pool": _number(1, integer=True, optional=True),
    "conv_activation": _one_of(HIDDEN_ACTIVATIONS, optional=True),
    "padding": _one_of(PADDINGS),
    "image_shape": _image_shape,
    "patches": _one_of(PATCHES),
    "patch_rows": _one_of(PATCH_ROWS),
    "loss": _one_of(tuple(LOSSES)),
    "init": _one_of(("auto", *INITIALIZERS)),
    "optimizer": _one_of(OPTIMIZERS),
    "lr": _number(0, lo_open=True, optional=True),
    "lr_schedule": _one_of(LR_SCHEDULES),
    "momentum": _number(0, 1, hi_open=True),
    "beta1": _number(0, 1, hi_open=True),
    "beta2": _number(0, 1, hi_open=True),
    "epochs": _number(1, integer=True),
    "schedule": _one_of(SCHEDULES),
    "sample": _number(0, 1, lo_open=True),
    "batch_size": _number(1, integer=True, optional=True),
    "local_steps": _number(1, integer=True, optional=True),
    "partitions": _number(1, integer=True, optional=True),
    "aggregate": _one_of(AGGREGATES),
    "partial_dtype": _one_of(PARTIAL_DTYPES),
    "seed": _number(0, integer=True),
    "dtype": _one_of(("float32", "float64")),
    "validation_split": _number(0, 1, hi_open=True),
    "early_stopping": _number(1, integer=True, optional=True),
    "min_delta": _number(0),
    "weight_decay": _number(0),
    "dropout": _number(0, 1, hi_open=True),
}


def field_help(name: str) -> str:
    """What TrainConfig's field ``name`` is and the values it takes, e.g. for ``epochs``:
    ``passes over the training rows; an integer >= 1``."""
    doc = next(f.metadata["doc"] for f in dataclasses.fields(TrainConfig) if f.name == name)
    return f"{doc}; {CONSTRAINTS[name].rule}"

#: Named configurations. ``classic`` is the 784-64-2 sigmoid network of the
#: classic Spark write-up: MSE on one-hot targets, all-positive uniform*0.5
#: init, plain SGD at 0.1, one full-batch update per epoch on a 0.7 sample.
#:
#: ``digits-cnn`` is the classic 8x8 digits CNN: 10 kernels of 3x3, sigmoid
#: activation maps, 2x2 max-pooling, a ReLU dense layer (128), softmax over 10
#: digits. Sigmoid maps learn slowly (ReLU maps reach 0.98 in 10 epochs), so it
#: runs 100 cosine-decayed Adam epochs of 16-image steps. Test accuracy over
#: seeds 0-7 (exact numpy replays of the schedule): 100 epochs 0.975-0.986
#: (mean 0.981), 80 epochs 0.972-0.986 (0.980), 40 epochs 0.967-0.983 (0.975).
#: On 1,437 training images one partition is right: an epoch is one job either
#: way, and averaging two halves' models plateaued at 0.96.
PRESETS: dict[str, dict[str, Any]] = {
    "classic": dict(hidden=(64,), activation="sigmoid", loss="mse", init="classic", optimizer="sgd",
                    lr=0.1, lr_schedule="constant", epochs=50, sample=0.7, schedule="classic", dtype="float64"),
    "digits-cnn": dict(model="cnn", kernels=(10,), kernel_size=3, pool=2, conv_activation="sigmoid",
                       activation="relu", hidden=(128,), optimizer="adam", lr=0.006, lr_schedule="cosine",
                       epochs=100, schedule="average", batch_size=16, partitions=1),
}
#: Data the presets were defined on (the CLI applies these unless overridden).
PRESET_DATA: dict[str, dict[str, Any]] = {
    "classic": dict(dataset="mnist", classes=(0, 1)),
    "digits-cnn": dict(dataset="digits"),
}
