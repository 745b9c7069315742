"""Images as training rows: folders of image files, and frames of Spark's ``binaryFile`` and
``image`` sources, become the frame :func:`dfnet.train.fit` takes,
``id long, image array<float>, label int, path string``.

Every way in goes through ONE intermediate, decoded once (and persisted by the readers here)::

    path string, pixels binary, height int, width int, channels int, error string

``pixels`` holds the image's uint8 values row-major over (height, width, channels), channels
last; ``channels`` is 1 (grey) or 3 (RGB) as decoded; ``error`` is null for a readable image
and a short reason otherwise (``pixels`` is then null). The functions:

- :func:`decode_binary`: file bytes (a ``binaryFile`` ``content`` column) -> the intermediate,
  Pillow running in the executors inside a vectorized Arrow UDF.
- :func:`from_image_source`: the struct of ``spark.read.format("image")`` -> the intermediate.
- :func:`check_decoded`: one aggregate job -> :class:`ImageCheck` (bad files, sizes, colour,
  the resolved shape); raises :class:`~dfnet.errors.ImageFolderError` naming the file.
- :func:`to_features`: the intermediate -> ``array<float>`` of H*W*C values in [0, 1].
- :func:`read_image_folder`: ``root/<class>/<image>`` (or ``root/train|test/<class>/<image>``)
  -> :class:`ImageFolder` with lazy ``train`` / ``test`` frames.
- :func:`as_training_frame`: what ``fit`` and ``predict`` call on a user's frame.

Only the DataFrame API, Spark's readers and Arrow UDFs: the same code runs on a classic session
and on Spark Connect. Pillow is an optional extra (``pip install 'dfnet[images]'``), imported
only where images are decoded.

Example
-------
>>> from dfnet.images import read_image_folder
>>> folder = read_image_folder(spark, "/data/clothes", image_size=(28, 28))  # doctest: +SKIP
>>> folder.class_names, folder.image_shape, folder.train_rows  # doctest: +SKIP
(['Bag', 'Coat', 'Dress'], (28, 28, 1), 2400)
>>> model = fit(folder.train, TrainConfig(epochs=5))  # doctest: +SKIP
>>> folder.unpersist()  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dfnet.compat import arrow_udf, index_of, try_url_decode
from dfnet.errors import ConfigError, DataValidationError, ImageFolderError
from dfnet.files import first_line, spark_errors, spark_path
from dfnet.session import is_connect, task_slots

__all__ = [
    "DECODED_COLUMNS", "IMAGE_EXTENSIONS", "ImageCheck", "ImageFiles", "ImageFolder", "as_training_frame",
    "check_decoded", "decode_binary", "from_image_source", "is_image_column", "read_image_folder", "read_images",
    "to_features",
]

PILLOW_MISSING = "decoding images needs Pillow, an optional dependency of dfnet: pip install 'dfnet[images]'"

#: File name endings :func:`read_image_folder` reads by default (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

#: The columns the intermediate adds beside ``path``.
DECODED_COLUMNS = ("pixels", "height", "width", "channels", "error")
DECODED_TYPE = T.StructType([
    T.StructField("pixels", T.BinaryType()), T.StructField("height", T.IntegerType()),
    T.StructField("width", T.IntegerType()), T.StructField("channels", T.IntegerType()),
    T.StructField("error", T.StringType()),
])
_DECODED_ARROW = pa.struct([("pixels", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
                            ("channels", pa.int32()), ("error", pa.string())])

#: The fields of the struct ``spark.read.format("image")`` gives.
IMAGE_SOURCE_FIELDS = ("origin", "height", "width", "nChannels", "mode", "data")

#: How many bad files an :class:`ImageCheck` lists (it counts them all).
MAX_EXAMPLES = 10

# Pillow modes that hold one value per pixel (grey, with or without alpha); everything else is RGB.
_GREY_MODES = frozenset({"1", "L", "I", "F", "LA", "La"})
_SCHEME_AUTHORITY = r"^[A-Za-z][A-Za-z0-9+.-]*:(//[^/]*)?"
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]+$")
_TMP = "_dfnet_decoded"
_ID_MASK = (1 << 63) - 1  # ids are non-negative longs
_SPLIT_BUCKETS = 1 << 30
_BAD_BUCKETS = 1024  # the bad files' examples are gathered in this many groups, so no group holds them all
# Files are many and small: Spark's file partitions hold ~32 each (openCostInBytes), so the
# decode pass is coalesced to fewer, larger tasks: about this many images or compressed bytes each.
IMAGES_PER_TASK = 4096
BYTES_PER_TASK = 32 << 20


def _pillow():
    """PIL.Image, or an ImportError saying which extra to install."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(PILLOW_MISSING) from exc
    return Image


# --- decoding (runs in the executors) --------------------------------------------------


def _short(exc: BaseException) -> str:
    text = first_line(exc)
    return re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", text)[:200]


def _canonical(im) -> np.ndarray:
    """The pixels of a loaded Pillow image as uint8, (h, w) for grey or (h, w, 3) for RGB."""
    mode = im.mode
    if mode.startswith("I;16"):  # 16-bit grey (PNG): keep the high byte, as Pillow does for 16-bit RGB
        return (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
    if mode == "L":
        return np.asarray(im)
    if mode in _GREY_MODES:  # 1 -> 0/255, I and F clipped to 0..255, alpha dropped
        return np.asarray(im.convert("L"))
    if mode == "RGB":
        return np.asarray(im)
    rgb = np.asarray(im.convert("RGB"))  # alpha dropped, not composited; CMYK, YCbCr... as Pillow converts them
    if mode in ("P", "PA") and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]  # a palette of greys (a grey GIF): grey, not colour
    return rgb


def _decode_one(Image, data: bytes | None) -> tuple:
    """``(pixels, height, width, channels, error)`` of one file's bytes; never raises."""
    if data is None:
        return None, None, None, None, "no content (null)"
    if len(data) == 0:
        return None, None, None, None, "empty file"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette-transparency and size notes are no reason to fail
        try:
            im = Image.open(BytesIO(data))
        except Image.UnidentifiedImageError:
            return None, None, None, None, "not an image (cannot identify image file)"
        except Image.DecompressionBombError as exc:
            return None, None, None, None, f"too large: {_short(exc)}"
        except Exception as exc:  # noqa: BLE001 - a known format that fails in its header
            return None, None, None, None, f"truncated or corrupt: {_short(exc)}"
        try:
            im.load()  # the lazy open reads only the header; load() fails on a truncated file
        except Exception as exc:  # noqa: BLE001
            return None, None, None, None, f"truncated or corrupt: {_short(exc)}"
        try:
            pixels = np.ascontiguousarray(_canonical(im))
        except Exception as exc:  # noqa: BLE001
            return None, None, None, None, f"cannot convert {im.mode} pixels: {_short(exc)}"
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return pixels.tobytes(), pixels.shape[0], pixels.shape[1], channels, None


def _decoded_array(rows: list[tuple]) -> pa.StructArray:
    columns = list(zip(*rows)) if rows else [[] for _ in DECODED_COLUMNS]
    return pa.StructArray.from_arrays([pa.array(list(c), f.type) for c, f in zip(columns, _DECODED_ARROW)],
                                      fields=list(_DECODED_ARROW))


def _decode_batch(content: pa.Array) -> pa.Array:
    Image = _pillow()
    return _decoded_array([_decode_one(Image, value) for value in content.to_pylist()])


def _from_bgr_one(data: bytes | None, n_channels, height, width) -> tuple:
    if data is None or not data or height is None or width is None or height <= 0 or width <= 0:
        return None, None, None, None, "not an image (Spark's image source could not decode it)"
    if n_channels not in (1, 3, 4) or len(data) != height * width * n_channels:
        return None, None, None, None, (f"unsupported image source row: {n_channels} channels, "
                                        f"{len(data)} bytes for {height}x{width}")
    if n_channels == 1:
        return data, height, width, 1, None
    bgr = np.frombuffer(data, np.uint8).reshape(height, width, n_channels)
    return np.ascontiguousarray(bgr[..., 2::-1]).tobytes(), height, width, 3, None  # BGR(A) -> RGB


def _from_image_source_batch(data: pa.Array, n_channels: pa.Array, height: pa.Array, width: pa.Array) -> pa.Array:
    return _decoded_array([_from_bgr_one(*row) for row in zip(data.to_pylist(), n_channels.to_pylist(),
                                                               height.to_pylist(), width.to_pylist())])


def _binary_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, offsets as int64) of a binary or large_binary Arrow array, without copying the data."""
    buffers = values.buffers()
    offset_type = np.int64 if pa.types.is_large_binary(values.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[values.offset:values.offset + len(values) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return data, offsets.astype(np.int64)


def _resized(Image, flat: np.ndarray, h: int, w: int, c: int, shape: tuple[int, int, int]) -> np.ndarray:
    """One image's uint8 pixels at ``shape``: channels converted, then resized (see :func:`to_features`)."""
    H, W, C = shape
    im = Image.fromarray(flat.reshape(h, w) if c == 1 else flat.reshape(h, w, c))
    if c == 3 and C == 1:
        im = im.convert("L")
    if (h, w) != (H, W):
        im = im.resize((W, H), Image.Resampling.BILINEAR)
    if c == 1 and C == 3:  # replicating grey after the resize equals resizing three equal channels
        im = im.convert("RGB")
    return np.asarray(im).reshape(-1)


def _features_batch(pixels: pa.Array, height: pa.Array, width: pa.Array, channels: pa.Array,
                    shape: tuple[int, int, int]) -> pa.Array:
    H, W, C = shape
    size = H * W * C
    n = len(pixels)
    if n == 0:
        return pa.array([], pa.list_(pa.float32()))
    if n * size >= 2**31:
        raise ValueError(f"{n} images of {H}x{W}x{C} values exceed one Arrow batch (2**31 values); "
                         "lower spark.sql.execution.arrow.maxRecordsPerBatch")
    data, offsets = _binary_buffers(pixels)
    lengths = np.diff(offsets)
    h, w, c = (np.asarray(a.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
               for a in (height, width, channels))
    valid = ~np.asarray(pixels.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    valid &= (h > 0) & (w > 0) & np.isin(c, (1, 3)) & (lengths == h * w * c)
    same = valid & (h == H) & (w == W) & (c == C)
    if same.all():  # the common case: every image already has the shape, one contiguous block
        start = int(offsets[0])
        flat = np.divide(data[start:start + n * size], 255.0, dtype=np.float32)
    else:
        Image = _pillow() if (valid & ~same).any() else None
        out = np.zeros((n, size), dtype=np.float32)
        for i in np.flatnonzero(valid):
            row = data[offsets[i]:offsets[i + 1]]
            if not same[i]:
                row = _resized(Image, row, int(h[i]), int(w[i]), int(c[i]), shape)
            out[i] = np.divide(row, 255.0, dtype=np.float32)
        flat = out.reshape(-1)
    list_offsets = pa.array(np.arange(0, (n + 1) * size, size, dtype=np.int32))
    mask = None if valid.all() else pa.array(~valid)
    return pa.ListArray.from_arrays(list_offsets, pa.array(flat), mask=mask)


def _features_function(shape: tuple[int, int, int]):
    def features(pixels: pa.Array, height: pa.Array, width: pa.Array, channels: pa.Array) -> pa.Array:
        return _features_batch(pixels, height, width, channels, shape)
    return features


# --- the intermediate ------------------------------------------------------------------


def _require_pillow_here(spark) -> None:
    """Fail on the driver, before any job, when Pillow is missing here and the executors share this
    environment (a classic session); a Connect client may lack Pillow while its server has it."""
    if not is_connect(spark):
        _pillow()


def _free_columns(df: DataFrame, names: Sequence[str], replaced: str | None = None) -> None:
    taken = [n for n in names if n in df.columns and n != replaced]
    if taken:
        raise DataValidationError(f"column(s) {taken} already exist; the decoded images need {list(names)} "
                                  f"(rename or drop them first); columns: {df.columns}")


def _with_decoded(df: DataFrame, decoded, path, drop: str | None = None) -> DataFrame:
    # The UDF's struct in a column of its own, then split: one UDF call per row, not one per field.
    keep = [c for c in df.columns if c not in (drop, "path")]
    staged = df.withColumn(_TMP, decoded).withColumn("path", path)
    return staged.select(*keep, "path", *[F.col(_TMP).getField(n).alias(n) for n in DECODED_COLUMNS])


def decode_binary(df: DataFrame, content_col: str = "content", path_col: str | None = "path") -> DataFrame:
    """``df`` with each row's file bytes decoded by Pillow into the intermediate (lazy).

    Adds ``pixels binary`` (uint8, height x width x channels, row-major, channels last),
    ``height``, ``width``, ``channels`` (int) and ``error`` (string, null when the image is
    fine), and ``path`` (string; a copy of ``path_col``, or null when there is none); every
    other column stays. Decoding runs in the executors in a vectorized Arrow UDF:
    ``Image.open`` then ``load()`` (so a truncated file fails; ``LOAD_TRUNCATED_IMAGES`` is
    left off), the first frame of an animated GIF, no EXIF rotation. Modes ``1, L, I, I;16, F,
    LA, La`` become grey (``channels`` 1; 16-bit keeps its high byte, I and F are clipped to
    0..255, alpha is dropped), a palette image whose pixels are all grey too; everything else
    (``P, RGBA, CMYK, YCbCr, RGB...``) becomes RGB through Pillow's ``convert("RGB")`` (alpha
    dropped, not composited). A file that does not decode gets a null ``pixels`` and a short
    ``error`` such as ``"not an image (cannot identify image file)"`` or ``"truncated or corrupt:
    image file is truncated"``; nothing is raised in the executors.

    Parameters
    ----------
    df : DataFrame
        E.g. ``spark.read.format("binaryFile").load(folder)``.
    content_col : str
        The binary column of file bytes.
    path_col : str or None
        The column naming each file (used in error messages); None or a missing column gives
        null paths.
    """
    if content_col not in df.columns:
        raise DataValidationError(f"column {content_col!r} not found; columns: {df.columns}")
    if not isinstance(df.schema[content_col].dataType, T.BinaryType):
        raise DataValidationError(f"column {content_col!r} must be binary (file bytes, as binaryFile's content), "
                                  f"got {df.schema[content_col].dataType.simpleString()}")
    has_path = path_col is not None and path_col in df.columns
    _free_columns(df, [*DECODED_COLUMNS, _TMP] + ([] if has_path and path_col == "path" else ["path"]))
    _require_pillow_here(df.sparkSession)
    decode = arrow_udf(_decode_batch, DECODED_TYPE, df.sparkSession)  # per call: a UDF binds to its session
    path = F.col(path_col).cast("string") if has_path else F.lit(None).cast("string")
    return _with_decoded(df, decode(F.col(content_col)), path)


def _is_image_struct(dtype: T.DataType) -> bool:
    return isinstance(dtype, T.StructType) and set(IMAGE_SOURCE_FIELDS) <= set(dtype.fieldNames())


def _hadoop_path(origin, spark):
    """The image source's ``origin`` (a URI: ``file:///a%20b/x.png``) as binaryFile's ``path``
    prints the same file (``file:/a b/x.png``). A ``+`` stays a plus (URL decoding would make it a space)."""
    decoded = F.coalesce(try_url_decode(F.replace(origin, F.lit("+"), F.lit("%2B")), spark), origin)
    return F.regexp_replace(decoded, r"^([A-Za-z][A-Za-z0-9+.-]*:)///", "$1/")


def from_image_source(df: DataFrame, col: str = "image") -> DataFrame:
    """A frame of ``spark.read.format("image")`` as the intermediate (lazy).

    The struct column ``col`` (``origin, height, width, nChannels, mode, data``; ``data`` in
    BGR(A) order, 1, 3 or 4 channels) is replaced by ``path`` (``origin`` in the form
    ``binaryFile`` prints paths), ``pixels`` (RGB order, alpha dropped), ``height``, ``width``,
    ``channels`` (1 or 3) and ``error``. Rows Spark could not decode (with ``dropInvalid``
    false: height -1, empty data) get the error ``"not an image (Spark's image source could
    not decode it)"``. Spark decodes with Java's ImageIO, not Pillow: PNG pixels equal
    :func:`decode_binary`'s, and so did JPEG ones in the tests (Java 17 against Pillow 13's
    libjpeg; other decoders may differ by a level), but grey palette images (GIF, 8-bit BMP)
    arrive as 3 channels.
    """
    if col not in df.columns:
        raise DataValidationError(f"column {col!r} not found; columns: {df.columns}")
    if not _is_image_struct(df.schema[col].dataType):
        raise DataValidationError(f"column {col!r} must be the struct of Spark's image source "
                                  f"({', '.join(IMAGE_SOURCE_FIELDS)}), got {df.schema[col].dataType.simpleString()}")
    _free_columns(df, [*DECODED_COLUMNS, _TMP, "path"], replaced=col)
    convert = arrow_udf(_from_image_source_batch, DECODED_TYPE, df.sparkSession)
    image = F.col(col)
    decoded = convert(image.getField("data"), image.getField("nChannels"), image.getField("height"),
                      image.getField("width"))
    return _with_decoded(df, decoded, _hadoop_path(image.getField("origin"), df.sparkSession), drop=col)


def _require_decoded(df: DataFrame) -> None:
    missing = [c for c in ("path", *DECODED_COLUMNS) if c not in df.columns]
    if missing:
        raise DataValidationError(f"not a frame of decoded images: missing column(s) {missing} (make one with "
                                  f"decode_binary or from_image_source); columns: {df.columns}")


def _check_shape(image_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in image_shape)
        ok = len(shape) == 3 and shape[0] > 0 and shape[1] > 0 and shape[2] in (1, 3) and \
            all(float(v) == s for v, s in zip(image_shape, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"image_shape must be (height, width, channels) with positive sizes and 1 or 3 channels, "
                          f"got {image_shape!r}")
    return shape


def _check_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    try:
        size = tuple(int(v) for v in image_size)
        ok = len(size) == 2 and min(size) > 0 and all(float(v) == s for v, s in zip(image_size, size))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"image_size must be (height, width) of positive ints, got {image_size!r}")
    return size


def _check_channels(channels) -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(channels)


def to_features(df: DataFrame, image_shape: tuple[int, int, int], out_col: str = "image") -> DataFrame:
    """The intermediate as ``out_col array<float>`` of H*W*C values, row-major (H, W, C), in [0, 1] (lazy).

    Each value is ``uint8 / 255`` computed in float32 (as :func:`dfnet.datasets.to_dataframe`
    scales IDX pixels). An image whose channels differ from C is converted first (RGB -> grey
    with Pillow's ``convert("L")``, so the values equal Pillow's; grey -> RGB replicates the
    value), and one whose size differs from (H, W) is then resized with Pillow's
    ``Image.resize(..., Image.Resampling.BILINEAR)`` (which Pillow widens to an antialiasing
    filter when shrinking); an image already at the shape is only scaled, bit for bit. Runs in
    a vectorized Arrow UDF. The intermediate's ``pixels, height, width, channels, error`` are
    dropped (``path`` and every other column stay); a row without pixels (a bad file: run
    :func:`check_decoded` first) gets a null ``out_col``.
    """
    shape = _check_shape(image_shape)
    _require_decoded(df)
    features = arrow_udf(_features_function(shape), T.ArrayType(T.FloatType()), df.sparkSession)
    out = df.withColumn(out_col, features(F.col("pixels"), F.col("height"), F.col("width"), F.col("channels")))
    return out.drop(*[c for c in DECODED_COLUMNS if c != out_col])


# --- checking --------------------------------------------------------------------------


@dataclass
class ImageCheck:
    """What :func:`check_decoded` found in one aggregate job over the intermediate.

    Attributes
    ----------
    frame : DataFrame
        The intermediate that was checked, without its bad rows when ``skip_bad_images``.
    rows : int
        Rows checked, bad ones included.
    bad_count : int
        Rows whose file did not decode.
    bad : list of (path, error)
        The first :data:`MAX_EXAMPLES` of them, by path.
    sizes : list of (height, width, count, example path)
        Each distinct size of the readable images, most common first.
    colour : bool
        Whether any readable image decoded as RGB.
    image_shape : (height, width, channels)
        ``image_size`` or the common size; ``channels`` or 3 if any image is colour, else 1.
    skipped_count, skipped
        ``bad_count`` and ``bad`` when ``skip_bad_images`` left them out; else 0 and [].
    """

    frame: DataFrame
    rows: int
    bad_count: int
    bad: list[tuple[str, str]]
    sizes: list[tuple[int, int, int, str]]
    colour: bool
    image_shape: tuple[int, int, int]
    skipped_count: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: DataFrame | None = field(default=None, repr=False)  # the frame checked (what unpersist releases)

    @property
    def good_rows(self) -> int:
        return self.rows - self.bad_count

    def unpersist(self) -> None:
        """Release the decoded intermediate if it was persisted (as :func:`as_training_frame` does)."""
        (self.source if self.source is not None else self.frame).unpersist()


@dataclass
class _Summary:
    rows: int = 0
    bad_count: int = 0
    bad: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict)  # (h, w) -> [count, example]
    colour: bool = False
    good_by: dict = field(default_factory=dict)  # the `by` key -> readable rows


def _summarize(df: DataFrame, by: str | None = None) -> _Summary:
    """One aggregate job: rows per (size, channels) of the readable images and the bad rows'
    examples (gathered in hash buckets, so no single group collects every bad file)."""
    bad = F.col("error").isNotNull()
    keys = [F.when(~bad, F.col("height")).alias("h"), F.when(~bad, F.col("width")).alias("w"),
            F.when(~bad, F.col("channels")).alias("c"),
            F.when(bad, F.pmod(F.xxhash64(F.coalesce(F.col("path"), F.lit(""))), F.lit(_BAD_BUCKETS))).alias("b")]
    if by is not None:
        keys.append(F.col(by).alias("by"))
    examples = F.collect_list(F.when(bad, F.struct(F.coalesce(F.col("path"), F.lit("<no path>")).alias("path"),
                                                   F.col("error").alias("error"))))
    groups = df.groupBy(*keys).agg(F.count(F.lit(1)).alias("n"), F.min("path").alias("example"),
                                   F.slice(F.sort_array(examples), 1, MAX_EXAMPLES).alias("bad")).collect()
    out = _Summary()
    for g in groups:
        out.rows += g["n"]
        if g["b"] is not None:
            out.bad_count += g["n"]
            out.bad.extend((e["path"], e["error"]) for e in g["bad"])
            continue
        size = out.sizes.setdefault((g["h"], g["w"]), [0, None])
        size[0] += g["n"]
        if g["example"] is not None and (size[1] is None or g["example"] < size[1]):
            size[1] = g["example"]
        out.colour |= g["c"] == 3
        if by is not None:
            out.good_by[g["by"]] = out.good_by.get(g["by"], 0) + g["n"]
    out.bad = sorted(out.bad)[:MAX_EXAMPLES]
    return out


def _bad_message(summary: _Summary) -> str:
    path, error = summary.bad[0]
    text = f"{path}: {error}"
    more = summary.bad_count - 1
    if more:
        listed = "; ".join(f"{p}: {e}" for p, e in summary.bad[1:4])
        text += f" (and {more} more bad file{'s' if more > 1 else ''}: {listed}{'; ...' if more > 3 else ''})"
    return text + "; pass skip_bad_images=True (--skip-bad-images) to leave bad files out"


def _sizes_message(sizes: list[tuple[int, int, int, str]]) -> str:
    shown = ", ".join(f"{n} {'is' if n == 1 else 'are'} {h}x{w} (e.g. {example})" for h, w, n, example in sizes[:5])
    if len(sizes) > 5:
        shown += f", and {len(sizes) - 5} more sizes"
    return (f"images differ in size (height x width): {shown}; pass image_size=(H, W) (--image-size H,W) "
            f"to resize them all")


def _resolve(df: DataFrame, summary: _Summary, image_size, channels, skip_bad_images: bool,
             what: str) -> ImageCheck:
    if summary.bad_count and not skip_bad_images:
        raise ImageFolderError(_bad_message(summary))
    sizes = sorted(((h, w, n, ex) for (h, w), (n, ex) in summary.sizes.items()), key=lambda s: (-s[2], s[0], s[1]))
    if not sizes and (image_size is None or channels is None):
        found = f"; all {summary.bad_count} are bad, e.g. {summary.bad[0][0]}: {summary.bad[0][1]}" \
            if summary.bad_count else ""
        raise ImageFolderError(f"no readable images in {what}{found}")
    if image_size is None and len(sizes) > 1:
        raise ImageFolderError(_sizes_message(sizes))
    size = image_size or (sizes[0][0], sizes[0][1])
    shape = (int(size[0]), int(size[1]), channels or (3 if summary.colour else 1))
    skipped = summary.bad if skip_bad_images else []
    frame = df.where(F.col("error").isNull()) if skip_bad_images and summary.bad_count else df
    return ImageCheck(frame=frame, rows=summary.rows, bad_count=summary.bad_count, bad=summary.bad, sizes=sizes,
                      colour=summary.colour, image_shape=shape,
                      skipped_count=summary.bad_count if skip_bad_images else 0, skipped=skipped, source=df)


def check_decoded(df: DataFrame, *, image_size: tuple[int, int] | None = None, channels: int | None = None,
                  skip_bad_images: bool = False) -> ImageCheck:
    """Check the intermediate in ONE aggregate job (persist ``df`` first and this job is its decoding pass).

    Raises
    ------
    ImageFolderError
        Naming the first bad file (and counting the rest) unless ``skip_bad_images``, which
        leaves the bad rows out of :attr:`ImageCheck.frame` and lists them in ``skipped``;
        when ``image_size`` is None and the images differ in size, naming one file of each
        size; when no readable image is left to give the shape.
    """
    _require_decoded(df)
    size, chans = _check_size(image_size), _check_channels(channels)
    return _resolve(df, _summarize(df), size, chans, skip_bad_images, "the frame")


# --- folders ---------------------------------------------------------------------------


@dataclass
class ImageFolder:
    """A folder of class folders, decoded once (see :func:`read_image_folder`).

    ``train`` and ``test`` are lazy frames ``id long, image array<float>, label int, path
    string`` over the persisted intermediate; ``label`` indexes ``class_names``.
    ``ignored_count`` counts the files under the folder that were not read (other extensions,
    or not inside a class folder). ``check`` is the full :class:`ImageCheck` (sizes, colour).
    """

    train: DataFrame
    test: DataFrame
    class_names: list[str]
    image_shape: tuple[int, int, int]
    train_rows: int
    test_rows: int
    skipped: list[tuple[str, str]]
    skipped_count: int
    ignored_count: int
    split_folders: bool
    check: ImageCheck = field(repr=False)
    decoded: DataFrame = field(repr=False)

    def unpersist(self) -> None:
        """Release the decoded images (``train`` and ``test`` decode again if used after this)."""
        self.decoded.unpersist()


def _check_extensions(extensions) -> tuple[str, ...]:
    values = (extensions,) if isinstance(extensions, str) else tuple(extensions)
    bad = [e for e in values if not isinstance(e, str) or not _EXTENSION.match(e)]
    if not values or bad:
        raise ConfigError(f"extensions must be file name endings such as '.png', got {extensions!r}")
    return tuple(dict.fromkeys(e.lower() for e in values))


def _glob(extensions: tuple[str, ...]) -> str:
    """A case-insensitive Hadoop glob for the file names (pathGlobFilter matches names, not folders)."""
    alternatives = ["".join(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() else ch for ch in e[1:]) for e in extensions]
    return "*.{" + ",".join(alternatives) + "}"


def _root_path(spark, path: str) -> tuple[str, str]:
    """(the folder as Spark should get it, its path part: ``/data/x``) for matching Spark's paths."""
    uri = spark_path(spark, path)
    match = re.match(_SCHEME_AUTHORITY, uri)
    part = uri[match.end():] if match else uri
    if not part.startswith("/"):
        raise ImageFolderError(f"{path}: give an absolute path or a URI (scheme://host/path) for a folder on a "
                               f"file system other than this machine's")
    return uri, posixpath.normpath(part)


def _relative(root_path: str):
    """The file's path relative to the root (null for one outside it), from binaryFile's ``path``."""
    prefix = root_path.rstrip("/") + "/"
    file_path = F.regexp_replace(F.col("path"), _SCHEME_AUTHORITY, "")
    return F.when(file_path.startswith(prefix), file_path.substr(len(prefix) + 1, 1 << 30))


def _local_dirs(folder: str) -> list[str]:
    """Sub-folders Spark would list (not hidden: no leading ``.`` or ``_``)."""
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith((".", "_")))
    except OSError:
        return []


@dataclass
class _Layout:
    split_folders: bool
    class_names: list[str]
    images: int
    bytes: int
    ignored: int


def _list_folder(spark, reader, uri: str, root_path: str, shown: str, extensions: tuple[str, ...]) -> _Layout:
    """Find the class folders from the files' paths alone (one small job; binaryFile reads no
    content for it) and refuse a layout that gives no classes or an empty class."""
    local = not is_connect(spark) and uri.startswith("file:")
    if local and not os.path.isdir(root_path):
        raise ImageFolderError(f"{shown}: no such folder" if not os.path.exists(root_path) else
                               f"{shown}: not a folder (expected <folder>/<class>/<image>)")
    ending = "|".join(e[1:].lower() for e in extensions)
    rel = F.col("rel")
    parts = F.split(rel, "/")
    top = F.when(F.size(parts) >= 2, F.element_at(parts, 1))
    second = F.when(top.isin("train", "test") & (F.size(parts) >= 3), F.element_at(parts, 2))
    is_image = F.lower(rel).rlike(rf"\.({ending})$")
    try:
        # Paths and lengths only: a few tasks list any number of files.
        listed = (reader.load(uri).select(_relative(root_path).alias("rel"), "length").where(rel.isNotNull())
                  .coalesce(task_slots(spark, 2)))
        groups = (listed.select(top.alias("top"), second.alias("second"), is_image.alias("image"), "length")
                  .groupBy("top", "second")
                  .agg(F.count(F.lit(1)).alias("files"), F.sum(F.col("image").cast("long")).alias("images"),
                       F.sum(F.when(F.col("image"), F.col("length")).otherwise(0)).alias("bytes"))
                  .collect())
    except spark_errors() as exc:
        raise ImageFolderError(f"{shown}: cannot list it: {first_line(exc)}") from exc
    files = sum(g["files"] for g in groups)
    below: dict[str | None, int] = {}  # top folder (None: files directly in the root) -> images anywhere below
    inner: dict[str, dict[str, int]] = {"train": {}, "test": {}}  # train|test -> class folder -> images
    for g in groups:
        below[g["top"]] = below.get(g["top"], 0) + g["images"]
        if g["second"] is not None:
            inner[g["top"]][g["second"]] = inner[g["top"]].get(g["second"], 0) + g["images"]
    loose = below.pop(None, 0)
    if local:  # empty folders hold no file for Spark to list; here they can be seen
        for name in _local_dirs(root_path):
            below.setdefault(name, 0)
    wanted = ", ".join(extensions)
    split = "train" in below and "test" in below

    def empty_class(folder: str) -> ImageFolderError:
        return ImageFolderError(f"{folder}: class folder holds no images (no {wanted} files)")

    if split:
        others = sorted(set(below) - {"train", "test"})
        if others:
            raise ImageFolderError(
                f"{shown}: holds train/ and test/, so those two must hold the class folders, but it also holds "
                f"{', '.join(o + '/' for o in others)}; move them into train/ and test/, or read a folder with "
                f"only class folders")
        if local:
            for s in ("train", "test"):
                for name in _local_dirs(os.path.join(root_path, s)):
                    inner[s].setdefault(name, 0)
        for s in ("train", "test"):
            if not inner[s]:
                raise ImageFolderError(f"{shown}/{s}: no class folders (expected {shown}/{s}/<class>/<image>)")
            for name, count in sorted(inner[s].items()):
                if not count:
                    raise empty_class(f"{shown}/{s}/{name}")
        if set(inner["train"]) != set(inner["test"]):
            only_train = sorted(set(inner["train"]) - set(inner["test"]))
            only_test = sorted(set(inner["test"]) - set(inner["train"]))
            raise ImageFolderError(f"{shown}: train/ and test/ must hold the same class folders; only in train/: "
                                   f"{only_train or 'none'}; only in test/: {only_test or 'none'}")
        classes = sorted(inner["train"])
        images = sum(inner["train"].values()) + sum(inner["test"].values())
    else:
        if not below:
            found = (f"found {loose} image file(s) directly in it" if loose else
                     f"found {files} file(s), none of them an image ({wanted})" if files else "found nothing")
            raise ImageFolderError(f"{shown}: no class folders: expected {shown}/<class>/<image> (one folder per "
                                   f"class, e.g. {shown}/cat/1.png); {found}")
        for name, count in sorted(below.items()):
            if not count:
                raise empty_class(f"{shown}/{name}")
        classes = sorted(below)
        images = sum(below.values())
    used_bytes = sum(g["bytes"] for g in groups if g["top"] is not None and (not split or g["second"] is not None))
    return _Layout(split, classes, images, used_bytes, files - images)


def read_image_folder(spark: SparkSession, path: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                      channels: int | None = None, test_fraction: float = 0.2, seed: int = 0,
                      skip_bad_images: bool = False, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> ImageFolder:
    """Read a folder of class folders into training and test frames, decoding each image once.

    The layout is torchvision's ``ImageFolder`` / Keras' ``image_dataset_from_directory``:
    ``path/<class>/<image>`` (images may sit in sub-folders of a class folder), the labels
    being the sorted class folder names numbered 0..k-1. When ``path/train/`` and
    ``path/test/`` both exist, each holds the class folders (the same set in both) and they
    give the split (``test_fraction`` and ``seed`` are then unused); otherwise a row is in the
    test split when a hash of its path relative to ``path`` and ``seed`` falls below
    ``test_fraction`` (stable across runs and layouts). Files whose names end otherwise than
    ``extensions`` (any case) are ignored, and so are files directly in ``path`` (or in
    ``train/`` / ``test/``) beside the class folders; hidden ones (``.x``, ``_x``) Spark skips.

    Works on any path Spark reads (``file:``, ``hdfs://``, ``s3a://``, ``dbfs:``, Volumes) and
    on Spark Connect, through ``spark.read.format("binaryFile")`` (whose file sources skip empty,
    0-byte files: they are neither read nor reported). Jobs: one small one over
    the files' paths (binaryFile reads no content for it) finds the class folders before any
    decoding; then one aggregate job decodes every image into the persisted intermediate and
    checks it (:func:`check_decoded`); ``train`` / ``test`` read that intermediate. A class
    folder with no files at all is seen only where this process can list folders (a classic
    session and a local path); elsewhere Spark lists files, not folders, so such a folder is
    absent rather than refused (one holding only other files is still refused). Nothing
    under ``path`` is written or changed.

    Parameters
    ----------
    spark : SparkSession
    path : str or PathLike
        The folder: a local path, or a URI Spark reads.
    image_size : (height, width), optional
        Resize every image to it (see :func:`to_features`); by default all images must have
        one size.
    channels : {1, 3}, optional
        By default 3 if any image is colour, else 1.
    test_fraction : float in [0, 1)
        Share of the images in the test split, without train/test folders.
    seed : int
        Seed of that split.
    skip_bad_images : bool
        Leave files that do not decode out (counted and listed in ``skipped``) instead of
        raising.
    extensions : sequence of str
        File name endings to read.

    Raises
    ------
    ImageFolderError
        Naming the folder or file: no such folder, no class folders, an empty class folder,
        train/ and test/ with different classes, a bad file (unless ``skip_bad_images``),
        images of different sizes without ``image_size``.
    """
    size, chans = _check_size(image_size), _check_channels(channels)
    exts = _check_extensions(extensions)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or \
            not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    shown = os.fspath(path).rstrip("/") or "/"
    uri, root_path = _root_path(spark, shown)
    _require_pillow_here(spark)
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    layout = _list_folder(spark, reader, uri, root_path, shown, exts)

    scan = reader.option("pathGlobFilter", _glob(exts)).load(uri)
    rel = F.col("rel")
    parts = F.split(rel, "/")
    if layout.split_folders:
        split_col, class_col = F.element_at(parts, 1), F.element_at(parts, 2)
        keep = (F.size(parts) >= 3) & split_col.isin("train", "test")
    else:
        class_col = F.element_at(parts, 1)
        keep = F.size(parts) >= 2
        bucket = F.pmod(F.xxhash64(rel, F.lit(int(seed)), F.lit("test")), F.lit(_SPLIT_BUCKETS))
        split_col = F.when(bucket < F.lit(int(round(test_fraction * _SPLIT_BUCKETS))), F.lit("test")) \
            .otherwise(F.lit("train"))
    rows = (scan.select("path", "content", _relative(root_path).alias("rel"))
            .where(rel.isNotNull() & keep & class_col.isin(layout.class_names))
            .select(F.xxhash64(F.lit("dfnet.images"), rel).bitwiseAND(F.lit(_ID_MASK)).alias("id"),
                    index_of(layout.class_names, class_col).alias("label"),
                    split_col.alias("split"), "path", "content"))
    slots = task_slots(spark, 2)
    tasks = max(1, math.ceil(layout.images / IMAGES_PER_TASK), math.ceil(layout.bytes / BYTES_PER_TASK))
    rows = rows.coalesce(slots * math.ceil(tasks / slots))
    decoded = decode_binary(rows, "content", "path").drop("content").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        try:
            summary = _summarize(decoded, by="split")
        except spark_errors() as exc:
            raise ImageFolderError(f"{shown}: cannot read its images: {first_line(exc)}") from exc
        check = _resolve(decoded, summary, size, chans, skip_bad_images, shown)
    except BaseException:
        decoded.unpersist()
        raise
    good = check.frame

    def split_frame(name: str) -> DataFrame:
        return to_features(good.where(F.col("split") == name), check.image_shape).select("id", "image", "label", "path")

    return ImageFolder(train=split_frame("train"), test=split_frame("test"), class_names=layout.class_names,
                       image_shape=check.image_shape, train_rows=summary.good_by.get("train", 0),
                       test_rows=summary.good_by.get("test", 0), skipped=check.skipped,
                       skipped_count=check.skipped_count, ignored_count=layout.ignored,
                       split_folders=layout.split_folders, check=check, decoded=decoded)


@dataclass
class ImageFiles:
    """Image files to score (see :func:`read_images`): ``frame`` is ``id long, image array<float>,
    label int (null when the file's folder is no known class), path string``, lazy over the
    persisted decoded images."""

    frame: DataFrame
    image_shape: tuple[int, int, int]
    rows: int
    labelled_rows: int
    skipped: list[tuple[str, str]]
    skipped_count: int
    check: ImageCheck = field(repr=False)

    def unpersist(self) -> None:
        """Release the decoded images."""
        self.check.unpersist()


def read_images(spark: SparkSession, path: str | os.PathLike, *, image_shape: tuple[int, int, int],
                class_names: Sequence[str] | None = None, skip_bad_images: bool = False,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> ImageFiles:
    """Every image file under ``path`` (any depth), decoded once, at ``image_shape`` (H, W, C), to score.

    A file is labelled with the index in ``class_names`` of its class folder, found as
    :func:`read_image_folder` finds it (``path/<class>/.../x.png``, ``path/test/<class>/x.png``,
    or ``path`` itself when that is named as a class: ``.../Bag/x.png``), and unlabelled (null)
    when that folder is no class name, e.g. ``new-photos/x.png``. Images of any size are
    resized to ``image_shape`` (bilinear, as :func:`to_features`). Jobs: one aggregate job
    decodes and checks every file (:func:`check_decoded`). Nothing under ``path`` is changed.

    Raises
    ------
    ImageFolderError
        No such folder, no image files under it, a file that is no image or is truncated
        (unless ``skip_bad_images``: left out and listed in ``skipped``).
    """
    size, chans = _split_shape(image_shape)
    if chans is None:
        raise ConfigError(f"image_shape must be (height, width, channels), got {image_shape!r}")
    exts = _check_extensions(extensions)
    shown = os.fspath(path).rstrip("/") or "/"
    uri, root_path = _root_path(spark, shown)
    if not is_connect(spark) and uri.startswith("file:") and not os.path.isdir(root_path):
        raise ImageFolderError(f"{shown}: no such folder")
    _require_pillow_here(spark)
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true") \
        .option("pathGlobFilter", _glob(exts))
    rel = F.col("rel")
    parts = F.split(rel, "/")
    # the class folder as read_image_folder reads it: the first folder below ``path``, or the second
    # below ``train/`` or ``test/``; for files straight under ``path``, ``path``'s own name (``.../Bag``)
    top = F.element_at(parts, 1)
    parent = (F.when(top.isin("train", "test") & (F.size(parts) >= 3), F.element_at(parts, 2))
              .when(F.size(parts) >= 2, top).otherwise(F.lit(posixpath.basename(root_path))))
    label = index_of([str(c) for c in (class_names or ["\0"])], parent)
    rows = (reader.load(uri).select("path", "content", _relative(root_path).alias("rel"))
            .where(rel.isNotNull())
            .select(F.xxhash64(F.lit("dfnet.images"), rel).bitwiseAND(F.lit(_ID_MASK)).alias("id"),
                    label.alias("label"), "path", "content"))
    rows = rows.coalesce(2 * task_slots(spark, 2))
    decoded = decode_binary(rows, "content", "path").drop("content") \
        .withColumn("labelled", F.col("label").isNotNull()).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        try:
            summary = _summarize(decoded, by="labelled")
        except spark_errors() as exc:
            raise ImageFolderError(f"{shown}: cannot read its images: {first_line(exc)}") from exc
        if summary.rows == 0:
            raise ImageFolderError(f"{shown}: no image files ({', '.join(exts)}) in it or below it")
        check = _resolve(decoded, summary, size, chans, skip_bad_images, shown)
    except BaseException:
        decoded.unpersist()
        raise
    frame = to_features(check.frame, check.image_shape).select("id", "image", "label", "path")
    return ImageFiles(frame=frame, image_shape=check.image_shape, rows=check.good_rows,
                      labelled_rows=summary.good_by.get(True, 0), skipped=check.skipped,
                      skipped_count=check.skipped_count, check=check)


def is_image_column(df: DataFrame, col: str) -> bool:
    """Whether ``df[col]`` holds images to decode: the struct of ``spark.read.format("image")`` or
    file bytes (``binaryFile``'s ``content``), as :func:`as_training_frame` takes them."""
    if col not in df.columns:
        return False
    kind = df.schema[col].dataType
    return _is_image_struct(kind) or isinstance(kind, T.BinaryType)


# --- user frames -----------------------------------------------------------------------


def _split_shape(image_shape) -> tuple[tuple[int, int] | None, int | None]:
    if image_shape is None:
        return None, None
    values = tuple(image_shape) if not isinstance(image_shape, str) else ()
    if len(values) == 3:
        return _check_size(values[:2]), _check_channels(values[2])
    if len(values) == 2:
        return _check_size(values), None
    raise ConfigError(f"image_shape must be (height, width) or (height, width, channels), got {image_shape!r}")


def as_training_frame(df: DataFrame, features_col: str, *, image_shape: tuple[int, ...] | None = None,
                      skip_bad_images: bool = False, persist: bool = True
                      ) -> tuple[DataFrame, tuple[int, int, int] | None, ImageCheck | None]:
    """``df`` with the images in ``features_col`` as ``array<float>`` features, ready for fit or predict.

    ``features_col`` may hold the struct of ``spark.read.format("image")``
    (:func:`from_image_source`) or file bytes, e.g. ``binaryFile``'s ``content``
    (:func:`decode_binary`; its ``path`` column, when there is one, names the files in errors).
    The images are checked by :func:`check_decoded` (one aggregate job, the decoding pass: with
    ``persist`` the intermediate is persisted so that it is the only one; release it with
    ``check.unpersist()``) and turned into features by :func:`to_features` at ``image_shape``
    ((H, W, C), or (H, W) with the channels from the data; by default the images' common
    size). The returned frame has ``df``'s columns, ``features_col`` replaced by the features,
    plus ``path`` (the image source's ``origin``) if ``df`` had none. An array column is
    returned unchanged, with ``None`` for the shape and the check.

    Returns
    -------
    (frame, image_shape, check)
    """
    if features_col not in df.columns:
        raise DataValidationError(f"column {features_col!r} not found; columns: {df.columns}")
    dtype = df.schema[features_col].dataType
    if isinstance(dtype, T.ArrayType):
        return df, None, None
    size, chans = _split_shape(image_shape)
    if _is_image_struct(dtype):
        decoded = from_image_source(df, features_col)
    elif isinstance(dtype, T.BinaryType):
        decoded = decode_binary(df, features_col, "path" if "path" in df.columns else None).drop(features_col)
    else:
        raise DataValidationError(f"column {features_col!r} must hold images (binary file bytes, or the struct of "
                                  f"Spark's image source) or an array of pixel values, got {dtype.simpleString()}")
    if persist:
        decoded = decoded.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        check = check_decoded(decoded, image_size=size, channels=chans, skip_bad_images=skip_bad_images)
    except BaseException:
        if persist:
            decoded.unpersist()
        raise
    frame = to_features(check.frame, check.image_shape, out_col=features_col)
    columns = list(df.columns) + (["path"] if "path" not in df.columns else [])
    return frame.select(*columns), check.image_shape, check
