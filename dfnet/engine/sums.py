"""How a step's partial rows travel and add up: one packed vector per task, summed in partition order.

Each task of a step emits its packed partial vector ``[values..., loss_sum,
correct, count]``; :class:`PartialLayout` says how it travels and how the P
vectors are added:

- ``collect``: the P rows stream to the driver as Arrow, which adds them. No
  shuffle stage, but P vectors converge on the driver's link.
- ``agg``: ``groupBy().agg`` adds them on ONE reduce task, which sends one
  vector to the driver. The driver holds one vector; the reduce task's link
  carries P.
- ``sharded``: every task cuts its vector into K contiguous chunk rows;
  ``repartition(K, chunk)`` sends each chunk to its own reduce task (the chunk
  keys are chosen so that Spark's hash partitioning maps key i to reduce task
  i, :func:`shard_keys`), ``groupBy(chunk)`` adds it there, and the driver
  receives K slices, W values in all. No link carries more than a task's W
  values plus 1/K of the sum (BigDL's reduce-scatter, done by a shuffle).

Every way adds each element over the tasks in increasing partition order
(:func:`ordered_sum`), in float64, so they give the same bits, and a retried
task or a different finishing order changes nothing. ``float32`` partials
halve the bytes on the wire (each task's sum is rounded to float32 once before
it leaves; the adding stays float64).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..compat import to_arrow
from ..config import AGGREGATES, PARTIAL_DTYPES
from ..session import ClusterShape, session_setting

PARTIAL_COL = "partial"
PARTITION_COL = "partition"
CHUNK_COL = "chunk"
PARTIAL_SCHEMA = T.StructType([T.StructField(PARTITION_COL, T.IntegerType(), False),
                               T.StructField(PARTIAL_COL, T.ArrayType(T.DoubleType(), False), False)])
#: The ways a step adds its rows: TrainConfig's aggregates but ``auto``, which resolves to one of them.
AGGREGATIONS = tuple(a for a in AGGREGATES if a != "auto")

#: ``auto`` collects while tasks x values stays at or below this on one machine (256 MB of float64
#: on the driver per step; there the "network" is memory, and a shuffle stage costs more).
COLLECT_LIMIT = 1 << 25
#: ... and at or below this across executors, where collect's P vectors converge on the driver's
#: link (128 MB a step: 0.11 s at 10 Gbit/s, about what a sharded step's extra shuffle stage costs;
#: on slower links sharded wins sooner: ask for it. docs/performance.md, "Network-bound cost").
CLUSTER_COLLECT_LIMIT = 1 << 24
#: A shard holds at least this many values (16 KB): smaller ones cost a reduce task each for little spread.
SHARD_MIN_VALUES = 2048


def ordered_sum(partitions, vectors) -> np.ndarray | None:
    """The element-wise float64 sum of ``vectors`` (a sequence of equal-length vectors, None
    entries skipped), added one by one in increasing order of their ``partitions`` ids: the same
    bits whatever order the rows arrived in. None when there is no vector."""
    total = None
    for i in np.argsort(np.asarray(partitions), kind="stable"):
        vector = vectors[i]
        if vector is None:
            continue
        if total is None:
            total = np.array(vector, dtype=np.float64, copy=True)
        else:
            total += vector
    return total


def _sum_vectors(partitions: pd.Series, partials: pd.Series) -> np.ndarray:
    return ordered_sum(partitions.to_numpy(), partials.to_numpy())


def make_sum_vectors():
    """A new grouped-aggregate pandas UDF ``(partition, partial)``: the :func:`ordered_sum` of
    equal-length vectors.

    Made per engine, not once per module: pyspark binds a UDF's JVM side to
    the SparkContext that first used it, so a module-level UDF breaks (one
    "Failed to update accumulator" error per task) after a notebook restarts
    its session.

    Its elements are nullable: pandas' conversion of the result to Arrow turns
    NaN (pandas' missing value) into null, so a diverged sum arrives with
    nulls, which :func:`sum_on_driver` reads back as NaN for the divergence
    check (a non-nullable type failed the job with "Value at index is null"
    instead).
    """
    return F.pandas_udf(_sum_vectors, T.ArrayType(T.DoubleType(), True))


def partial_batch(vector: np.ndarray, partition: int | None = None) -> pa.RecordBatch:
    """The one-row batch of :data:`PARTIAL_SCHEMA` a task emits: its partition id (by default the
    running task's) and its packed partial vector."""
    if partition is None:
        from pyspark import TaskContext
        partition = TaskContext.get().partitionId()
    return pa.RecordBatch.from_arrays([pa.array([partition], type=pa.int32()),
                                       pa.array([vector], type=pa.list_(pa.float64()))],
                                      names=[PARTITION_COL, PARTIAL_COL])


# --- sharding ---------------------------------------------------------------------------------

def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def spark_hash_int(value: int, seed: int = 42) -> int:
    """Spark's ``hash()`` of an int column (Murmur3 x86_32 of the 4-byte int, seed 42, signed): the
    hash that ``repartition(n, col)`` takes modulo n to place a row."""
    k = (value & 0xFFFFFFFF) * 0xCC9E2D51 & 0xFFFFFFFF
    k = _rotl32(k, 15) * 0x1B873593 & 0xFFFFFFFF
    h = _rotl32(seed ^ k, 13)
    h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    h ^= 4
    h ^= h >> 16
    h = h * 0x85EBCA6B & 0xFFFFFFFF
    h ^= h >> 13
    h = h * 0xC2B2AE35 & 0xFFFFFFFF
    h ^= h >> 16
    return h - (1 << 32) if h >= 1 << 31 else h


@functools.lru_cache(maxsize=64)
def shard_keys(shards: int) -> tuple[int, ...]:
    """The chunk key of each of ``shards`` chunks: key i is the smallest int that Spark's hash
    partitioning into ``shards`` partitions puts in partition i, so each chunk has a reduce task
    of its own (keys 0..K-1 would share tasks and leave others idle)."""
    keys: list[int | None] = [None] * shards
    missing, candidate = shards, 0
    while missing:
        slot = spark_hash_int(candidate) % shards  # Python's % is Spark's pmod for a positive modulus
        if keys[slot] is None:
            keys[slot] = candidate
            missing -= 1
        candidate += 1
    return tuple(keys)


def shards_for(num_values: int, slots: int, tasks: int | None = None) -> int:
    """Chunks of a sharded sum: one per task slot and at most one per map task (Spark's reduce
    locality runs the reduce tasks on the hosts that hold the map output, so more chunks than map
    tasks spread nothing further, docs/performance.md "Network-bound cost"), each of at least
    :data:`SHARD_MIN_VALUES` values."""
    return max(1, min(slots, tasks or slots, math.ceil(num_values / SHARD_MIN_VALUES)))


def chunk_bounds(num_values: int, shards: int) -> np.ndarray:
    """Where each of ``shards`` contiguous, nearly equal chunks of a vector starts (and the end)."""
    return np.array([i * num_values // shards for i in range(shards + 1)], dtype=np.int64)


# --- the layout of a step's partial rows ---------------------------------------------------------

@dataclass(frozen=True)
class PartialLayout:
    """How a step's partial rows travel (``how``: collect, agg or sharded over ``shards`` chunks;
    ``dtype``: of the values on the wire) and how they are added."""

    how: str = "agg"
    shards: int = 1
    dtype: str = "float64"

    def __post_init__(self):
        if self.how not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {self.how!r}")
        if self.dtype not in PARTIAL_DTYPES:
            raise ValueError(f"partial_dtype must be one of {PARTIAL_DTYPES}, got {self.dtype!r}")

    @property
    def sharded(self) -> bool:
        return self.how == "sharded"

    def schema(self) -> T.StructType:
        """The rows the tasks emit: ``(partition, partial)``, with a leading ``chunk`` when sharded."""
        element = T.FloatType() if self.dtype == "float32" else T.DoubleType()
        fields = [T.StructField(PARTITION_COL, T.IntegerType(), False),
                  T.StructField(PARTIAL_COL, T.ArrayType(element, False), False)]
        if self.sharded:
            fields.insert(0, T.StructField(CHUNK_COL, T.IntegerType(), False))
        return T.StructType(fields)

    def emitting(self, per_partition):
        """``per_partition`` (a ``mapInArrow`` function yielding :func:`partial_batch` rows) with its
        rows laid out as :meth:`schema` says; unchanged for float64 collect and agg."""
        if not self.sharded and self.dtype == "float64":
            return per_partition

        def laid_out(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in per_partition(batches):
                yield self._lay_out(batch)

        return laid_out

    def _lay_out(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """One task's one-row batch as this layout's rows (the vector rounded to ``dtype``, cut into
        ``shards`` chunks)."""
        partition = batch.column(0)[0].as_py()
        vector = batch.column(1).flatten().to_numpy(zero_copy_only=False).astype(self.dtype, copy=False)
        bounds = chunk_bounds(len(vector), self.shards)  # [0, len] when not sharded: one row
        columns = [pa.array([partition] * self.shards, type=pa.int32()),
                   pa.ListArray.from_arrays(pa.array(bounds, type=pa.int32()), pa.array(vector))]
        names = [PARTITION_COL, PARTIAL_COL]
        if self.sharded:
            columns.insert(0, pa.array(shard_keys(self.shards), type=pa.int32()))
            names.insert(0, CHUNK_COL)
        return pa.RecordBatch.from_arrays(columns, names=names)

    def add(self, partials: DataFrame, sum_vectors) -> np.ndarray | None:
        """Run the step's job: the float64 :func:`ordered_sum` of the tasks' rows in ``partials``
        (this layout's schema), None when no task had rows. ``sum_vectors``: the engine's
        :func:`make_sum_vectors` UDF."""
        if self.how == "collect":
            return sum_on_driver(to_arrow(partials))
        with adaptive_execution_off(partials.sparkSession):
            if not self.sharded:
                summed = partials.groupBy().agg(sum_vectors(PARTITION_COL, PARTIAL_COL).alias(PARTIAL_COL))
                return sum_on_driver(to_arrow(summed))
            summed = (partials.repartition(self.shards, CHUNK_COL).groupBy(CHUNK_COL)
                      .agg(sum_vectors(PARTITION_COL, PARTIAL_COL).alias(PARTIAL_COL)))
            return self._joined(to_arrow(summed))

    def _joined(self, table: pa.Table) -> np.ndarray | None:
        """The K summed chunks of a sharded step (rows ``(chunk, partial)`` in any order) as one
        vector; None when no task had rows (no chunk came back). A null element (NaN in the UDF's
        result) is read back as NaN, so the divergence check sees it."""
        if table.num_rows == 0:
            return None
        index = {key: i for i, key in enumerate(shard_keys(self.shards))}
        slices: list[np.ndarray | None] = [None] * self.shards
        for batch in table.to_batches():
            keys = batch.column(batch.schema.get_field_index(CHUNK_COL)).to_pylist()
            partials = batch.column(batch.schema.get_field_index(PARTIAL_COL))
            for key, values in zip(keys, partials):
                slices[index[key]] = values.values.to_numpy(zero_copy_only=False)
        if any(s is None for s in slices):
            raise RuntimeError(f"a sharded sum came back with {sum(s is not None for s in slices)} of its "
                               f"{self.shards} chunks")
        return np.concatenate(slices).astype(np.float64, copy=False)


AQE_CONF = "spark.sql.adaptive.enabled"


def adaptive_execution_off(spark):
    """Run a step's query without adaptive query execution, then restore the session's setting.

    AQE runs the aggregation's shuffle as a job of its own before planning the
    rest, so a step becomes two jobs (docs/design.md, "What was measured to choose it"); it
    has nothing to re-plan in a sum of one row (or K chunk rows) per partition, and it must not
    fold a sharded sum's K reduce partitions together. The setting is the session's, so a query
    the user runs concurrently in the same session during a step also runs without AQE.
    """
    return session_setting(spark, AQE_CONF, "false")


def sum_on_driver(table: pa.Table) -> np.ndarray | None:
    """The :func:`ordered_sum` of the non-null vectors of a ``(partition, partial)`` Arrow table
    (None if there are none), read batch by batch as views of the Arrow buffers (no second copy
    of the P vectors). A null element (a NaN the aggregation UDF returned arrives as one) is
    read back as NaN, so the divergence check sees it."""
    ids, vectors = [], []
    for batch in table.to_batches():
        partials = batch.column(batch.schema.get_field_index(PARTIAL_COL))
        valid = partials.is_valid().to_numpy(zero_copy_only=False)
        if not valid.any():
            continue
        index = batch.schema.get_field_index(PARTITION_COL)
        partitions = batch.column(index).to_numpy() if index >= 0 else np.zeros(len(batch), dtype=np.int32)
        values = partials.flatten().to_numpy(zero_copy_only=False)  # null lists contribute no values
        ids.extend(partitions[valid])
        vectors.extend(values.reshape(int(valid.sum()), -1))
    return ordered_sum(ids, vectors) if vectors else None


# --- choosing -------------------------------------------------------------------------------------

def resolve_aggregate(asked: str, tasks: int, num_values: int, cluster: ClusterShape = ClusterShape(),
                      dtype: str = "float64") -> tuple[PartialLayout, str]:
    """How a step of ``tasks`` tasks, each emitting ``num_values`` values, adds its rows, and why.

    ``auto``: collect while tasks x values stays small (:data:`COLLECT_LIMIT` on one machine,
    :data:`CLUSTER_COLLECT_LIMIT` across executors), else sharded over
    :func:`shards_for` chunks, which is ``agg`` when one chunk holds the vector.
    """
    total = tasks * num_values
    shards = shards_for(num_values, cluster.slots, tasks)
    if asked != "auto":
        layout = PartialLayout(asked, shards if asked == "sharded" else 1, dtype)
        return layout, "as asked"
    limit = COLLECT_LIMIT if cluster.single_machine else CLUSTER_COLLECT_LIMIT
    size = f"{tasks} tasks x {num_values:,} values"
    where = "on one machine" if cluster.single_machine else "across executors"
    if tasks <= 1 or total <= limit:
        return PartialLayout("collect", 1, dtype), f"auto: {size} <= {limit:,} {where}"
    if shards == 1:
        return PartialLayout("agg", 1, dtype), f"auto: {size} {where}, one reduce task (one slot, or a small vector)"
    return PartialLayout("sharded", shards, dtype), f"auto: {size} > {limit:,} {where}"
