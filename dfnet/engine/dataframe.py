"""The DataFrame engine: one training step is one Spark job.

broadcast the flat weights -> ``mapInPandas`` runs the batched forward and
backward pass on each partition's Arrow batches and yields ONE row of partial
sums per partition -> ``groupBy().agg`` adds the rows -> the driver receives
the summed gradient, loss, correct count and row count.

The partial sums travel as one ``array<double>`` per row, packed as
``[gradient..., loss_sum, correct, count]``: a grouped-aggregate pandas UDF
cannot share an ``agg()`` with built-in aggregates, so the scalars ride along.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..nn.network import LossAndGrad, Sequential
from .data import LABEL_COL, X_COL, TrainingData, decode_images, encode_training_data

PARTIAL_COL = "partial"
PARTIAL_SCHEMA = T.StructType([T.StructField(PARTIAL_COL, T.ArrayType(T.DoubleType(), False), False)])
_SCALARS = 3  # loss_sum, correct, count after the gradient


def pack(result: LossAndGrad) -> np.ndarray:
    return np.concatenate([result.grad_sum.astype(np.float64),
                           [result.loss_sum, result.correct, result.count]])


def unpack(vector: np.ndarray) -> LossAndGrad:
    return LossAndGrad(float(vector[-3]), vector[:-_SCALARS], int(round(vector[-2])), int(round(vector[-1])))


@F.pandas_udf(T.ArrayType(T.DoubleType(), False))
def sum_vectors(partials: pd.Series) -> np.ndarray:
    """Grouped-aggregate UDF: element-wise sum of equal-length vectors."""
    return np.sum(np.stack(partials.to_numpy()), axis=0)


def partial_gradient_sums(network: Sequential, broadcast, num_features: int, dtype: str):
    """The ``mapInPandas`` function: one packed partial-sum row per non-empty partition."""

    def per_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        params = broadcast.value
        total = None
        for pdf in batches:
            if len(pdf) == 0:
                continue
            X = decode_images(pdf[X_COL], num_features, dtype)
            part = pack(network.loss_and_grad(params, X, pdf[LABEL_COL].to_numpy()))
            total = part if total is None else total + part
        if total is not None:
            yield pd.DataFrame({PARTIAL_COL: [total]})

    return per_partition


class DataFrameEngine:
    """Computes summed gradients over encoded rows with one Spark job per call."""

    name = "dataframe"

    def __init__(self, network: Sequential):
        self.network = network

    def prepare(self, df: DataFrame, *, features_col: str, label_col: str,
                num_partitions: int | None = None) -> TrainingData:
        """Cache the packed encoding of a validated ``df``."""
        return encode_training_data(df, features_col=features_col, label_col=label_col,
                                    num_features=self.network.num_features, dtype=self.network.dtype.name,
                                    num_partitions=num_partitions)

    def gradient(self, params: np.ndarray, rows: DataFrame) -> LossAndGrad:
        """Sums over ``rows`` (an encoded frame, usually a sample or batch of it) at ``params``."""
        sc = rows.sparkSession.sparkContext
        broadcast = sc.broadcast(params)
        try:
            fn = partial_gradient_sums(self.network, broadcast, self.network.num_features, self.network.dtype.name)
            result = rows.mapInPandas(fn, PARTIAL_SCHEMA).groupBy().agg(sum_vectors(PARTIAL_COL)).first()
        finally:
            # Release the step's weights or executors accumulate one copy per step.
            broadcast.destroy()
        total = result[0]
        if total is None:  # no rows in this sample or batch
            return LossAndGrad(0.0, np.zeros(self.network.num_params), 0, 0)
        return unpack(np.asarray(total, dtype=np.float64))
