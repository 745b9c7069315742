"""The Params of :class:`~dfnet.ml.DFNetClassifier` and :class:`~dfnet.ml.DFNetModel`, shared by both."""

from __future__ import annotations

from typing import Any

from pyspark.ml.classification import _ProbabilisticClassifierParams
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasMaxIter, HasSeed, HasStepSize, HasValidationIndicatorCol

from ..config import TrainConfig

#: Each training Param and the TrainConfig field it sets.
PARAM_FIELDS: dict[str, str] = {
    "maxIter": "epochs", "stepSize": "lr", "seed": "seed", "optimizer": "optimizer", "lrSchedule": "lr_schedule",
    "schedule": "schedule", "batchSize": "batch_size", "sampleFraction": "sample", "localSteps": "local_steps",
    "activation": "activation", "loss": "loss", "weightInit": "init", "partitions": "partitions", "dtype": "dtype",
    "weightDecay": "weight_decay", "dropout": "dropout", "validationSplit": "validation_split",
    "patience": "early_stopping", "minDelta": "min_delta",
}
_DEFAULTS = TrainConfig()


class _DFNetParams(_ProbabilisticClassifierParams, HasMaxIter, HasStepSize, HasSeed, HasValidationIndicatorCol):
    """Params shared by :class:`DFNetClassifier` and :class:`DFNetModel`.

    Defaults are dfnet's own (:class:`~dfnet.config.TrainConfig`); ``stepSize``,
    ``localSteps``, ``partitions``, ``layers`` and ``architecture`` have none
    (unset: the optimizer's default learning rate, an epoch of local steps, the
    input's partitioning, the architecture below).
    """

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
    optimizer: Param[str] = Param(Params._dummy(), "optimizer", "sgd, momentum or adam",
                                  typeConverter=TypeConverters.toString)
    lrSchedule: Param[str] = Param(Params._dummy(), "lrSchedule",
                                   "constant, or cosine decay of stepSize over the epochs",
                                   typeConverter=TypeConverters.toString)
    schedule: Param[str] = Param(
        Params._dummy(), "schedule",
        "minibatch (one Spark job per batch), classic (one full-batch step per epoch) or average "
        "(partitions train locally, the driver averages their weights: one job per epoch)",
        typeConverter=TypeConverters.toString)
    batchSize: Param[int] = Param(Params._dummy(), "batchSize", "rows per step (per local step for average)",
                                  typeConverter=TypeConverters.toInt)
    sampleFraction: Param[float] = Param(Params._dummy(), "sampleFraction",
                                         "fraction of the rows used per epoch, in (0, 1]",
                                         typeConverter=TypeConverters.toFloat)
    localSteps: Param[int] = Param(Params._dummy(), "localSteps",
                                   "average schedule: local steps per partition between averages (unset: an epoch)",
                                   typeConverter=TypeConverters.toInt)
    activation: Param[str] = Param(Params._dummy(), "activation", "hidden activation: relu, sigmoid or tanh",
                                   typeConverter=TypeConverters.toString)
    loss: Param[str] = Param(Params._dummy(), "loss",
                             "cross-entropy (softmax output) or mse (sigmoid output, one-hot targets)",
                             typeConverter=TypeConverters.toString)
    weightInit: Param[str] = Param(Params._dummy(), "weightInit",
                                   "auto (He for relu, Xavier otherwise), classic, uniform, xavier or he",
                                   typeConverter=TypeConverters.toString)
    partitions: Param[int] = Param(Params._dummy(), "partitions",
                                   "partitions of the cached training data (unset: as given)",
                                   typeConverter=TypeConverters.toInt)
    dtype: Param[str] = Param(Params._dummy(), "dtype", "float32 or float64: the network's arithmetic",
                              typeConverter=TypeConverters.toString)
    verbose: Param[bool] = Param(Params._dummy(), "verbose", "print one line per epoch while fitting",
                                 typeConverter=TypeConverters.toBoolean)
    weightDecay: Param[float] = Param(
        Params._dummy(), "weightDecay",
        "weight decay of the weights (not biases): decoupled (AdamW) for adam, L2 for sgd and momentum",
        typeConverter=TypeConverters.toFloat)
    dropout: Param[float] = Param(Params._dummy(), "dropout",
                                  "inverted dropout rate after every hidden activation, in [0, 1); off in transform",
                                  typeConverter=TypeConverters.toFloat)
    validationSplit: Param[float] = Param(
        Params._dummy(), "validationSplit",
        "fraction of the rows held out for validation by a seeded hash of the row (when validationIndicatorCol "
        "is not set), in [0, 1)", typeConverter=TypeConverters.toFloat)
    patience: Param[int] = Param(
        Params._dummy(), "patience",
        "early stopping: stop after this many epochs without a lower validation loss and keep the best epoch's "
        "weights (needs validationIndicatorCol or validationSplit; unset: no early stopping)",
        typeConverter=TypeConverters.toInt)
    minDelta: Param[float] = Param(Params._dummy(), "minDelta",
                                   "early stopping: the least decrease of the validation loss that counts",
                                   typeConverter=TypeConverters.toFloat)
    mlflow: Param[bool] = Param(
        Params._dummy(), "mlflow",
        "log every fit as an MLflow run of its own (nested under an active run): params, per-epoch metrics, "
        "the model (dfnet.tracking.MLflowLogger; pip install 'dfnet[mlflow]')", typeConverter=TypeConverters.toBoolean)
    mlflowExperiment: Param[str] = Param(Params._dummy(), "mlflowExperiment",
                                         "the MLflow experiment of those runs (unset: MLflow's active one)",
                                         typeConverter=TypeConverters.toString)

    def __init__(self, *args: Any):
        super().__init__(*args)
        defaults = {param: getattr(_DEFAULTS, field) for param, field in PARAM_FIELDS.items()
                    if getattr(_DEFAULTS, field) is not None}
        # HasSeed's own default is hash(class name), which differs between Python processes.
        self._setDefault(**defaults, verbose=False, mlflow=False)

    def _optional(self, param: Param) -> Any:
        return self.getOrDefault(param) if self.isDefined(param) else None

    def getLayers(self) -> list[int] | None:
        """Layer sizes ``[inputs, hidden..., classes]``, or None when not set."""
        return self._optional(self.layers)

    def getArchitecture(self) -> str | None:
        """The network JSON, or None when not set."""
        return self._optional(self.architecture)

    def getStepSize(self) -> float | None:
        """The learning rate, or None when not set (the optimizer's default then)."""
        return self._optional(self.stepSize)

    def getOptimizer(self) -> str:
        return self.getOrDefault(self.optimizer)

    def getLrSchedule(self) -> str:
        return self.getOrDefault(self.lrSchedule)

    def getSchedule(self) -> str:
        return self.getOrDefault(self.schedule)

    def getBatchSize(self) -> int | None:
        """Rows per (local) step, or None when not set (auto_batch_size then)."""
        return self._optional(self.batchSize)

    def getWeightDecay(self) -> float:
        return self.getOrDefault(self.weightDecay)

    def getDropout(self) -> float:
        return self.getOrDefault(self.dropout)

    def getValidationSplit(self) -> float:
        return self.getOrDefault(self.validationSplit)

    def getPatience(self) -> int | None:
        return self._optional(self.patience)

    def getMinDelta(self) -> float:
        return self.getOrDefault(self.minDelta)

    def getSampleFraction(self) -> float:
        return self.getOrDefault(self.sampleFraction)

    def getLocalSteps(self) -> int | None:
        return self._optional(self.localSteps)

    def getActivation(self) -> str:
        return self.getOrDefault(self.activation)

    def getLoss(self) -> str:
        return self.getOrDefault(self.loss)

    def getWeightInit(self) -> str:
        return self.getOrDefault(self.weightInit)

    def getPartitions(self) -> int | None:
        return self._optional(self.partitions)

    def getDtype(self) -> str:
        return self.getOrDefault(self.dtype)

    def getVerbose(self) -> bool:
        return self.getOrDefault(self.verbose)

    def getMlflow(self) -> bool:
        return self.getOrDefault(self.mlflow)

    def getMlflowExperiment(self) -> str | None:
        return self._optional(self.mlflowExperiment)

    def _set_or_clear(self, **kwargs: Any):
        """Set each given Param; None clears it (back to its default, or unset)."""
        for name, value in kwargs.items():
            if value is None:
                self.clear(self.getParam(name))
            else:
                self._set(**{name: value})
        return self

