"""A user's frame of images -> the frame ``fit`` and ``predict`` take: what
:func:`dfnet.train.fit` and :meth:`dfnet.model.TrainedModel.predict` call when the features
column holds images rather than an array of pixel values.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from dfnet.errors import DataValidationError
from dfnet.images.checks import ImageCheck, decode_and_check
from dfnet.images.decode import (decode_binary, from_image_source, is_image_struct, to_features,
                                 valid_size_and_channels)


def is_image_column(df: DataFrame, col: str) -> bool:
    """Whether ``df[col]`` holds images to decode: the struct of ``spark.read.format("image")`` or
    file bytes (``binaryFile``'s ``content``), as :func:`as_training_frame` takes them."""
    if col not in df.columns:
        return False
    kind = df.schema[col].dataType
    return is_image_struct(kind) or isinstance(kind, T.BinaryType)


def as_training_frame(df: DataFrame, features_col: str, *, image_shape: tuple[int, ...] | None = None,
                      skip_bad_images: bool = False, persist: bool = True
                      ) -> tuple[DataFrame, tuple[int, int, int] | None, ImageCheck | None]:
    """``df`` with the images in ``features_col`` as ``array<float>`` features, ready for fit or predict.

    ``features_col`` may hold the struct of ``spark.read.format("image")``
    (:func:`from_image_source`) or file bytes, e.g. ``binaryFile``'s ``content``
    (:func:`decode_binary`; its ``path`` column, when there is one, names the files in errors).
    The images are checked by :func:`~dfnet.images.checks.decode_and_check` (one aggregate job,
    the decoding pass: with ``persist`` the intermediate is persisted so that it is the only
    one; release it with ``check.unpersist()``) and turned into features by :func:`to_features`
    at ``image_shape`` ((H, W, C), or (H, W) with the channels from the data; by default the
    images' common size). The returned frame has ``df``'s columns, ``features_col`` replaced by the features,
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
    size, chans = valid_size_and_channels(image_shape)
    if is_image_struct(dtype):
        decoded = from_image_source(df, features_col)
    elif isinstance(dtype, T.BinaryType):
        decoded = decode_binary(df, features_col, "path" if "path" in df.columns else None).drop(features_col)
    else:
        raise DataValidationError(f"column {features_col!r} must hold images (binary file bytes, or the struct of "
                                  f"Spark's image source) or an array of pixel values, got {dtype.simpleString()}")
    check = decode_and_check(decoded, image_size=size, channels=chans, skip_bad_images=skip_bad_images,
                             persist=persist)
    frame = to_features(check.frame, check.image_shape, out_col=features_col)
    columns = list(df.columns) + (["path"] if "path" not in df.columns else [])
    return frame.select(*columns), check.image_shape, check
