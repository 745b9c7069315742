"""Folders of image files -> training rows: :func:`read_image_folder` (a folder of class folders
into ``train`` and ``test``) and :func:`read_images` (every image under a folder, to score).

Both read the files with ``spark.read.format("binaryFile")``, decode them once into the
persisted intermediate and check it in one job (:func:`~dfnet.images.checks.decode_and_check`);
the frames they give, ``id long, image array<float>, label int, path string``, read that cache.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from dfnet.compat import index_of
from dfnet.errors import ConfigError, ImageFolderError
from dfnet.images.checks import ImageCheck, decode_and_check
from dfnet.images.decode import (decode_binary, require_pillow_here, to_features, valid_channels, valid_image_size,
                                 valid_size_and_channels)
from dfnet.images.layout import (IMAGE_EXTENSIONS, Layout, class_folder, list_folder, name_glob,
                                 relative_path, root_path, row_id, valid_extensions)
from dfnet.session import is_connect, task_slots
from dfnet.splits import is_held_out

# Files are many and small: Spark's file partitions hold ~32 each (openCostInBytes), so the
# decode pass is coalesced to fewer, larger tasks: about this many images or compressed bytes each.
IMAGES_PER_TASK = 4096
BYTES_PER_TASK = 32 << 20

#: The salt of the folder's seeded test split (see :mod:`dfnet.splits`).
TEST_SALT = "test"
_COLUMNS = ("id", "image", "label", "path")


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
    ``test_fraction`` (:func:`dfnet.splits.is_held_out`, salt ``"test"``: stable across runs). Files whose names end otherwise than
    ``extensions`` (any case) are ignored, and so are files directly in ``path`` (or in
    ``train/`` / ``test/``) beside the class folders; hidden ones (``.x``, ``_x``) Spark skips.

    Works on any path Spark reads (``file:``, ``hdfs://``, ``s3a://``, ``dbfs:``, Volumes) and
    on Spark Connect, through ``spark.read.format("binaryFile")`` (whose file sources skip empty,
    0-byte files: they are neither read nor reported). Jobs: one small one over
    the files' paths (binaryFile reads no content for it) finds the class folders before any
    decoding; then one aggregate job decodes every image into the persisted intermediate and
    checks it (:func:`~dfnet.images.checks.decode_and_check`); ``train`` / ``test`` read that intermediate. A class
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
    size, chans = valid_image_size(image_size), valid_channels(channels)
    exts = valid_extensions(extensions)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or \
            not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    shown = _shown(path)
    uri, root = root_path(spark, shown)
    require_pillow_here(spark)
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    layout = list_folder(spark, reader, uri, root, shown, exts)

    rel = F.col("rel")
    folder = class_folder(rel, layout.split_folders)
    split = F.element_at(F.split(rel, "/"), 1) if layout.split_folders else \
        F.when(is_held_out([rel], test_fraction, int(seed), TEST_SALT), F.lit("test")).otherwise(F.lit("train"))
    rows = _file_rows(reader, uri, root, exts, where=folder.isin(layout.class_names),
                      label=index_of(layout.class_names, folder), split=split)
    rows = rows.coalesce(_decode_tasks(spark, layout))
    check = decode_and_check(decode_binary(rows, "content", "path").drop("content"), image_size=size,
                             channels=chans, skip_bad_images=skip_bad_images, folder=shown, by="split")

    def split_frame(name: str) -> DataFrame:
        return to_features(check.frame.where(F.col("split") == name), check.image_shape).select(*_COLUMNS)

    return ImageFolder(train=split_frame("train"), test=split_frame("test"), class_names=layout.class_names,
                       image_shape=check.image_shape, train_rows=check.good_rows_by.get("train", 0),
                       test_rows=check.good_rows_by.get("test", 0), skipped=check.skipped,
                       skipped_count=check.skipped_count, ignored_count=layout.ignored,
                       split_folders=layout.split_folders, check=check, decoded=check.source)


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
    decodes and checks every file (:func:`~dfnet.images.checks.decode_and_check`). Nothing under ``path`` is changed.

    Raises
    ------
    ImageFolderError
        No such folder, no image files under it, a file that is no image or is truncated
        (unless ``skip_bad_images``: left out and listed in ``skipped``).
    """
    size, chans = valid_size_and_channels(image_shape)
    if chans is None:
        raise ConfigError(f"image_shape must be (height, width, channels), got {image_shape!r}")
    exts = valid_extensions(extensions)
    shown = _shown(path)
    uri, root = root_path(spark, shown)
    if not is_connect(spark) and uri.startswith("file:") and not os.path.isdir(root):
        raise ImageFolderError(f"{shown}: no such folder")
    require_pillow_here(spark)
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    # files straight under ``path`` belong to ``path``'s own name (``.../Bag/x.png``)
    folder = F.coalesce(class_folder(F.col("rel"), split_folders=None), F.lit(posixpath.basename(root)))
    rows = _file_rows(reader, uri, root, exts, label=index_of([str(c) for c in (class_names or ["\0"])], folder))
    rows = rows.coalesce(2 * task_slots(spark, 2))
    decoded = decode_binary(rows, "content", "path").drop("content").withColumn("labelled", F.col("label").isNotNull())
    check = decode_and_check(decoded, image_size=size, channels=chans, skip_bad_images=skip_bad_images,
                             folder=shown, by="labelled",
                             no_rows=f"{shown}: no image files ({', '.join(exts)}) in it or below it")
    frame = to_features(check.frame, check.image_shape).select(*_COLUMNS)
    return ImageFiles(frame=frame, image_shape=check.image_shape, rows=check.good_rows,
                      labelled_rows=check.good_rows_by.get(True, 0), skipped=check.skipped,
                      skipped_count=check.skipped_count, check=check)


def _shown(path: str | os.PathLike) -> str:
    """The folder as errors name it: as given, without a trailing slash."""
    return os.fspath(path).rstrip("/") or "/"


def _file_rows(reader, uri: str, root: str, extensions: tuple[str, ...], where: Column | None = None,
               **columns: Column) -> DataFrame:
    """``id, <columns>, path, content`` of the image files under ``root`` (lazy); ``where`` and
    ``columns`` are expressions of ``rel``, a file's path below ``root``."""
    rel = F.col("rel")
    keep = rel.isNotNull() if where is None else rel.isNotNull() & where
    files = reader.option("pathGlobFilter", name_glob(extensions)).load(uri)
    return (files.select("path", "content", relative_path(root).alias("rel")).where(keep)
            .select(row_id(rel).alias("id"), *[c.alias(n) for n, c in columns.items()], "path", "content"))


def _decode_tasks(spark, layout: Layout) -> int:
    """How many tasks decode the folder: enough for its images and bytes, a multiple of the task slots."""
    slots = task_slots(spark, 2)
    tasks = max(1, math.ceil(layout.images / IMAGES_PER_TASK), math.ceil(layout.bytes / BYTES_PER_TASK))
    return slots * math.ceil(tasks / slots)
