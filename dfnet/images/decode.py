"""Image bytes -> the decoded intermediate -> features: the Pillow side of :mod:`dfnet.images`.

The intermediate (see :mod:`dfnet.images`) is ``path string, pixels binary, height int,
width int, channels int, error string``: :func:`decode_binary` makes it from file bytes
(Pillow in the executors), :func:`from_image_source` from the struct of Spark's ``image``
source, and :func:`to_features` turns it into ``array<float>`` at one shape. Every UDF here
is a vectorized Arrow UDF made per call, as a UDF binds to the session that first used it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from io import BytesIO

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dfnet.compat import arrow_udf, try_url_decode
from dfnet.errors import ConfigError, DataValidationError
from dfnet.files import first_line
from dfnet.session import is_connect

PILLOW_MISSING = "decoding images needs Pillow, an optional dependency of dfnet: pip install 'dfnet[images]'"

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

# Pillow modes that hold one value per pixel (grey, with or without alpha); everything else is RGB.
_GREY_MODES = frozenset({"1", "L", "I", "F", "LA", "La"})
_TMP = "_dfnet_decoded"  # the UDF's struct, before it is split into columns


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


def require_pillow_here(spark) -> None:
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
    require_pillow_here(df.sparkSession)
    decode = arrow_udf(_decode_batch, DECODED_TYPE, df.sparkSession)  # per call: a UDF binds to its session
    path = F.col(path_col).cast("string") if has_path else F.lit(None).cast("string")
    return _with_decoded(df, decode(F.col(content_col)), path)


def is_image_struct(dtype: T.DataType) -> bool:
    """Whether ``dtype`` is the struct of Spark's ``image`` source."""
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
    if not is_image_struct(df.schema[col].dataType):
        raise DataValidationError(f"column {col!r} must be the struct of Spark's image source "
                                  f"({', '.join(IMAGE_SOURCE_FIELDS)}), got {df.schema[col].dataType.simpleString()}")
    _free_columns(df, [*DECODED_COLUMNS, _TMP, "path"], replaced=col)
    convert = arrow_udf(_from_image_source_batch, DECODED_TYPE, df.sparkSession)
    image = F.col(col)
    decoded = convert(image.getField("data"), image.getField("nChannels"), image.getField("height"),
                      image.getField("width"))
    return _with_decoded(df, decoded, _hadoop_path(image.getField("origin"), df.sparkSession), drop=col)


def require_decoded(df: DataFrame) -> None:
    """Refuse a frame that is not the intermediate, naming the missing columns."""
    missing = [c for c in ("path", *DECODED_COLUMNS) if c not in df.columns]
    if missing:
        raise DataValidationError(f"not a frame of decoded images: missing column(s) {missing} (make one with "
                                  f"decode_binary or from_image_source); columns: {df.columns}")


# --- features --------------------------------------------------------------------------


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
    shape = valid_image_shape(image_shape)
    require_decoded(df)
    features = arrow_udf(_features_function(shape), T.ArrayType(T.FloatType()), df.sparkSession)
    out = df.withColumn(out_col, features(F.col("pixels"), F.col("height"), F.col("width"), F.col("channels")))
    return out.drop(*[c for c in DECODED_COLUMNS if c != out_col])


# --- shape arguments (checked on the driver, before any job) ---------------------------


def valid_image_shape(image_shape) -> tuple[int, int, int]:
    """``image_shape`` as (H, W, C) ints, C 1 or 3; else a ConfigError naming it."""
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


def valid_image_size(image_size) -> tuple[int, int] | None:
    """``image_size`` as (H, W) positive ints (None stays None); else a ConfigError naming it."""
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


def valid_channels(channels) -> int | None:
    """1 or 3 (None stays None); else a ConfigError naming it."""
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(channels)


def valid_size_and_channels(image_shape) -> tuple[tuple[int, int] | None, int | None]:
    """``(image_size, channels)`` of an ``image_shape`` given as (H, W, C), (H, W) or None."""
    if image_shape is None:
        return None, None
    values = tuple(image_shape) if not isinstance(image_shape, str) else ()
    if len(values) == 3:
        return valid_image_size(values[:2]), valid_channels(values[2])
    if len(values) == 2:
        return valid_image_size(values), None
    raise ConfigError(f"image_shape must be (height, width) or (height, width, channels), got {image_shape!r}")
