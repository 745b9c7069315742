"""Predictions and metrics, computed in Spark.

``predict`` adds ``prediction`` (int), ``probability`` and optionally raw
scores (array<double>) with a scalar pandas UDF on the features column alone,
so every other column stays in the JVM untouched.
``evaluate`` builds the confusion matrix with ``groupBy(label, prediction)``
and derives per-class TP/FP/FN/TN, precision, recall and F1 from it in Spark.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .engine.data import validate_frame
from .errors import ConfigError, DataValidationError
from .nn.layers import Sigmoid, Softmax
from .nn.network import Sequential
from .session import weights_for_tasks


class ClassScorer:
    """A network's class scores in the form Spark ML classifiers report them.

    Calling it on a batch ``X`` of shape ``(n, num_features)`` returns

    - ``raw`` : ``(n, k)`` float64 log-probabilities. For a softmax output they
      are the log-softmax of the logits (the final layer's input), computed in
      float64 so they stay finite where a probability underflows;
      ``softmax(raw) == probability``. Being increasing in the probability,
      ``raw[:, 1]`` ranks rows like ``probability[:, 1]`` (what
      ``BinaryClassificationEvaluator`` reads); raw logits would not.
    - ``probability`` : ``(n, k)`` float64 rows summing to 1. A softmax
      output as the network computes it; a sigmoid output (the classic MSE
      network) normalised to sum to 1, ``sigmoid(z_i) / sum_j sigmoid(z_j)``;
      any other output ``softmax(output)``.
    - ``prediction`` : ``(n,)`` int32, ``argmax(probability)``; with
      ``thresholds`` (one per class, >= 0, at most one 0) the class of largest
      ``probability / threshold``, as in Spark ML.
    """

    def __init__(self, network: Sequential, thresholds: Sequence[float] | None = None):
        self.network = network
        last = network.layers[-1]
        #: The layers before a final softmax or sigmoid: their output is the logits. The final
        #: activation has no parameters, so the head reads the same flat vector.
        self.head = (Sequential(network.layers[:-1], network.loss, network.input_shape, network.dtype)
                     if len(network.layers) > 1 and isinstance(last, (Softmax, Sigmoid)) else None)
        self.thresholds = None if thresholds is None else check_thresholds(thresholds, network.num_classes)

    def __call__(self, params: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        last = self.network.layers[-1]
        if self.head is None:
            raw = _log_softmax(self.network.forward(params, X).astype(np.float64))
            probability = np.exp(raw)
        else:
            logits = self.head.forward(params, X)
            if isinstance(last, Softmax):
                probability = last.forward([], logits)[0].astype(np.float64)
                raw = _log_softmax(logits.astype(np.float64))
            else:  # sigmoid: log(sigmoid(z_i) / sum_j sigmoid(z_j)), without underflow
                raw = _log_softmax(-np.logaddexp(0.0, -logits.astype(np.float64)))
                probability = np.exp(raw)
        if self.thresholds is None:
            prediction = np.argmax(probability, axis=1)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                scaled = probability / self.thresholds
            prediction = np.argmax(np.where(np.isnan(scaled), -np.inf, scaled), axis=1)  # 0/0 never wins
        return raw, probability, prediction.astype(np.int32)


def _log_softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))


def check_thresholds(thresholds: Sequence[float], num_classes: int) -> np.ndarray:
    """Spark ML's rule: one threshold per class, each >= 0, at most one of them 0."""
    values = np.asarray(list(thresholds), dtype=np.float64)
    if values.shape != (num_classes,) or not np.all(values >= 0) or np.sum(values == 0) > 1:
        raise ConfigError(f"thresholds={list(thresholds)!r}: need one value per class ({num_classes}), "
                          f"each >= 0 and at most one of them 0")
    return values


#: Spark 4.3 feeds a pandas UDF straight from a columnar scan (e.g. Parquet) when this is true,
#: and then fails on ANY user-defined-type column the scan carries, such as Spark ML vectors, even
#: one the UDF never reads ([UNSUPPORTED_DATATYPE] in RowToColumnConverter).
COLUMNAR_UDF_INPUT = "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"


def _has_udt(kind: T.DataType) -> bool:
    if isinstance(kind, T.UserDefinedType):
        return True
    if isinstance(kind, T.StructType):
        return any(_has_udt(f.dataType) for f in kind.fields)
    if isinstance(kind, T.ArrayType):
        return _has_udt(kind.elementType)
    if isinstance(kind, T.MapType):
        return _has_udt(kind.keyType) or _has_udt(kind.valueType)
    return False


def allow_udt_columns(df: DataFrame) -> None:
    """Switch off :data:`COLUMNAR_UDF_INPUT` in ``df``'s session, with a warning, when ``df`` has a
    user-defined-type column that the setting would make a pandas UDF fail on.

    The plan runs lazily, after this returns, so the setting cannot be restored
    afterwards; it only turns off an optimisation, never changes results.
    """
    if not _has_udt(df.schema):
        return
    conf = df.sparkSession.conf
    try:
        enabled = str(conf.get(COLUMNAR_UDF_INPUT)).lower() == "true"
    except Exception:  # a Spark without the setting has no such failure
        return
    if enabled:
        conf.set(COLUMNAR_UDF_INPUT, "false")
        warnings.warn(f"dfnet set {COLUMNAR_UDF_INPUT}=false for this session: with it, Spark 4.3 fails "
                      f"(UNSUPPORTED_DATATYPE) on a pandas UDF over a scan that carries vector/UDT columns",
                      stacklevel=3)


_SCORES_COL = "__dfnet_scores"
_SCORE_FIELDS = {"prediction": T.IntegerType(), "probability": T.ArrayType(T.DoubleType(), False),
                 "raw": T.ArrayType(T.DoubleType(), False)}


def predict(df: DataFrame, network: Sequential, params: np.ndarray, *, features_col: str = "image",
            prediction_col: str | None = "prediction", probability_col: str | None = "probability",
            raw_prediction_col: str | None = None, thresholds: Sequence[float] | None = None,
            validate: bool = True) -> DataFrame:
    """``df`` with the predicted class index, class probabilities and (when named) raw scores appended (lazy).

    Adds ``prediction_col`` (int), ``probability_col`` and ``raw_prediction_col``
    (``array<double>`` of ``num_classes``), each left out when None; see
    :class:`ClassScorer` for what they hold. Every other column is kept as it is:
    only the features column goes through Python (a scalar pandas UDF), so
    columns Arrow cannot carry to pandas, such as Spark ML vectors, pass
    untouched. With ``validate``, one Spark job checks the features first.
    """
    outputs = {kind: name for kind, name in (("prediction", prediction_col), ("probability", probability_col),
                                              ("raw", raw_prediction_col)) if name}
    for name in outputs.values():
        if name in df.columns:
            raise DataValidationError(f"column {name!r} already exists; choose another output column name")
    if len(set(outputs.values())) < len(outputs):
        raise DataValidationError(f"output columns must have distinct names, got {list(outputs.values())}")
    scorer = ClassScorer(network, thresholds)
    if validate:
        validate_frame(df, features_col, None, network.num_features, None)
    if not outputs:
        return df
    allow_udt_columns(df)
    schema = T.StructType([T.StructField(kind, _SCORE_FIELDS[kind]) for kind in outputs])  # Arrow hands back nullable fields
    weights = weights_for_tasks(df.sparkSession, params)  # lives as long as the returned frame

    @F.pandas_udf(schema)
    def scores(images: pd.Series) -> pd.DataFrame:
        if len(images) == 0:
            return pd.DataFrame({kind: pd.Series([], dtype=object) for kind in outputs})
        X = np.stack(images.to_numpy()).astype(network.dtype, copy=False)
        raw, probability, prediction = scorer(weights.value, X)
        columns = {"prediction": prediction, "probability": list(probability), "raw": list(raw)}
        return pd.DataFrame({kind: columns[kind] for kind in outputs})

    scored = df.withColumn(_SCORES_COL, scores(F.col(features_col)))
    return scored.withColumns({name: F.col(_SCORES_COL).getField(kind) for kind, name in outputs.items()}) \
        .drop(_SCORES_COL)


@dataclass
class Evaluation:
    """Test-set figures. ``confusion[i, j]`` counts rows of true class i predicted as j."""

    confusion: np.ndarray
    per_class: list[dict]  # class, tp, fp, fn, tn, precision, recall, f1, support
    class_names: Sequence[str] | None = None

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.confusion.sum(), 1))

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def as_dict(self) -> dict:
        return {"test_accuracy": self.accuracy, "count": self.count, "confusion_matrix": self.confusion.tolist(),
                "per_class": self.per_class,
                "macro_f1": float(np.mean([c["f1"] for c in self.per_class]))}

    def report(self) -> str:
        """Confusion matrix and one block of figures per class."""
        k = self.confusion.shape[0]
        names = list(self.class_names) if self.class_names else [str(i) for i in range(k)]
        width = max(6, max(len(str(v)) for v in self.confusion.ravel()) + 1)
        lines = [f"Test accuracy {self.accuracy:.4f} on {self.count} rows", "",
                 "Confusion matrix (rows = true class, columns = predicted):",
                 " " * 8 + "".join(f"{i:>{width}}" for i in range(k))]
        lines += [f"{i:>8}" + "".join(f"{v:>{width}}" for v in row) for i, row in enumerate(self.confusion)]
        for c in self.per_class:
            lines += ["", f"Class {c['class']} ({names[c['class']]})",
                      f"  TP {c['tp']}  FP {c['fp']}  FN {c['fn']}  TN {c['tn']}",
                      f"  precision {c['precision']:.4f}  recall {c['recall']:.4f}  F1 {c['f1']:.4f}"]
        return "\n".join(lines)


def confusion_counts(predictions: DataFrame, *, label_col: str = "label",
                     prediction_col: str = "prediction") -> DataFrame:
    """``(label, prediction, n)`` rows: the sparse confusion matrix, computed in Spark."""
    return (predictions.groupBy(F.col(label_col).cast("int").alias("label"),
                                F.col(prediction_col).cast("int").alias("prediction"))
            .agg(F.count(F.lit(1)).alias("n")))


def per_class_metrics(counts: DataFrame, num_classes: int) -> DataFrame:
    """Per-class TP, FP, FN, TN, precision, recall and F1 from confusion counts, in Spark.

    A class never predicted has precision 0 (and F1 0), as scikit-learn reports it.
    """
    spark = counts.sparkSession
    classes = spark.range(num_classes).select(F.col("id").cast("int").alias("class"))
    joined = classes.crossJoin(counts)
    agg = joined.groupBy("class").agg(
        F.sum(F.when((F.col("label") == F.col("class")) & (F.col("prediction") == F.col("class")), F.col("n"))
              .otherwise(0)).alias("tp"),
        F.sum(F.when((F.col("label") != F.col("class")) & (F.col("prediction") == F.col("class")), F.col("n"))
              .otherwise(0)).alias("fp"),
        F.sum(F.when((F.col("label") == F.col("class")) & (F.col("prediction") != F.col("class")), F.col("n"))
              .otherwise(0)).alias("fn"),
        F.sum("n").alias("total"),
    )
    tp, fp, fn = F.col("tp"), F.col("fp"), F.col("fn")
    precision = F.when(tp + fp > 0, tp / (tp + fp)).otherwise(F.lit(0.0))
    recall = F.when(tp + fn > 0, tp / (tp + fn)).otherwise(F.lit(0.0))
    return (agg.withColumn("tn", F.col("total") - tp - fp - fn)
            .withColumn("precision", precision)
            .withColumn("recall", recall)
            .withColumn("f1", F.when(F.col("precision") + F.col("recall") > 0,
                                     2 * F.col("precision") * F.col("recall") / (F.col("precision") + F.col("recall")))
                        .otherwise(F.lit(0.0)))
            .withColumn("support", tp + fn)
            .select("class", "tp", "fp", "fn", "tn", "precision", "recall", "f1", "support")
            .orderBy("class"))


def evaluate(predictions: DataFrame, num_classes: int, *, label_col: str = "label",
             prediction_col: str = "prediction", class_names: Sequence[str] | None = None) -> Evaluation:
    """Confusion matrix and per-class metrics of a predictions DataFrame (two small Spark jobs)."""
    counts = confusion_counts(predictions, label_col=label_col, prediction_col=prediction_col).cache()
    try:
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        for row in counts.collect():
            for col, name in ((label_col, "label"), (prediction_col, "prediction")):
                if row[name] is None or not (0 <= row[name] < num_classes):
                    raise DataValidationError(
                        f"column {col!r} holds {name} {row[name]}, outside the model's {num_classes} classes "
                        f"0..{num_classes - 1}")
            confusion[row["label"], row["prediction"]] += row["n"]
        per_class = [{k: (int(v) if k in ("class", "tp", "fp", "fn", "tn", "support") else float(v))
                      for k, v in row.asDict().items()} for row in per_class_metrics(counts, num_classes).collect()]
    finally:
        counts.unpersist()
    return Evaluation(confusion, per_class, class_names)
