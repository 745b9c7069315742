"""dfnet as a Spark ML classifier: :class:`DFNetClassifier` (an Estimator) and :class:`DFNetModel`.

They follow pyspark.ml's conventions (``ProbabilisticClassifier`` /
``ProbabilisticClassificationModel``, keyword-only constructors, setters that
return ``self``), so they work in a ``Pipeline``, under ``CrossValidator`` and
with MLlib's evaluators. Training is dfnet's :func:`~dfnet.train.fit`; the
Params map onto one :class:`~dfnet.config.TrainConfig` (:data:`PARAM_FIELDS`).

Output columns, as MLlib classifiers give them:

- ``rawPredictionCol``: a vector of the class log-probabilities (for a softmax
  network the log-softmax of its logits). Unlike raw logits, element 1 ranks
  rows exactly as the probability of class 1 does, so
  ``BinaryClassificationEvaluator`` on rawPrediction gives the true ROC AUC.
- ``probabilityCol``: a vector of class probabilities (the softmax output; see
  :class:`~dfnet.evaluate.ClassScorer` for other output layers).
- ``predictionCol``: the class index as a double; with ``thresholds`` the
  class of largest ``probability / threshold``.

Any of them set to ``""`` is left out. Features may be ``array<float>``,
``array<double>`` or ``pyspark.ml.linalg`` vectors (dense or sparse; turned
into arrays in the JVM with ``vector_to_array``); labels are class indices
``0..k-1``, integer or whole-number doubles.

Persistence goes through Spark's DataFrame readers and writers only, on classic and Spark Connect
sessions alike, so any path Spark can write works (local, ``hdfs://``, ``s3a://``, ``dbfs:/``, a
volume)::

    path/metadata/          one JSON line: class, uid, Params (pyspark.ml's DefaultParamsWriter
                            format), and ``dataPath``, the model's data folder
    path/data-<ns>-<hex>/   Parquet, one row: format_version, network (JSON of
                            Sequential.to_config()), weights array<double> (the flat
                            vector; float32 weights are exact in double), config
                            (TrainConfig JSON), history (JSON), class_names array<string>,
                            run_id, and the metadata line again

Models saved as ``path/data/`` (before the data folder had a fresh name per save) still load.
``DFNetModel.load`` also reads dfnet's own model folder (``model.json`` +
``weights.npy``, as ``dfnet train`` writes to ``RUN/model``), with Spark's
``text`` and ``binaryFile`` readers. Saving onto an existing path fails with
:class:`~dfnet.errors.OutputExistsError` unless ``write().overwrite()``; an
overwrite writes the new data folder beside the old one, then the metadata that names it, then
prunes the old folder (:func:`dfnet.files.prune_folder`), so a failed save leaves the old model
loadable and a save stopped after its data loads the new one.

Example
-------
>>> from pyspark.ml.linalg import Vectors
>>> df = spark.createDataFrame([(Vectors.dense([0.0, 0.0]), 0.0), (Vectors.dense([0.0, 1.0]), 1.0),
...                             (Vectors.dense([1.0, 0.0]), 1.0), (Vectors.dense([1.0, 1.0]), 0.0)] * 8,
...                            ["features", "label"])
>>> dfnet = DFNetClassifier(layers=[2, 8, 2], maxIter=2, schedule="average", seed=1)
>>> model = dfnet.fit(df)
>>> model.transform(df).columns
['features', 'label', 'prediction', 'probability', 'rawPrediction']
>>> model.write().overwrite().save(temp_path + "/dfnet-model")
>>> loaded = DFNetModel.load(temp_path + "/dfnet-model")
>>> loaded.getLayers(), loaded.weights == model.weights
([2, 8, 2], True)
"""

from __future__ import annotations

import json
import re
import time
import uuid
import warnings
from typing import Any

import numpy as np
from pyspark import keyword_only
from pyspark.errors import AnalysisException
from pyspark.ml.classification import (ProbabilisticClassificationModel, ProbabilisticClassifier,
                                       _ProbabilisticClassifierParams)
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseVector, Vector, VectorUDT
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasMaxIter, HasSeed, HasStepSize, HasValidationIndicatorCol
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .config import CONSTRAINTS, TrainConfig
from .compat import create_dataframe, ml_context, to_arrow
from .engine.data import check_columns, validate_frame
from .errors import ConfigError, DataValidationError, ModelFormatError, OutputExistsError
from .evaluate import ClassScorer, predict
from .files import first_line, live_folders, prune_folder, spark_errors, spark_files
from .model import TrainedModel
from .nn.layers import ACTIVATIONS, Dense, Dropout
from .nn.network import Sequential
from .train import build_network, fit

__all__ = ["DFNetClassifier", "DFNetModel", "PARAM_FIELDS"]

#: Each training Param and the TrainConfig field it sets.
PARAM_FIELDS: dict[str, str] = {
    "maxIter": "epochs", "stepSize": "lr", "seed": "seed", "optimizer": "optimizer", "lrSchedule": "lr_schedule",
    "schedule": "schedule", "batchSize": "batch_size", "sampleFraction": "sample", "localSteps": "local_steps",
    "activation": "activation", "loss": "loss", "weightInit": "init", "partitions": "partitions", "dtype": "dtype",
    "weightDecay": "weight_decay", "dropout": "dropout", "validationSplit": "validation_split",
    "patience": "early_stopping", "minDelta": "min_delta",
}
_DEFAULTS = TrainConfig()
#: Written in path/data; a reader refuses other versions.
DATA_FORMAT_VERSION = 1
#: Temporary array copy of a vector features column during transform.
_FEATURES_ARRAY_COL = "__dfnet_features"


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


class DFNetClassifier(ProbabilisticClassifier, _DFNetParams, MLReadable["DFNetClassifier"],
                      MLWritable):
    """Trains a dfnet network on a DataFrame, as a Spark ML Estimator.

    ``layers`` gives an MLP like MLlib's ``MultilayerPerceptronClassifier``
    (with dfnet's ``activation`` and softmax cross-entropy); ``architecture``
    any dfnet network, CNNs included, and wins when both are set. ``maxIter``
    is the number of epochs, ``stepSize`` the learning rate. Bad Params raise
    :class:`~dfnet.errors.ConfigError` naming the Param, bad data
    :class:`~dfnet.errors.DataValidationError` naming the column, both before
    any training.

    Without ``layers`` or ``architecture`` the number of classes is the
    largest label + 1 of the data being fitted, so under ``CrossValidator`` a
    fold missing the top class would get a smaller output layer: set
    ``layers`` to pin it.
    """

    _input_kwargs: dict[str, Any]

    @keyword_only
    def __init__(self, *, featuresCol: str = "features", labelCol: str = "label", predictionCol: str = "prediction",
                 probabilityCol: str = "probability", rawPredictionCol: str = "rawPrediction",
                 layers: list[int] | None = None, architecture: str | None = None,
                 maxIter: int = _DEFAULTS.epochs, stepSize: float | None = None, seed: int = _DEFAULTS.seed,
                 optimizer: str = _DEFAULTS.optimizer, lrSchedule: str = _DEFAULTS.lr_schedule,
                 schedule: str = _DEFAULTS.schedule, batchSize: int = _DEFAULTS.batch_size,
                 sampleFraction: float = _DEFAULTS.sample, localSteps: int | None = None,
                 activation: str = _DEFAULTS.activation, loss: str = _DEFAULTS.loss,
                 weightInit: str = _DEFAULTS.init, partitions: int | None = None, dtype: str = _DEFAULTS.dtype,
                 thresholds: list[float] | None = None, verbose: bool = False,
                 weightDecay: float = _DEFAULTS.weight_decay, dropout: float = _DEFAULTS.dropout,
                 validationIndicatorCol: str | None = None, validationSplit: float = _DEFAULTS.validation_split,
                 patience: int | None = None, minDelta: float = _DEFAULTS.min_delta, mlflow: bool = False,
                 mlflowExperiment: str | None = None):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, featuresCol: str = "features", labelCol: str = "label",
                  predictionCol: str = "prediction", probabilityCol: str = "probability",
                  rawPredictionCol: str = "rawPrediction", layers: list[int] | None = None,
                  architecture: str | None = None, maxIter: int = _DEFAULTS.epochs, stepSize: float | None = None,
                  seed: int = _DEFAULTS.seed, optimizer: str = _DEFAULTS.optimizer,
                  lrSchedule: str = _DEFAULTS.lr_schedule, schedule: str = _DEFAULTS.schedule,
                  batchSize: int = _DEFAULTS.batch_size, sampleFraction: float = _DEFAULTS.sample,
                  localSteps: int | None = None, activation: str = _DEFAULTS.activation,
                  loss: str = _DEFAULTS.loss, weightInit: str = _DEFAULTS.init, partitions: int | None = None,
                  dtype: str = _DEFAULTS.dtype, thresholds: list[float] | None = None,
                  verbose: bool = False, weightDecay: float = _DEFAULTS.weight_decay,
                  dropout: float = _DEFAULTS.dropout, validationIndicatorCol: str | None = None,
                  validationSplit: float = _DEFAULTS.validation_split, patience: int | None = None,
                  minDelta: float = _DEFAULTS.min_delta, mlflow: bool = False,
                  mlflowExperiment: str | None = None) -> "DFNetClassifier":
        """Set the given Params (keyword only); None unsets one."""
        return self._set_or_clear(**self._input_kwargs)

    def setLayers(self, value: list[int]) -> "DFNetClassifier":
        return self._set(layers=value)

    def setArchitecture(self, value: str) -> "DFNetClassifier":
        return self._set(architecture=value)

    def setMaxIter(self, value: int) -> "DFNetClassifier":
        return self._set(maxIter=value)

    def setStepSize(self, value: float) -> "DFNetClassifier":
        return self._set(stepSize=value)

    def setSeed(self, value: int) -> "DFNetClassifier":
        return self._set(seed=value)

    def setOptimizer(self, value: str) -> "DFNetClassifier":
        return self._set(optimizer=value)

    def setLrSchedule(self, value: str) -> "DFNetClassifier":
        return self._set(lrSchedule=value)

    def setSchedule(self, value: str) -> "DFNetClassifier":
        return self._set(schedule=value)

    def setBatchSize(self, value: int) -> "DFNetClassifier":
        return self._set(batchSize=value)

    def setSampleFraction(self, value: float) -> "DFNetClassifier":
        return self._set(sampleFraction=value)

    def setLocalSteps(self, value: int) -> "DFNetClassifier":
        return self._set(localSteps=value)

    def setActivation(self, value: str) -> "DFNetClassifier":
        return self._set(activation=value)

    def setLoss(self, value: str) -> "DFNetClassifier":
        return self._set(loss=value)

    def setWeightInit(self, value: str) -> "DFNetClassifier":
        return self._set(weightInit=value)

    def setPartitions(self, value: int) -> "DFNetClassifier":
        return self._set(partitions=value)

    def setDtype(self, value: str) -> "DFNetClassifier":
        return self._set(dtype=value)

    def setVerbose(self, value: bool) -> "DFNetClassifier":
        return self._set(verbose=value)

    def setWeightDecay(self, value: float) -> "DFNetClassifier":
        return self._set(weightDecay=value)

    def setDropout(self, value: float) -> "DFNetClassifier":
        return self._set(dropout=value)

    def setValidationIndicatorCol(self, value: str) -> "DFNetClassifier":
        return self._set(validationIndicatorCol=value)

    def setValidationSplit(self, value: float) -> "DFNetClassifier":
        return self._set(validationSplit=value)

    def setPatience(self, value: int) -> "DFNetClassifier":
        return self._set(patience=value)

    def setMinDelta(self, value: float) -> "DFNetClassifier":
        return self._set(minDelta=value)

    def setMlflow(self, value: bool) -> "DFNetClassifier":
        return self._set(mlflow=value)

    def setMlflowExperiment(self, value: str) -> "DFNetClassifier":
        return self._set(mlflowExperiment=value)

    # --- training --------------------------------------------------------------------
    def train_config(self) -> TrainConfig:
        """The validated TrainConfig these Params describe (errors name the Param)."""
        network = self._given_network()
        values = {}
        for name, field in PARAM_FIELDS.items():
            value = self._optional(self.getParam(name))
            if value is None:
                continue
            message = CONSTRAINTS[field](value)
            if message:
                raise ConfigError(f"{name}={value!r}: {message}")
            values[field] = value
        if network is not None:
            if self.isSet(self.dtype) and self.getDtype() != network.dtype.name:
                raise ConfigError(f"dtype={self.getDtype()!r} but the architecture computes in {network.dtype.name}")
            values["dtype"] = network.dtype.name
        elif self.getLayers() is not None:
            values["hidden"] = tuple(_checked_layers(self.getLayers())[1:-1])
        return TrainConfig(**values).validate()

    def _given_network(self) -> Sequential | None:
        """The network of ``architecture``, if set."""
        text = self.getArchitecture()
        if text is None:
            return None
        try:
            return Sequential.from_config(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"architecture={_shorten(text)!r}: not a dfnet network (Sequential.to_json()): "
                              f"{type(e).__name__}: {e}") from e

    def _network(self, config: TrainConfig) -> Sequential | None:
        network = self._given_network()
        if network is None and self.getLayers() is not None:
            layers = _checked_layers(self.getLayers())
            network = build_network(config, layers[0], layers[-1])
        return network

    def _fit(self, dataset: DataFrame) -> "DFNetModel":
        config = self.train_config()
        network = self._network(config)
        features = self.getFeaturesCol()
        arrays = _feature_arrays(dataset, features, config.dtype)
        frame = dataset if arrays is None else dataset.withColumn(features, arrays)
        validation = None
        indicator = self._optional(self.validationIndicatorCol)
        if indicator:
            if config.validation_split:
                raise ConfigError(f"validationIndicatorCol={indicator!r} and validationSplit="
                                  f"{config.validation_split} both choose validation rows: set one")
            fields = {f.name: f.dataType for f in dataset.schema.fields}
            if indicator not in fields or not isinstance(fields[indicator], T.BooleanType):
                raise DataValidationError(f"validationIndicatorCol={indicator!r}: expected a boolean column of "
                                          f"the DataFrame, which has {list(fields)}")
            validation = frame.filter(F.col(indicator))
            frame = frame.filter(~F.col(indicator))
        callbacks = []
        if self.getMlflow():
            from .tracking import MLflowLogger
            callbacks.append(MLflowLogger(experiment=self.getMlflowExperiment(), nested=True))
        elif self.getMlflowExperiment() is not None:
            raise ConfigError(f"mlflowExperiment={self.getMlflowExperiment()!r} names where mlflow=True logs; "
                              f"set mlflow=True too")
        trained = fit(frame, config, features_col=features, label_col=self.getLabelCol(),
                      network=network, verbose=self.getVerbose(), validation_df=validation, callbacks=callbacks)
        model = DFNetModel(trained)
        self._copyValues(model)
        model._describe_network()
        return model

    # --- persistence -----------------------------------------------------------------
    def write(self) -> MLWriter:
        """A writer of the Params (``path/metadata``) that never replaces a path without ``overwrite()``."""
        return _DFNetWriter(self)

    @classmethod
    def read(cls) -> MLReader["DFNetClassifier"]:
        return _DFNetReader(cls)


class DFNetModel(ProbabilisticClassificationModel, _DFNetParams, MLReadable["DFNetModel"], MLWritable):
    """A trained dfnet network as a Spark ML Model (see the module docstring for its columns and files).

    Build one with :meth:`DFNetClassifier.fit`, :meth:`from_trained` (any
    :class:`~dfnet.model.TrainedModel`, e.g. from :func:`dfnet.fit`) or
    :meth:`load`; :attr:`trained_model` gives dfnet's own model back.
    """

    def __init__(self, trained: TrainedModel | None = None):
        super().__init__()
        self._trained = trained

    @classmethod
    def from_trained(cls, trained: TrainedModel, **params: Any) -> "DFNetModel":
        """Wrap a TrainedModel. Its TrainConfig fills the training Params; ``params`` (e.g.
        ``featuresCol="image"``) set any others."""
        model = cls(trained)
        if trained.config is not None:
            model._set_or_clear(**{name: getattr(trained.config, field) for name, field in PARAM_FIELDS.items()
                                   if getattr(trained.config, field) is not None})
        model._describe_network()
        return model._set_or_clear(**params)

    def _describe_network(self) -> None:
        """``layers`` = the layer sizes when the network is an MLP, so ``getLayers()`` works as in
        MLlib; unset for any other network (a CNN's sizes are in its architecture)."""
        network = self.trained_model.network
        dense = [layer for layer in network.layers if isinstance(layer, Dense)]
        if dense and all(isinstance(layer, (Dense, Dropout, *ACTIVATIONS.values())) for layer in network.layers):
            self._set(layers=[dense[0].n_in] + [layer.n_out for layer in dense])
        else:
            self.clear(self.layers)

    @property
    def trained_model(self) -> TrainedModel:
        if self._trained is None:
            raise ModelFormatError("this DFNetModel holds no network: get one from DFNetClassifier.fit, "
                                   "DFNetModel.from_trained or DFNetModel.load")
        return self._trained

    @property
    def network(self) -> Sequential:
        return self.trained_model.network

    @property
    def weights(self) -> DenseVector:
        """The flat parameter vector (as MLlib's MLP model has it)."""
        return DenseVector(self.trained_model.params.astype(np.float64))

    @property
    def history(self) -> list[dict]:
        """One dict per training epoch: loss, accuracy, rows, steps, seconds."""
        return self.trained_model.history

    @property
    def numFeatures(self) -> int:
        return self.network.num_features

    @property
    def numClasses(self) -> int:
        return self.network.num_classes

    # --- scoring -------------------------------------------------------------------
    def _scorer(self) -> ClassScorer:
        return ClassScorer(self.network, self._optional(self.thresholds))

    def _score_one(self, value: Vector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(value.toArray() if isinstance(value, Vector) else value, dtype=self.network.dtype)
        if x.shape != (self.numFeatures,):
            raise DataValidationError(f"features must have {self.numFeatures} values, got shape {x.shape}")
        return self._scorer()(self.trained_model.params, x[None, :])

    def predictRaw(self, value: Vector) -> DenseVector:
        """Class log-probabilities of one feature vector."""
        return DenseVector(self._score_one(value)[0][0])

    def predictProbability(self, value: Vector) -> DenseVector:
        return DenseVector(self._score_one(value)[1][0])

    def predict(self, value: Vector) -> float:
        return float(self._score_one(value)[2][0])

    def _transform(self, dataset: DataFrame) -> DataFrame:
        network, features = self.network, self.getFeaturesCol()
        outputs = {"raw": self.getRawPredictionCol(), "probability": self.getProbabilityCol(),
                   "prediction": self.getPredictionCol()}
        if not any(outputs.values()):
            warnings.warn(f"{type(self).__name__}.transform: every output column is set to '', nothing to add")
            return dataset
        arrays = _feature_arrays(dataset, features, network.dtype.name)
        # Vectors are scored from an array copy beside them (the output keeps the user's column).
        frame = dataset if arrays is None else dataset.withColumn(_FEATURES_ARRAY_COL, arrays)
        out = predict(frame, network, self.trained_model.params,
                      features_col=features if arrays is None else _FEATURES_ARRAY_COL,
                      prediction_col=outputs["prediction"] or None, probability_col=outputs["probability"] or None,
                      raw_prediction_col=outputs["raw"] or None, thresholds=self._optional(self.thresholds),
                      validate=False)  # lazy: its own checks (output names, thresholds) need no job
        # One job checks the features, under the user's column name so that errors name it. A
        # stream cannot run it: its rows are only checked as the network reads them.
        if not dataset.isStreaming:
            validate_frame(dataset if arrays is None else dataset.withColumn(features, arrays), features, None,
                           network.num_features, None)
        converted = {name: array_to_vector(F.col(name)) for name in (outputs["raw"], outputs["probability"]) if name}
        if outputs["prediction"]:
            converted[outputs["prediction"]] = F.col(outputs["prediction"]).cast(T.DoubleType())
        out = out.withColumns(converted)
        return out if arrays is None else out.drop(_FEATURES_ARRAY_COL)

    # --- persistence -----------------------------------------------------------------
    def write(self) -> MLWriter:
        """A writer of ``path/metadata`` (Params) and ``path/data`` (network and weights, Parquet)."""
        return _DFNetWriter(self)

    @classmethod
    def read(cls) -> MLReader["DFNetModel"]:
        return _DFNetReader(cls)

    def __repr__(self) -> str:
        if self._trained is None:
            return f"DFNetModel: uid={self.uid}, no network"
        return (f"DFNetModel: uid={self.uid}, numFeatures={self.numFeatures}, numClasses={self.numClasses}, "
                f"params={self.network.num_params}")


# --- helpers ---------------------------------------------------------------------------

def _checked_layers(layers: list[int]) -> list[int]:
    if len(layers) < 2 or any(size < 1 for size in layers):
        raise ConfigError(f"layers={layers!r}: need [input size, hidden sizes..., number of classes], all >= 1")
    return layers


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _feature_arrays(df: DataFrame, column: str, dtype: str) -> Column | None:
    """None when ``column`` holds arrays dfnet reads as they are; for a column of Spark ML vectors
    (dense or sparse) the expression converting them in the JVM into arrays of ``dtype``."""
    types = {f.name: f.dataType for f in df.schema.fields}
    if column not in types:
        check_columns(df, column, None)  # raises, listing the columns there are
    kind = types[column]
    if isinstance(kind, VectorUDT):
        return vector_to_array(F.col(column), dtype)
    if not isinstance(kind, T.ArrayType):
        raise DataValidationError(f"column {column!r} must hold vectors (pyspark.ml.linalg) or arrays of numbers, "
                                  f"got {kind.simpleString()}")
    return None


def _child(path: str, name: str) -> str:
    return path.rstrip("/") + "/" + name


#: A model's data folder: ``data`` (saved before overwrites were staged) or ``data-<ns>-<hex>``,
#: a fresh name per save, so a save never writes where the model being replaced lives.
_DATA_DIR = re.compile(r"^data(?:-(\d+)-[0-9a-f]+)?$")


def _write_metadata(spark: SparkSession, path: str, metadata_json: str) -> None:
    """``path/metadata``: the one JSON line of pyspark.ml's DefaultParamsWriter, replacing any."""
    spark.createDataFrame([(metadata_json,)], "value string").coalesce(1).write.mode("overwrite") \
        .text(_child(path, "metadata"))


class _DFNetWriter(MLWriter):
    """Writes an estimator's or a model's files (see the module docstring) with Spark's writers
    only, on classic and Connect sessions; refuses an existing path unless ``overwrite()``.

    A model's weights go to a data folder of a fresh name, then the metadata that names it
    replaces the old one, then the old data folder is pruned: until the new model is whole the old
    one loads, and from then on the new one (the data row carries the metadata too, so a save
    stopped between the two writes still loads the new model).
    """

    def __init__(self, instance: DFNetClassifier | DFNetModel):
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:
        spark = self.sparkSession
        existing = spark_files(spark, path)
        if existing and not self.shouldOverwrite:
            raise OutputExistsError(f"{path} already exists; use write().overwrite().save(path) to replace it")
        self.saveImpl(path)
        if isinstance(self.instance, DFNetModel):
            for folder in live_folders(existing):
                if _DATA_DIR.match(folder):
                    prune_folder(spark, _child(path, folder))

    def saveImpl(self, path: str) -> None:
        spark = self.sparkSession
        extra = None
        if isinstance(self.instance, DFNetModel):
            data = f"data-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
            extra = {"numFeatures": self.instance.numFeatures, "numClasses": self.instance.numClasses,
                     "dataFormatVersion": DATA_FORMAT_VERSION, "dataPath": data}
        metadata = DefaultParamsWriter._get_metadata_to_save(self.instance, ml_context(spark), extra)
        if extra is not None:
            _model_data(spark, self.instance.trained_model, metadata).coalesce(1).write.parquet(_child(path, data))
        _write_metadata(spark, path, metadata)


def _model_data(spark: SparkSession, trained: TrainedModel, metadata_json: str | None = None) -> DataFrame:
    """The one-row DataFrame of a model's data folder (built from Arrow: no Python object per
    weight), with the metadata JSON that names it."""
    import pyarrow as pa

    table = pa.table({
        "format_version": pa.array([DATA_FORMAT_VERSION], pa.int32()),
        "network": pa.array([trained.network.to_json()], pa.string()),
        "weights": pa.array([trained.params.astype(np.float64)], pa.list_(pa.float64())),
        "config": pa.array([json.dumps(trained.config.to_dict()) if trained.config else None], pa.string()),
        "history": pa.array([json.dumps(trained.history)], pa.string()),
        "class_names": pa.array([list(trained.class_names) if trained.class_names else None], pa.list_(pa.string())),
        "run_id": pa.array([trained.run_id], pa.string()),
        "metadata": pa.array([metadata_json], pa.string()),
    })
    return create_dataframe(spark, table)


class _DFNetReader(MLReader):
    """Reads what :class:`_DFNetWriter` wrote, checking the saved class; for a model also dfnet's
    own folder of ``model.json`` + ``weights.npy``."""

    def __init__(self, cls: type):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        spark = self.sparkSession
        files = spark_files(spark, path)
        folders = live_folders(files)
        if "metadata" in folders:
            return self._load_spark_ml(path, DefaultParamsReader.loadMetadata(path, ml_context(spark)))
        if issubclass(self.cls, DFNetModel):
            if "model.json" in files:
                return self.cls.from_trained(_read_dfnet_folder(spark, path))
            data = sorted((f for f in folders if _DATA_DIR.match(f)), key=_data_order)
            if data:  # a save stopped between its data and its metadata: the data row has both
                return self._load_spark_ml(path, None, data[-1])
        hint = f"; the model of a dfnet run folder is in {_child(path, 'model')}" if "model/model.json" in files else ""
        raise ModelFormatError(f"{path}: not a saved {self.cls.__name__} (no metadata/"
                               f"{' and no model.json' if issubclass(self.cls, DFNetModel) else ''}){hint}")

    def _load_spark_ml(self, path: str, metadata: dict | None, data: str | None = None):
        spark = self.sparkSession
        trained = None
        if issubclass(self.cls, DFNetModel) and (metadata is None or metadata.get("class") == _class_name(self.cls)):
            data = data or (metadata or {}).get("dataPath", "data")
            trained, saved_metadata = _read_model_data(spark, path, data)
            metadata = metadata or saved_metadata
        if metadata is None or metadata.get("class") != _class_name(self.cls):
            found = None if metadata is None else metadata.get("class")
            raise ModelFormatError(f"{path} holds a {found}, not a {_class_name(self.cls)}")
        instance = self.cls(trained) if trained is not None else self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        return instance


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


def _data_order(folder: str) -> int:
    match = _DATA_DIR.match(folder)
    return int(match.group(1) or 0)


def _read_model_data(spark: SparkSession, path: str, data: str = "data") -> tuple[TrainedModel, dict | None]:
    """The TrainedModel in ``path/<data>`` (Parquet, one row), and the metadata saved with it
    (None for a model saved before the row carried it)."""
    source = _child(path, data)
    try:
        table = to_arrow(spark.read.parquet(source))
    except spark_errors() as e:
        raise ModelFormatError(f"{path}: cannot read the model data in {source} ({first_line(e)})") from e
    if table.num_rows != 1:
        raise ModelFormatError(f"{source}: expected one row, found {table.num_rows}")
    row = {name: table.column(name)[0] for name in table.column_names}
    try:
        version = row["format_version"].as_py()
        if version != DATA_FORMAT_VERSION:
            raise ModelFormatError(f"{source}: data format version {version!r}, this dfnet reads "
                                   f"{DATA_FORMAT_VERSION}")
        network = Sequential.from_config(json.loads(row["network"].as_py()))
        weights = row["weights"].values.to_numpy(zero_copy_only=False)
        config_text = row["config"].as_py()
        config = TrainConfig.from_dict(json.loads(config_text)) if config_text else None
        history = json.loads(row["history"].as_py())
        class_names = row["class_names"].as_py()
        run_id = row["run_id"].as_py() if "run_id" in row else None  # saved before run ids existed
        metadata_text = row["metadata"].as_py() if "metadata" in row else None
        metadata = json.loads(metadata_text) if metadata_text else None
    except ModelFormatError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ModelFormatError(f"{source}: corrupt model data ({type(e).__name__}: {e})") from e
    if weights.shape != (network.num_params,):
        raise ModelFormatError(f"{source}: holds {weights.size} weights, the architecture needs {network.num_params}")
    return TrainedModel(network, weights.astype(network.dtype), config, history, class_names, run_id), metadata


def _read_dfnet_folder(spark: SparkSession, path: str) -> TrainedModel:
    """dfnet's own model folder, read with Spark: ``model.json`` as whole text, ``weights.npy`` as
    binaryFile bytes."""
    try:
        text = spark.read.text(_child(path, "model.json"), wholetext=True).first()
        weights = spark.read.format("binaryFile").load(_child(path, "weights.npy")).select("content").first()
    except AnalysisException as e:
        raise ModelFormatError(f"{path}: not a dfnet model folder ({first_line(e)})") from e
    if text is None or weights is None:
        raise ModelFormatError(f"{path}: not a dfnet model folder (model.json or weights.npy is missing)")
    return TrainedModel.from_saved(text[0], bytes(weights[0]), source=path)
