"""Predictions and metrics, computed in Spark.

``predict`` adds ``prediction`` (int) and ``probability`` (array<double>)
columns with a ``mapInPandas`` pass that keeps every other column.
``evaluate`` builds the confusion matrix with ``groupBy(label, prediction)``
and derives per-class TP/FP/FN/TN, precision, recall and F1 from it in Spark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .engine.data import validate_frame
from .errors import DataValidationError
from .nn.network import Sequential


def predict(df: DataFrame, network: Sequential, params: np.ndarray, *, features_col: str = "image",
            prediction_col: str = "prediction", probability_col: str = "probability",
            validate: bool = True) -> DataFrame:
    """``df`` with the predicted class index and the class probabilities appended (lazy)."""
    for name in (prediction_col, probability_col):
        if name in df.columns:
            raise DataValidationError(f"column {name!r} already exists; choose another output column name")
    if validate:
        validate_frame(df, features_col, None, network.num_features, None)
    schema = T.StructType(df.schema.fields + [
        T.StructField(prediction_col, T.IntegerType(), False),
        T.StructField(probability_col, T.ArrayType(T.DoubleType(), False), False),
    ])
    broadcast = df.sparkSession.sparkContext.broadcast(params)

    def per_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        weights = broadcast.value
        for pdf in batches:
            if len(pdf) == 0:
                continue
            X = np.stack(pdf[features_col].to_numpy()).astype(network.dtype, copy=False)
            probs = network.forward(weights, X).astype(np.float64)
            pdf[prediction_col] = np.argmax(probs, axis=1).astype(np.int32)
            pdf[probability_col] = list(probs)
            yield pdf

    return df.mapInPandas(per_partition, schema)


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
