"""Convolution patches as DataFrame rows: an Arrow UDF cuts them, ``posexplode`` spreads them.

``patches="explode"`` caches the first convolution's input already cut: an
Arrow UDF turns each image into the list of its patch rows, ``posexplode``
makes them rows ``(_row, _pos, _x, _label)`` (``_row`` the image key, ``_pos``
the row's index within the image, ``_x`` the patch values packed like the
image encoding: one byte a value where exact, see
:func:`~dfnet.engine.data.pack_pixels`), and this frame is cached in place of
the image encoding. A step's ``mapInArrow`` function stacks each image's rows
back into ``(n, H_out, W_out, kh*kw*C)`` and calls
``network.loss_and_grad(params, None, labels, patches=P)``.

Granularity (``patch_rows``): one row per output row of the image
(``image-row``: ``H_out`` rows of ``W_out*kh*kw*C`` values) or one row per
position (``position``: ``H_out*W_out`` rows of ``kh*kw*C`` values).

Clustering: the images are repartitioned by ``_row`` before the UDF runs (the
shuffle moves images, not their patch rows: 784 against 14,400 values for
MNIST and 5x5 kernels), then
``sortWithinPartitions(_row, _pos)`` (a local sort, no shuffle) makes every
image's rows contiguous and in order. Row selections keep whole images:
mini-batches filter on a hash of ``_row`` (the base :class:`TrainingData`),
and :class:`PatchTrainingData` samples on a hash of ``_row`` too. An Arrow
batch may still end inside an image; :meth:`PatchRows.decode` carries the
incomplete image over to the next batch and refuses a partition that ends
with one. The averaging schedule holds a whole partition's patch rows at once,
as stored (14.4 KB an MNIST image with 5x5 kernels when the pixels are 8-bit
levels, four or eight times that as float32/float64 values, where the image
encoding holds 784 bytes and cuts patches per local step).

Why ``image-row`` is the ``explode`` default, why ``inline`` is the default at
all, and why the cutting UDF is an Arrow UDF: docs/cnn.md ("Where the patches
are cut"), with the table of ``python benchmarks/patches.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..compat import arrow_udf, concat_batches
from ..config import PATCH_ROWS
from ..errors import ConfigError
from ..nn.conv import Conv2D, image_patches
from ..nn.network import Sequential
from ..session import input_partitions
from ..splits import is_held_out
from .data import (LABEL_COL, ROW_COL, X_COL, TrainingData, as_pixels, count_or_release, flat_values,
                   pack_pixels, packed_binary, stored_arrow_images)

POS_COL = "_pos"


@dataclass(frozen=True)
class PatchRows:
    """How images become patch rows and back (shipped to executors inside the UDF and step functions)."""

    image_shape: tuple[int, int, int]  # (H, W, C)
    kernel_size: tuple[int, int]
    padding: str
    patch_shape: tuple[int, int, int]  # (H_out, W_out, kh*kw*C)
    granularity: str  # "image-row" or "position"
    dtype: str

    @classmethod
    def of(cls, network: Sequential, granularity: str = "image-row") -> "PatchRows":
        first = network.layers[0] if network.layers else None
        if not isinstance(first, Conv2D):
            raise ConfigError(f"patches='explode' needs a network whose first layer is a Conv2D, not {first!r}")
        if granularity not in PATCH_ROWS:
            raise ConfigError(f"patch_rows={granularity!r}: must be one of {list(PATCH_ROWS)}")
        return cls(network.input_shape, first.kernel_size, first.padding, network.patch_shape, granularity,
                   network.dtype.name)

    @property
    def rows_per_image(self) -> int:
        Ho, Wo, _ = self.patch_shape
        return Ho if self.granularity == "image-row" else Ho * Wo

    @property
    def row_values(self) -> int:
        return int(np.prod(self.patch_shape)) // self.rows_per_image

    def cut(self, images: pa.ListArray) -> pa.ListArray:
        """The UDF: a batch of flat images -> per image, the list of its packed patch rows."""
        n, dtype = len(images), np.dtype(self.dtype)
        X = flat_values(images, dtype).reshape((n, *self.image_shape))
        payload = pack_pixels(image_patches(X, self.kernel_size, self.padding).reshape(-1), dtype)
        rows = packed_binary(payload, n * self.rows_per_image) if n else pa.array([], pa.binary())
        offsets = np.arange(0, n * self.rows_per_image + 1, self.rows_per_image, dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), rows)

    def decode(self, batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Arrow batches of ``(_row, _pos, _x, _label)`` rows, image by image in ``_pos`` order ->
        ``(patches (n, H_out, W_out, kh*kw*C), labels (n,), image keys (n,))`` chunks of whole images, patches as
        stored (see :func:`~dfnet.engine.data.stored_arrow_images`)."""
        per_image, carry = self.rows_per_image, None
        for batch in batches:
            if carry is not None:  # the previous batch ended inside an image: prepend its packed rows
                batch = concat_batches([carry, batch])
            whole = batch.num_rows - batch.num_rows % per_image
            carry = batch.slice(whole) if whole < batch.num_rows else None
            if whole == 0:
                continue
            batch = batch.slice(0, whole)
            keys, pos = batch.column(ROW_COL).to_numpy(), batch.column(POS_COL).to_numpy()
            _check_whole_images(keys, pos, per_image)
            x = stored_arrow_images(batch.column(X_COL), self.row_values, self.dtype)
            yield x.reshape((-1, *self.patch_shape)), batch.column(LABEL_COL).to_numpy()[::per_image], keys[::per_image]
        if carry is not None:
            raise ValueError(f"image {carry.column(ROW_COL)[0]} has {carry.num_rows} of its {per_image} patch "
                             f"rows: patch rows must be selected by whole images")

    def loss_and_grad(self, network: Sequential, params: np.ndarray, P: np.ndarray, labels: np.ndarray,
                      noise=None):
        return network.loss_and_grad(params, None, labels, patches=as_pixels(P, self.dtype), noise=noise)


def _check_whole_images(keys: np.ndarray, pos: np.ndarray, per_image: int) -> None:
    n = len(keys) // per_image
    if not (np.array_equal(pos, np.tile(np.arange(per_image, dtype=pos.dtype), n))
            and np.all(keys.reshape(n, per_image) == keys[::per_image, None])):
        raise ValueError(f"patch rows are not grouped by image in position order (expected {per_image} rows "
                         f"per image, positions 0..{per_image - 1}): cache them with explode_patches")


@dataclass
class PatchTrainingData(TrainingData):
    """Cached patch rows; ``count`` and the selections are in whole images, so the schedules
    of :mod:`dfnet.schedules` run unchanged."""

    rows_per_image: int = 1

    def sample(self, fraction: float, seed: int) -> DataFrame:
        """Each image with probability ``fraction``, all its rows or none: a seeded hash of the
        image key (salted apart from the mini-batch hash, so the two stay independent)."""
        return self.frame.filter(is_held_out([ROW_COL], fraction, seed, "sample"))

    def partition_sizes(self, models: int | None = None) -> list[int]:
        """Images in each partition of the cache (or in each of ``models`` coalesced tasks)."""
        return [rows // self.rows_per_image for rows in super().partition_sizes(models)]


def patch_frame(df: DataFrame, layout: PatchRows, *, features_col: str, label_col: str,
                num_partitions: int | None = None) -> DataFrame:
    """The (uncached) patch rows ``(_row, _pos, _x, _label)`` of ``df``, clustered by image.

    ``num_partitions`` defaults to the partitions ``df`` has.
    """
    source = df.select(features_col, label_col).withColumn(ROW_COL, F.monotonically_increasing_id())
    source = source.repartition(num_partitions or input_partitions(df), ROW_COL)
    # Made per call, like the engine's aggregation UDF: a UDF binds to the first SparkContext that used it.
    cut = arrow_udf(layout.cut, T.ArrayType(T.BinaryType(), False), df.sparkSession)
    return (source.select(ROW_COL, F.posexplode(cut(features_col)).alias(POS_COL, X_COL),
                          F.col(label_col).cast("int").alias(LABEL_COL))
            .sortWithinPartitions(ROW_COL, POS_COL))


def explode_patches(df: DataFrame, layout: PatchRows, *, features_col: str, label_col: str,
                    num_partitions: int | None = None) -> PatchTrainingData:
    """Cache the patch rows of an already validated ``df`` (one Spark job fills the cache)."""
    partitions = num_partitions or input_partitions(df)
    frame = patch_frame(df, layout, features_col=features_col, label_col=label_col,
                        num_partitions=partitions).persist(StorageLevel.MEMORY_AND_DISK)
    rows = count_or_release(frame)
    return PatchTrainingData(frame, rows // layout.rows_per_image, partitions, rows_per_image=layout.rows_per_image)

