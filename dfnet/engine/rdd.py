"""The RDD baselines, kept honest: the same :mod:`dfnet.nn` maths, data moved the old way.

``rdd`` is the classic per-record design: records ``(row, x 1xd, y one-hot 1xk)``
(``x`` is ``1xHxWxC`` for a CNN, whose first convolution cuts its patches inline)
in a cached RDD; a step is a chain of per-record ``map`` steps (one forward map
per layer, the loss and output delta, one backward map per layer that writes
that layer's weight gradients, then cost and correct flag) and ONE ``reduce``
that adds the tuples. ``rdd-batched`` runs the same records through
``mapPartitions`` on stacked batches: vectorized, but pickled rows instead of
Arrow, so benchmarks separate the gain of vectorizing from that of DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from pyspark import RDD, StorageLevel
from pyspark.sql import DataFrame

from ..nn.losses import one_hot
from ..nn.network import LossAndGrad, Sequential
from . import refuse_connect
from .data import arrival_independent

_MASK64 = (1 << 64) - 1
#: Rows stacked at once by rdd-batched: bounds a partition's working memory.
STACK_ROWS = 4096


def _mix64(value: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of an integer."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


@dataclass
class RDDTrainingData:
    """Cached records ``(row, x (1, *input_shape), y one-hot (1, k))`` with the same selections as the
    DataFrame engine's :class:`~dfnet.engine.data.TrainingData`."""

    records: RDD
    count: int

    def all_rows(self) -> RDD:
        return self.records

    def sample(self, fraction: float, seed: int) -> RDD:
        return self.records.sample(False, fraction, seed)

    def batch(self, rows: RDD, k: int, num_batches: int, seed: int) -> RDD:
        salt = _mix64(seed)
        return rows.filter(lambda r: _mix64(r[0] ^ salt) % num_batches == k)

    def num_partitions(self) -> int:
        return self.records.getNumPartitions()

    def release(self) -> None:
        self.records.unpersist()


def to_records(df: DataFrame, network: Sequential, *, features_col: str, label_col: str,
               num_partitions: int | None = None) -> RDDTrainingData:
    """A validated DataFrame as cached per-record numpy tuples (one Spark job fills the cache)."""
    k, dtype, shape = network.num_classes, network.dtype, (1, *network.input_shape)
    source = df.select(features_col, label_col)
    if num_partitions is not None:
        source = arrival_independent(source.repartition(num_partitions), features_col, label_col)

    def records(index: int, rows: Iterator) -> Iterator[tuple]:
        for i, (image, label) in enumerate(rows):
            x = np.asarray(image, dtype=dtype).reshape(shape)  # (1, d) for an MLP, (1, H, W, C) for a CNN
            yield (index << 33) + i, x, one_hot(np.array([int(label)]), k, dtype)

    rdd = source.rdd.mapPartitionsWithIndex(records).persist(StorageLevel.MEMORY_AND_DISK)
    return RDDTrainingData(rdd, rdd.count())


class _RDDEngine:
    def __init__(self, network: Sequential):
        self.network = network

    def prepare(self, df: DataFrame, *, features_col: str, label_col: str,
                num_partitions: int | None = None) -> RDDTrainingData:
        refuse_connect(df.sparkSession, self.name)
        return to_records(df, self.network, features_col=features_col, label_col=label_col,
                          num_partitions=num_partitions)

    def aggregation_for(self, asked: str, tasks: int) -> str:
        """The RDD baselines add their tuples with one ``reduce``, whatever was asked."""
        return "reduce"

    def gradient(self, params: np.ndarray, rows: RDD, noise_key: tuple[int, int, int] | None = None, *,
                 aggregate: str | None = None) -> LossAndGrad:
        """Sums over ``rows`` at ``params`` (one job); the baselines have no dropout keys and one
        way of adding (``aggregate`` is accepted for the common engine interface)."""
        if noise_key is not None:
            raise ValueError(f"the {self.name} engine has no dropout: its records carry no row keys")
        broadcast = rows.context.broadcast(params)
        try:
            total = self._summed(broadcast, rows)
        finally:
            broadcast.destroy()
        if total is None:
            return LossAndGrad(0.0, np.zeros(self.network.num_params), 0, 0)
        grad, loss, correct, count = total
        return LossAndGrad(float(loss), grad, int(correct), int(count))

    def _summed(self, broadcast, rows: RDD):
        raise NotImplementedError


def _add(a: tuple, b: tuple) -> tuple:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]


def _reduce(tuples: RDD) -> tuple | None:
    """``reduce(_add)``, or None for no rows (one job either way, unlike isEmpty + reduce)."""
    try:
        return tuples.reduce(_add)
    except ValueError as e:  # pyspark: "Can not reduce() empty RDD"
        if "empty RDD" in str(e):
            return None
        raise


class RDDPerRecordEngine(_RDDEngine):
    """The classic design: a chain of per-record maps and one reduce per step."""

    name = "rdd"

    def _summed(self, broadcast, rows: RDD):
        net = self.network
        depth = len(net.body)

        def start(record):
            _, x, y = record
            return x, y, []  # running activation, target, per-layer caches

        def forward(i):
            def step(state):
                out, y, caches = state
                out, cache = net.body[i].forward(net.unflatten(broadcast.value)[i], out)
                return out, y, caches + [cache]
            return step

        def loss(state):
            out, y, caches = state
            label = y.argmax(axis=1)
            cost, probs, delta = net.head(out, label)
            correct = int(probs.argmax(axis=1)[0] == label[0])
            return delta, caches, np.zeros(net.num_params, dtype=np.float64), cost, correct

        def backward(i):
            def step(state):
                delta, caches, grad, cost, correct = state
                delta = net.backward_layer(i, net.unflatten(broadcast.value)[i], caches[i], delta, grad)
                return delta, caches, grad, cost, correct
            return step

        chain = rows.map(start)
        for i in range(depth):
            chain = chain.map(forward(i))
        chain = chain.map(loss)
        for i in reversed(range(depth)):
            chain = chain.map(backward(i))
        tuples = chain.map(lambda s: (s[2], s[3], s[4], 1))
        return _reduce(tuples)


class RDDBatchedEngine(_RDDEngine):
    """``mapPartitions`` over stacked records: vectorized numpy on pickled rows."""

    name = "rdd-batched"

    def _summed(self, broadcast, rows: RDD):
        net = self.network

        def per_partition(records: Iterator[tuple]) -> Iterator[tuple]:
            params = broadcast.value
            total, chunk = None, []
            for record in records:
                chunk.append(record)
                if len(chunk) == STACK_ROWS:
                    total = _accumulate(total, net, params, chunk)
                    chunk = []
            if chunk:
                total = _accumulate(total, net, params, chunk)
            if total is not None:
                yield total

        sums = rows.mapPartitions(per_partition)
        return _reduce(sums)


def _accumulate(total, net: Sequential, params: np.ndarray, chunk: list) -> tuple:
    X = np.concatenate([r[1] for r in chunk])
    labels = np.concatenate([r[2] for r in chunk]).argmax(axis=1)
    r = net.loss_and_grad(params, X, labels)
    part = (r.grad_sum.astype(np.float64), r.loss_sum, r.correct, r.count)
    return part if total is None else _add(total, part)
