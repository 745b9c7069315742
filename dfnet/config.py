"""One typed configuration object for a training run, shared by the CLI and the API.

Allowed values live in one table (:data:`CONSTRAINTS`) and are checked once by
:meth:`TrainConfig.validate`, whose errors name the parameter and the bad value.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .nn.layers import INITIALIZERS
from .nn.losses import LOSSES

SCHEDULES = ("classic", "minibatch", "average")
ENGINES = ("dataframe", "rdd", "rdd-batched")
LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("sgd", "momentum", "adam")
MODELS = ("mlp",)
AGGREGATES = ("agg", "collect")
#: Learning rate used when none is given, per optimizer.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "adam": 0.002}


@dataclass
class TrainConfig:
    """Hyperparameters of one training run.

    The defaults are dfnet's own (ReLU, softmax cross-entropy, He init, Adam,
    mini-batches of 64); ``PRESETS['classic']`` is the classic 784-64-2
    sigmoid/MSE network with one full-batch update per epoch.
    """

    model: str = "mlp"
    engine: str = "dataframe"  # rdd / rdd-batched: the RDD baselines
    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"
    loss: str = "cross-entropy"
    init: str = "auto"  # he for relu, xavier otherwise
    optimizer: str = "adam"
    lr: float | None = None  # None -> DEFAULT_LR[optimizer]
    lr_schedule: str = "constant"  # cosine: lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2 in each epoch
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    epochs: int = 5
    schedule: str = "minibatch"
    sample: float = 1.0  # fraction of the rows used per epoch (sampled without replacement)
    batch_size: int = 64  # rows per step (minibatch), or per local step (average)
    local_steps: int | None = None  # average: local steps per partition between averages (None: an epoch)
    partitions: int | None = None  # None keeps the DataFrame's partitioning
    aggregate: str = "agg"  # dataframe engine: groupBy().agg, or "collect" (Arrow collect, summed on the driver)
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> "TrainConfig":
        """Check every field against :data:`CONSTRAINTS`; return self."""
        for name, check in CONSTRAINTS.items():
            value = getattr(self, name)
            message = check(value)
            if message:
                raise ConfigError(f"{name}={value!r}: {message}")
        if self.aggregate != "agg" and self.engine != "dataframe":
            raise ConfigError(f"aggregate={self.aggregate!r} applies to the dataframe engine, not engine={self.engine!r}")
        if self.schedule == "average" and self.engine != "dataframe":
            raise ConfigError(f"schedule='average' runs on the dataframe engine, not engine={self.engine!r}")
        return self

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

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def _one_of(options):
    return lambda v: None if v in options else f"must be one of {list(options)}"


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
    return check


def _hidden(v):
    if not isinstance(v, (tuple, list)) or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v):
        return "must be a list of positive layer sizes, e.g. (64,) or (128, 64)"
    return None


CONSTRAINTS = {
    "model": _one_of(MODELS),
    "engine": _one_of(ENGINES),
    "hidden": _hidden,
    "activation": _one_of(("sigmoid", "relu", "tanh")),
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
    "batch_size": _number(1, integer=True),
    "local_steps": _number(1, integer=True, optional=True),
    "partitions": _number(1, integer=True, optional=True),
    "aggregate": _one_of(AGGREGATES),
    "seed": _number(0, integer=True),
    "dtype": _one_of(("float32", "float64")),
}

#: Named configurations. ``classic`` is the 784-64-2 sigmoid network of the
#: classic Spark write-up: MSE on one-hot targets, all-positive uniform*0.5
#: init, plain SGD at 0.1, one full-batch update per epoch on a 0.7 sample.
PRESETS: dict[str, dict[str, Any]] = {
    "classic": dict(hidden=(64,), activation="sigmoid", loss="mse", init="classic", optimizer="sgd",
                    lr=0.1, epochs=50, sample=0.7, schedule="classic", dtype="float64"),
}
#: Data the presets were defined on (the CLI applies these unless overridden).
PRESET_DATA: dict[str, dict[str, Any]] = {
    "classic": dict(dataset="mnist", classes=(0, 1)),
}
