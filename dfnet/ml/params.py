"""The Params of :class:`~dfnet.ml.DFNetClassifier` and :class:`~dfnet.ml.DFNetModel`, shared by both.

The training Params are generated from one table, :data:`PARAM_FIELDS` (Spark ML name -> TrainConfig
field), as pyspark's ``param/shared.py`` is generated from its table and xgboost.spark's Params from its
single-machine estimator. The field gives its Param everything else: the type converter (from the
field's type), the default (none when the field's is None) and the doc (the field's doc and allowed
values, :func:`~dfnet.config.field_help`). A new training option is one row. Getters (``getX``),
setters (``setX``, returning self) and the keyword signature of ``__init__`` / ``setParams`` are
generated for every Param, these and the hand-written ones alike.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from typing import Any, Callable

from pyspark.ml.classification import _ProbabilisticClassifierParams
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasValidationIndicatorCol

from ..config import CONSTRAINTS, TrainConfig, field_help
from ..errors import ConfigError

#: Each training Param and the TrainConfig field it sets, in the order of the signatures. MLlib's
#: names where MLlib has the concept (maxIter, stepSize, seed), the field's in camelCase elsewhere.
PARAM_FIELDS: dict[str, str] = {
    "maxIter": "epochs", "stepSize": "lr", "seed": "seed",
    "optimizer": "optimizer", "lrSchedule": "lr_schedule", "momentum": "momentum", "beta1": "beta1",
    "beta2": "beta2", "schedule": "schedule", "batchSize": "batch_size", "sampleFraction": "sample",
    "localSteps": "local_steps", "partitions": "partitions", "aggregate": "aggregate",
    "partialDtype": "partial_dtype",
    "activation": "activation", "loss": "loss", "weightInit": "init", "dtype": "dtype",
    "weightDecay": "weight_decay", "dropout": "dropout", "validationSplit": "validation_split",
    "patience": "early_stopping", "minDelta": "min_delta",
}
#: TrainConfig's fields that have no Param, and why.
NOT_PARAMS: dict[str, str] = {
    **dict.fromkeys(("model", "hidden", "kernels", "kernel_size", "pool", "conv_activation", "padding",
                     "image_shape"), "the network is given by layers or architecture"),
    **dict.fromkeys(("patches", "patch_rows"), "they need model='cnn', which an architecture does not set"),
    "engine": "the RDD engines are benchmark baselines, and need a SparkContext",
}
_DEFAULTS = TrainConfig()
_FIELD_TYPES = typing.get_type_hints(TrainConfig)
#: A Param's type converter and the Python type it yields.
_CONVERTED_TYPES: dict[Callable, Any] = {
    TypeConverters.toInt: int, TypeConverters.toFloat: float, TypeConverters.toString: str,
    TypeConverters.toBoolean: bool, TypeConverters.toListInt: list[int], TypeConverters.toListFloat: list[float],
}


def _converter(field: str) -> Callable:
    """The TypeConverter of a TrainConfig field's type (``X | None`` as X; tuples of ints as lists)."""
    kind = _FIELD_TYPES[field]
    if isinstance(kind, types.UnionType):
        [kind] = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if typing.get_origin(kind) is tuple:
        return TypeConverters.toListInt
    return {int: TypeConverters.toInt, float: TypeConverters.toFloat, str: TypeConverters.toString,
            bool: TypeConverters.toBoolean}[kind]


def _training_param(name: str, field: str) -> Param:
    return Param(Params._dummy(), name, f"TrainConfig.{field}: {field_help(field)}", typeConverter=_converter(field))


class _DFNetParams(_ProbabilisticClassifierParams, HasValidationIndicatorCol):
    """Params shared by :class:`DFNetClassifier` and :class:`DFNetModel`: the columns, the network
    (``layers``, ``architecture``), the training Params of :data:`PARAM_FIELDS` (defaults
    TrainConfig's; those whose field defaults to None have none) and the run's side jobs."""

    layers: Param[list[int]] = Param(
        Params._dummy(), "layers",
        "layer sizes from input to output, as MLlib's MultilayerPerceptronClassifier has them: e.g. "
        "[784, 64, 10] is 784 inputs, one hidden layer of 64 and 10 classes. Unset: one hidden layer of "
        f"{_DEFAULTS.hidden[0]}, inputs and classes from the data. Ignored when architecture is set.",
        typeConverter=TypeConverters.toListInt)
    architecture: Param[str] = Param(
        Params._dummy(), "architecture",
        "a dfnet network as JSON (Sequential.to_json(), e.g. of build_cnn(...)); takes precedence over "
        "layers, activation and loss, and sets dtype unless dtype is set too",
        typeConverter=TypeConverters.toString)
    verbose: Param[bool] = Param(Params._dummy(), "verbose", "print one line per epoch while fitting",
                                 typeConverter=TypeConverters.toBoolean)
    mlflow: Param[bool] = Param(
        Params._dummy(), "mlflow",
        "log every fit as an MLflow run of its own (nested under an active run): params, per-epoch metrics, "
        "the model (dfnet.tracking.MLflowLogger; pip install 'dfnet[mlflow]')", typeConverter=TypeConverters.toBoolean)
    mlflowExperiment: Param[str] = Param(Params._dummy(), "mlflowExperiment",
                                         "the MLflow experiment of those runs (unset: MLflow's active one)",
                                         typeConverter=TypeConverters.toString)

    def __init__(self, *args: Any):
        super().__init__(*args)
        # Set here for seed too: HasSeed's default, hash(class name), differs between Python processes.
        self._setDefault(**_config_params(_DEFAULTS), verbose=False, mlflow=False)

    def _optional(self, param: Param) -> Any:
        return self.getOrDefault(param) if self.isDefined(param) else None

    def _set_or_clear(self, **kwargs: Any):
        """Set each given Param; None clears it (back to its default, or unset). An unknown name is a
        TypeError naming it, as Python's for an unexpected keyword."""
        for name in kwargs:
            if not self.hasParam(name):
                raise TypeError(_unknown_param(self, name))
        for name, value in kwargs.items():
            if value is None:
                self.clear(self.getParam(name))
            else:
                self._set(**{name: value})
        return self

    def _config_values(self) -> dict[str, Any]:
        """The TrainConfig fields the set or default training Params give, each checked against
        CONSTRAINTS with errors naming the Param (``maxIter=0: must be >= 1``)."""
        values = {}
        for name, field in PARAM_FIELDS.items():
            value = self._optional(getattr(self, name))
            if value is None:
                continue
            message = CONSTRAINTS[field](value)
            if message:
                raise ConfigError(f"{name}={value!r}: {message}")
            values[field] = tuple(value) if isinstance(value, list) else value
        return values


def _config_params(config: TrainConfig) -> dict[str, Any]:
    """The training Params of ``config``'s fields that are not None."""
    return {name: getattr(config, field) for name, field in PARAM_FIELDS.items()
            if getattr(config, field) is not None}


def _unknown_param(instance: Params, name: str) -> str:
    names = [p.name for p in instance.params]
    close = difflib.get_close_matches(name, names, n=1)
    return (f"{type(instance).__name__} has no Param {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; its Params: {', '.join(names)}")


for _name, _field in PARAM_FIELDS.items():
    setattr(_DFNetParams, _name, _training_param(_name, _field))


# --- accessors and signatures generated from the Params ---------------------------------------------

def _params_of(cls: type) -> list[Param]:
    return [value for value in (getattr(cls, name) for name in dir(cls)) if isinstance(value, Param)]


def _accessor(prefix: str, name: str) -> str:
    return prefix + name[0].upper() + name[1:]


def _value_type(param: Param, optional: bool) -> Any:
    kind = _CONVERTED_TYPES.get(param.typeConverter, Any)
    return kind | None if optional and kind is not Any else kind


def add_getters(cls: type) -> type:
    """``getX()`` for each Param ``X`` of ``cls`` that has none: its value, or None when it has none."""
    defaulted = {param.name for param in cls()._defaultParamMap}
    for param in _params_of(cls):
        if not hasattr(cls, _accessor("get", param.name)):
            def get(self, name=param.name):
                return self._optional(getattr(self, name))
            get.__name__ = get.__qualname__ = _accessor("get", param.name)
            get.__doc__ = f"The value of {param.name} (None when unset): {param.doc}"
            get.__signature__ = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)],
                                                  return_annotation=_value_type(param, param.name not in defaulted))
            setattr(cls, get.__name__, get)
    return cls


def add_setters(cls: type) -> type:
    """``setX(value)`` for each Param ``X`` of ``cls`` that has none; it returns self, and None clears ``X``."""
    for param in _params_of(cls):
        if not hasattr(cls, _accessor("set", param.name)):
            def set_(self, value, name=param.name):
                return self._set_or_clear(**{name: value})
            set_.__name__ = set_.__qualname__ = _accessor("set", param.name)
            set_.__doc__ = f"Set {param.name} and return self (None clears it): {param.doc}"
            set_.__signature__ = inspect.Signature(
                [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
                 inspect.Parameter("value", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                   annotation=_value_type(param, optional=True))],
                return_annotation=cls.__name__)
            setattr(cls, set_.__name__, set_)
    return cls


#: The Params that open the signatures; the training Params follow, then the others by name.
_LEADING = ("featuresCol", "labelCol", "predictionCol", "probabilityCol", "rawPredictionCol", "layers", "architecture")


def keyword_signature(cls: type, returns: Any = inspect.Signature.empty) -> inspect.Signature:
    """``(self, *, X: type = default, ...)`` over every Param of ``cls``, for ``__init__`` and
    ``setParams`` (pyspark's ``keyword_only`` methods take ``**kwargs``; this is what ``help``,
    ``inspect.signature`` and Jupyter show; static analysers see only ``**params``)."""
    defaults = {param.name: value for param, value in cls()._defaultParamMap.items()}
    params = {param.name: param for param in _params_of(cls)}
    order = [*_LEADING, *PARAM_FIELDS, *sorted(set(params) - set(_LEADING) - set(PARAM_FIELDS))]
    keywords = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(name),
                                  annotation=_value_type(params[name], optional=name not in defaults))
                for name in order]
    return inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *keywords],
                             return_annotation=returns)


add_getters(_DFNetParams)
