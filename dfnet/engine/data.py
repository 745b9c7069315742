"""Checking a user's image DataFrame and turning it into dfnet's cached training encoding.

The user's images are array columns (``array<float>`` or ``array<double>``).
Converting Spark arrays to Arrow lists and then to numpy rows costs more than
the forward and backward pass itself (docs/design.md, "What was measured to
choose it"), so training reads a cached copy in which each image is ONE binary
value holding the packed float32/float64 pixels, decoded with a single
``np.frombuffer`` per Arrow batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..errors import DataValidationError
from ..session import input_partitions, is_connect

ROW_COL, X_COL, LABEL_COL = "_row", "_x", "_label"
ENCODED_SCHEMA = T.StructType([
    T.StructField(ROW_COL, T.LongType(), False),
    T.StructField(X_COL, T.BinaryType(), False),
    T.StructField(LABEL_COL, T.IntegerType(), False),
])
_NUMERIC_ELEMENTS = (T.FloatType, T.DoubleType, T.IntegerType, T.LongType, T.ShortType, T.ByteType)
_INTEGRAL = (T.IntegerType, T.LongType, T.ShortType, T.ByteType)


def check_columns(df: DataFrame, features_col: str, label_col: str | None) -> None:
    """Raise :class:`DataValidationError` unless the columns exist with usable types."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    wanted = [features_col] + ([label_col] if label_col else [])
    for name in wanted:
        if name not in fields:
            raise DataValidationError(f"column {name!r} not found; the DataFrame has columns {list(fields)}")
    ftype = fields[features_col]
    if not (isinstance(ftype, T.ArrayType) and isinstance(ftype.elementType, _NUMERIC_ELEMENTS)):
        raise DataValidationError(
            f"column {features_col!r} must be an array of numbers (array<float> or array<double>), "
            f"got {ftype.simpleString()}")
    if label_col:
        ltype = fields[label_col]
        if not isinstance(ltype, (*_INTEGRAL, T.FloatType, T.DoubleType)):
            raise DataValidationError(
                f"column {label_col!r} must hold integer class indices, got {ltype.simpleString()}")


PARTITION_COL = "_dfnet_partition"


def summarize(df: DataFrame, features_col: str, label_col: str | None) -> dict:
    """One Spark aggregation over the data: row count, nulls, image lengths, bad values, label range;
    on a Spark Connect session also ``partitions`` (there no RDD tells it without a job)."""
    image = F.col(features_col)
    bad_value = F.exists(image, lambda v: v.isNull() | F.isnan(v) | (F.abs(v) == float("inf")))
    aggs = [
        F.count(F.lit(1)).alias("rows"),
        F.sum(image.isNull().cast("long")).alias("null_images"),
        F.min(F.size(image)).alias("min_len"),
        F.max(F.size(image)).alias("max_len"),
        F.sum(bad_value.cast("long")).alias("bad_values"),
    ]
    if label_col:
        label = F.col(label_col)
        aggs += [
            F.sum(label.isNull().cast("long")).alias("null_labels"),
            F.min(label).alias("min_label"),
            F.max(label).alias("max_label"),
        ]
        if isinstance(df.schema[label_col].dataType, (T.FloatType, T.DoubleType)):
            # `floor` overflows on +-inf under ANSI mode; `% 1` gives NaN instead.
            not_whole = F.isnan(label) | (F.abs(label) == float("inf")) | ((label % 1) != 0)
            aggs.append(F.sum(not_whole.cast("long")).alias("fractional_labels"))
    if is_connect(df.sparkSession):
        df = df.withColumn(PARTITION_COL, F.spark_partition_id())
        aggs.append((F.max(PARTITION_COL) + 1).alias("partitions"))
    return df.agg(*aggs).first().asDict()


def check_summary(summary: dict, features_col: str, label_col: str | None, num_features: int | None,
                  num_classes: int | None) -> None:
    """Raise :class:`DataValidationError` on the first problem :func:`summarize` found.

    Checks: not empty, no null image or label, every image has ``num_features``
    values (or, when None, all images the same length), none NaN/infinite/null,
    and labels are whole numbers in ``[0, num_classes)``.
    """
    s = summary
    if s["rows"] == 0:
        raise DataValidationError("the DataFrame is empty: there are no rows to train on or predict")
    if s["null_images"]:
        raise DataValidationError(f"column {features_col!r} has {s['null_images']} null value(s)")
    expected = s["max_len"] if num_features is None else num_features
    if s["min_len"] != expected or s["max_len"] != expected:
        raise DataValidationError(
            f"column {features_col!r}: every image must have {expected} values, found lengths "
            f"from {s['min_len']} to {s['max_len']}")
    if s["bad_values"]:
        raise DataValidationError(
            f"column {features_col!r}: {s['bad_values']} image(s) contain NaN, infinite or null values")
    if label_col:
        if s["null_labels"]:
            raise DataValidationError(f"column {label_col!r} has {s['null_labels']} null value(s)")
        if s.get("fractional_labels"):
            raise DataValidationError(f"column {label_col!r} has {s['fractional_labels']} non-integer label(s)")
        if num_classes is not None and (s["min_label"] < 0 or s["max_label"] >= num_classes):
            raise DataValidationError(
                f"column {label_col!r}: labels must be class indices in [0, {num_classes - 1}] for a "
                f"{num_classes}-class model, found values from {s['min_label']} to {s['max_label']}")
        if num_classes is None and s["min_label"] < 0:
            raise DataValidationError(
                f"column {label_col!r}: labels must be class indices >= 0, found {s['min_label']}")


def validate_frame(df: DataFrame, features_col: str, label_col: str | None, num_features: int | None,
                   num_classes: int | None) -> dict:
    """Columns, types and contents checked (one Spark job); returns the summary."""
    check_columns(df, features_col, label_col)
    summary = summarize(df, features_col, label_col)
    check_summary(summary, features_col, label_col, num_features, num_classes)
    return summary


#: Pixels that are exact multiples of 1/255 in the network's dtype (images that
#: came from 8-bit sources) are stored as one byte each: 4x less to move per
#: epoch than float32, decoded exactly.
PIXEL_LEVELS = 255


def pack_pixels(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The bytes to store for one batch of pixels already cast to ``dtype``: uint8 levels when
    that is lossless for every value (``level / 255`` in ``dtype`` gives the value back bit for
    bit), else the values themselves."""
    levels = np.rint(values * PIXEL_LEVELS)
    if values.size and levels.min() >= 0 and levels.max() <= PIXEL_LEVELS:
        as_bytes = levels.astype(np.uint8)
        if np.array_equal(as_bytes.astype(dtype) / dtype.type(PIXEL_LEVELS), values):
            return as_bytes
    return values


def flat_values(images: pa.ListArray, dtype: np.dtype) -> np.ndarray:
    """All pixels of an Arrow list column, back to back, as one numpy vector of ``dtype``."""
    return images.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def packed_binary(payload: np.ndarray, n: int) -> pa.BinaryArray:
    """``n`` binary values of equal width holding ``payload`` (from :func:`pack_pixels`) back to back,
    built on the payload's own buffer (no copy, no Python object per value)."""
    payload = np.ascontiguousarray(payload)
    width = payload.nbytes // n
    offsets = pa.py_buffer(np.arange(0, n * width + 1, width, dtype=np.int32))
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(payload)])


def _encode_batches(features_col: str, label_col: str, num_features: int, dtype: str):
    dtype = np.dtype(dtype)

    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            images = batch.column(features_col)
            n = len(images)
            if n == 0:
                continue
            packed = packed_binary(pack_pixels(flat_values(images, dtype), dtype), n)
            labels = batch.column(label_col).cast(pa.int32())
            yield pa.RecordBatch.from_arrays([batch.column(ROW_COL), packed, labels],
                                             schema=pa.schema([(ROW_COL, pa.int64(), False),
                                                               (X_COL, pa.binary(), False),
                                                               (LABEL_COL, pa.int32(), False)]))
    return encode


def decode_images(packed: pd.Series, num_features: int, dtype: str) -> np.ndarray:
    """Packed pixels as a pandas Series of bytes (e.g. from ``toPandas``) -> ``(n, num_features)``."""
    return decode_arrow_images(pa.array(packed.tolist(), type=pa.binary()), num_features, dtype)


def decode_arrow_images(packed: pa.BinaryArray, num_features: int, dtype: str) -> np.ndarray:
    """Arrow binary column of packed pixels -> ``(n, num_features)`` array of ``dtype``."""
    return as_pixels(stored_arrow_images(packed, num_features, dtype), dtype)


def stored_arrow_images(packed: pa.BinaryArray, num_features: int, dtype: str) -> np.ndarray:
    """Arrow binary column of packed pixels -> ``(n, num_features)`` array as stored: uint8 levels
    or values of ``dtype`` (:func:`as_pixels` turns either into pixels).

    The values of consecutive rows sit back to back in the array's data buffer,
    so a batch is one ``np.frombuffer``, a read-only view (the array may be a
    slice: its offset selects the first row); a batch mixing both encodings is
    decoded row by row into pixels.

    The step converts levels to pixels chunk by chunk, just before the chunk's
    forward pass, so a partition never holds a float copy of all its images
    (and is faster for it: docs/performance.md, "Engines").
    """
    dtype = np.dtype(dtype)
    n = len(packed)
    _, offsets, values = packed.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=n + 1, offset=packed.offset * 4)
    start, total = int(bounds[0]), int(bounds[-1] - bounds[0])
    if total == n * num_features:
        return np.frombuffer(values, dtype=np.uint8, count=total, offset=start).reshape(n, num_features)
    if total == n * num_features * dtype.itemsize:
        return np.frombuffer(values, dtype=dtype, count=n * num_features, offset=start).reshape(n, num_features)
    widths = np.diff(bounds)
    if n == 1 or not np.all(np.isin(widths, (num_features, num_features * dtype.itemsize))):
        raise ValueError(f"packed images hold {sorted(set(widths.tolist()))} bytes each; expected "
                         f"{num_features} (uint8) or {num_features * dtype.itemsize} ({dtype})")
    return np.concatenate([decode_arrow_images(packed.slice(i, 1), num_features, dtype) for i in range(n)])


def as_pixels(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored images (any shape) -> pixels of ``dtype``: uint8 levels become exactly
    ``levels / 255``; values already of ``dtype`` are returned as they are."""
    if stored.dtype != np.uint8:
        return stored
    pixels = stored.astype(dtype)
    pixels /= pixels.dtype.type(PIXEL_LEVELS)  # in place: one float array, not two
    return pixels


@dataclass(frozen=True)
class ImageRows:
    """How a step reads the cached image encoding: one image per row (shipped to executors)."""

    num_features: int
    dtype: str

    def decode(self, batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Arrow batches of ``(_row, _x, _label)`` rows -> ``(X (n, num_features), labels (n,), keys (n,))``
        chunks, ``X`` as stored (see :func:`stored_arrow_images`), ``keys`` the rows' ``_row``."""
        for batch in batches:
            if batch.num_rows:
                yield (stored_arrow_images(batch.column(X_COL), self.num_features, self.dtype),
                       batch.column(LABEL_COL).to_numpy(), batch.column(ROW_COL).to_numpy())

    def loss_and_grad(self, network, params: np.ndarray, X: np.ndarray, labels: np.ndarray, noise=None):
        """The sums over stored images ``X`` (converted to pixels here, one chunk at a time)."""
        return network.loss_and_grad(params, as_pixels(X, self.dtype), labels, noise=noise)


@dataclass
class TrainingData:
    """The validated, encoded and cached rows a training run steps over.

    Every engine's training data offers the same three row selections, so the
    schedules in :mod:`dfnet.schedules` do not depend on the engine.
    """

    frame: DataFrame  # (_row long, _x binary, _label int), persisted
    count: int
    partitions: int  # of the cache (known when it is built: Spark Connect has no RDD to ask)

    def all_rows(self) -> DataFrame:
        return self.frame

    def sample(self, fraction: float, seed: int) -> DataFrame:
        """Bernoulli sample without replacement (Spark's ``sample``)."""
        return self.frame.sample(withReplacement=False, fraction=fraction, seed=seed)

    def batch(self, rows: DataFrame, k: int, num_batches: int, seed: int) -> DataFrame:
        """Rows whose seeded hash of the row key falls in bucket ``k`` of ``num_batches``.

        The JVM evaluates the hash on the cached rows, so a step ships only its
        own batch to Python.
        """
        key = F.pmod(F.xxhash64(F.col(ROW_COL), F.lit(seed)), F.lit(num_batches))
        return rows.filter(key == k)

    def partition_sizes(self, models: int | None = None) -> list[int]:
        """Rows in each partition of the cache (one small Spark job); with ``models``, in each
        of the ``models`` tasks that ``coalesce(models)`` makes of them."""
        frame = self.frame if models is None else self.frame.coalesce(models)
        counts = frame.groupBy(F.spark_partition_id().alias("p")).count().collect()
        return [row["count"] for row in sorted(counts, key=lambda row: row["p"])] or [0]

    def num_partitions(self) -> int:
        """Partitions of the cache (no Spark job)."""
        return self.partitions

    def release(self) -> None:
        self.frame.unpersist()


def encode_training_data(df: DataFrame, *, features_col: str, label_col: str, num_features: int,
                         dtype: str, num_partitions: int | None = None, shuffle_seed: int | None = None,
                         input_partitions_hint: int | None = None) -> TrainingData:
    """Cache the packed encoding of an already validated ``df`` (one Spark job fills the cache).

    ``shuffle_seed``: spread the rows over the partitions by a seeded hash of
    their content, each partition in hash order, so that every partition is a random
    sample of the data even when ``df`` is sorted (by label, say) and the
    layout does not depend on which task finished first. Model averaging needs
    it: models trained on partitions of one class each do not average into a
    classifier. ``input_partitions_hint``: the partitions of ``df`` when already known (from
    :func:`summarize` on Connect), saving the job that would count them.
    """
    source = df.select(features_col, label_col)
    partitions = num_partitions or input_partitions_hint or input_partitions(source)
    if shuffle_seed is not None:
        # A hash of the row's content, not of its position: the layout (and so the row keys
        # numbered after it) is the same however the input was partitioned or cached. Rows that
        # tie are identical, so their order changes nothing.
        content = F.xxhash64(F.col(features_col), F.col(label_col), F.lit(shuffle_seed), F.lit("layout"))
        source = source.repartition(partitions, content)
        source = source.sortWithinPartitions(content)
    elif num_partitions is not None:
        source = arrival_independent(source.repartition(num_partitions), features_col, label_col)
    source = source.withColumn(ROW_COL, F.monotonically_increasing_id())
    frame = source.mapInArrow(_encode_batches(features_col, label_col, num_features, dtype), ENCODED_SCHEMA)
    return TrainingData(frame, count_or_release(frame.persist(StorageLevel.MEMORY_AND_DISK)), partitions)


def arrival_independent(repartitioned: DataFrame, features_col: str, label_col: str) -> DataFrame:
    """``repartitioned`` (just round-robin repartitioned) with each partition sorted by a hash of
    the row's content. A round-robin shuffle fixes which rows each partition gets but not their
    order: the reduce side reads the map outputs in fetch order, local blocks first, so on a
    cluster the order (and so the row keys numbered after it, the mini-batches and dropout masks
    keyed on them) depended on where the tasks ran; local masters happened to keep it. Rows that
    tie are identical, so their order changes nothing."""
    return repartitioned.sortWithinPartitions(F.xxhash64(F.col(features_col), F.col(label_col), F.lit("arrival")))


def count_or_release(frame: DataFrame) -> int:
    """Fill a just-persisted cache by counting it; on failure, release it before re-raising."""
    try:
        return frame.count()
    except BaseException:
        frame.unpersist()
        raise
