"""The Spark ML Estimator and Model: Params -> TrainConfig -> :func:`dfnet.train.fit`, and scoring."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
from pyspark import keyword_only
from pyspark.ml.classification import ProbabilisticClassificationModel, ProbabilisticClassifier
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseVector, Vector, VectorUDT
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..config import TrainConfig
from ..engine.data import check_columns, validate_frame
from ..errors import ConfigError, DataValidationError, ModelFormatError
from ..evaluate import ClassScorer, predict
from ..model import TrainedModel
from ..nn.layers import ACTIVATIONS, Dense, Dropout
from ..nn.network import Sequential
from ..train import build_network, fit
from .io import DFNetReader, DFNetWriter
from .params import _config_params, _DFNetParams, add_setters, keyword_signature

#: Temporary array copy of a vector features column during transform.
_FEATURES_ARRAY_COL = "__dfnet_features"


class DFNetClassifier(ProbabilisticClassifier, _DFNetParams, MLReadable["DFNetClassifier"],
                      MLWritable):
    """Trains a dfnet network on a DataFrame, as a Spark ML Estimator.

    ``layers`` gives an MLP like MLlib's ``MultilayerPerceptronClassifier``
    (with dfnet's ``activation`` and softmax cross-entropy); ``architecture``
    any dfnet network, CNNs included, and wins when both are set. ``maxIter``
    is the number of epochs, ``stepSize`` the learning rate; every training
    Param sets one TrainConfig field (:data:`~dfnet.ml.params.PARAM_FIELDS`),
    and ``__init__`` / ``setParams`` take one keyword per Param. Bad Params
    raise :class:`~dfnet.errors.ConfigError` naming the Param, bad data
    :class:`~dfnet.errors.DataValidationError` naming the column, both before
    any training; an unknown keyword is a ``TypeError`` naming it.

    Without ``layers`` or ``architecture`` the number of classes is the
    largest label + 1 of the data being fitted, so under ``CrossValidator`` a
    fold missing the top class would get a smaller output layer: set
    ``layers`` to pin it.
    """

    _input_kwargs: dict[str, Any]

    # The keyword signatures and the setters are generated from the Params (dfnet.ml.params), below.
    @keyword_only
    def __init__(self, **params: Any):
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **params: Any) -> "DFNetClassifier":
        """Set the given Params (keyword only); None unsets one. An unknown name is a TypeError."""
        return self._set_or_clear(**self._input_kwargs)

    # --- training --------------------------------------------------------------------
    def train_config(self) -> TrainConfig:
        """The validated TrainConfig these Params describe (errors name the Param)."""
        network = self._given_network()
        values = self._config_values()
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
            from ..tracking import MLflowLogger
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
        return DFNetWriter(self)

    @classmethod
    def read(cls) -> MLReader["DFNetClassifier"]:
        return DFNetReader(cls)


add_setters(DFNetClassifier)
DFNetClassifier.__init__.__signature__ = keyword_signature(DFNetClassifier)
DFNetClassifier.setParams.__signature__ = keyword_signature(DFNetClassifier, returns="DFNetClassifier")


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
            model._set_or_clear(**_config_params(trained.config))
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
        """A writer of ``path/metadata`` (Params) and ``path/data-<ns>-<hex>`` (the model record and
        weights, Parquet)."""
        return DFNetWriter(self)

    @classmethod
    def read(cls) -> MLReader["DFNetModel"]:
        return DFNetReader(cls)

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

