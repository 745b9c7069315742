"""Where the images of a folder are: files' paths below the folder, the ONE class-folder rule,
the row ids, and the listing job that finds the class folders before any file is decoded.

A folder holds ``<class>/.../<image>`` or, when it has both ``train/`` and ``test/``,
``train|test/<class>/.../<image>`` (torchvision's ``ImageFolder`` layout). Every path here is
matched as Spark prints it (binaryFile's ``path``), so the same code works on any file system
Spark reads and on Spark Connect.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from dfnet.errors import ConfigError, ImageFolderError
from dfnet.files import first_line, spark_errors, spark_path
from dfnet.session import is_connect, task_slots

#: File name endings :func:`dfnet.images.read_image_folder` reads by default (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

#: The folders that give the split when a folder holds both.
SPLIT_FOLDERS = ("train", "test")

_SCHEME_AUTHORITY = r"^[A-Za-z][A-Za-z0-9+.-]*:(//[^/]*)?"
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]+$")
_ID_MASK = (1 << 63) - 1  # ids are non-negative longs


# --- paths ---------------------------------------------------------------------------------


def valid_extensions(extensions) -> tuple[str, ...]:
    """``extensions`` as lower-case endings such as ``.png``, without repeats; else a ConfigError."""
    values = (extensions,) if isinstance(extensions, str) else tuple(extensions)
    bad = [e for e in values if not isinstance(e, str) or not _EXTENSION.match(e)]
    if not values or bad:
        raise ConfigError(f"extensions must be file name endings such as '.png', got {extensions!r}")
    return tuple(dict.fromkeys(e.lower() for e in values))


def name_glob(extensions: tuple[str, ...]) -> str:
    """A case-insensitive Hadoop glob for the file names (pathGlobFilter matches names, not folders)."""
    alternatives = ["".join(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() else ch for ch in e[1:]) for e in extensions]
    return "*.{" + ",".join(alternatives) + "}"


def root_path(spark, path: str) -> tuple[str, str]:
    """(the folder as Spark should get it, its path part: ``/data/x``) for matching Spark's paths."""
    uri = spark_path(spark, path)
    match = re.match(_SCHEME_AUTHORITY, uri)
    part = uri[match.end():] if match else uri
    if not part.startswith("/"):
        raise ImageFolderError(f"{path}: give an absolute path or a URI (scheme://host/path) for a folder on a "
                               f"file system other than this machine's")
    return uri, posixpath.normpath(part)


def relative_path(root: str) -> Column:
    """The file's path relative to the root (null for one outside it), from binaryFile's ``path``."""
    prefix = root.rstrip("/") + "/"
    file_path = F.regexp_replace(F.col("path"), _SCHEME_AUTHORITY, "")
    return F.when(file_path.startswith(prefix), file_path.substr(len(prefix) + 1, 1 << 30))


def class_folder(rel: Column, split_folders: bool | None) -> Column:
    """The class folder of a file from its path ``rel`` below the root, null for a file in none.

    The one rule the listing and both readers follow: the first folder (``<class>/.../x``), or
    with ``split_folders`` the second below ``train/`` or ``test/`` (``train/<class>/.../x``);
    None, where the layout is not known (files to score), takes the second form when a path has
    it, else the first.
    """
    parts = F.split(rel, "/")
    first = F.when(F.size(parts) >= 2, F.element_at(parts, 1))
    in_split = F.when(F.element_at(parts, 1).isin(*SPLIT_FOLDERS) & (F.size(parts) >= 3), F.element_at(parts, 2))
    if split_folders is None:
        return F.coalesce(in_split, first)
    return in_split if split_folders else first


def row_id(rel: Column) -> Column:
    """A row's ``id``: a non-negative hash of the file's path below the root, the same in every run."""
    return F.xxhash64(F.lit("dfnet.images"), rel).bitwiseAND(F.lit(_ID_MASK))


# --- the listing job -----------------------------------------------------------------------


@dataclass
class Layout:
    """What the listing found: the class folders, and how many images and bytes they hold."""

    split_folders: bool
    class_names: list[str]
    images: int
    bytes: int
    ignored: int  # files under the folder that are no image or in no class folder


def list_folder(spark, reader, uri: str, root: str, shown: str, extensions: tuple[str, ...]) -> Layout:
    """Find the class folders from the files' paths alone (one small job; binaryFile reads no
    content for it) and refuse a layout that gives no classes or an empty class."""
    local = not is_connect(spark) and uri.startswith("file:")
    if local and not os.path.isdir(root):
        raise ImageFolderError(f"{shown}: no such folder" if not os.path.exists(root) else
                               f"{shown}: not a folder (expected <folder>/<class>/<image>)")
    groups = _count_files(spark, reader, uri, root, shown, extensions)
    below: dict[str | None, int] = {}  # top folder (None: files directly in the root) -> images anywhere below
    inner: dict[str, dict[str, int]] = {s: {} for s in SPLIT_FOLDERS}  # train|test -> class folder -> images
    for g in groups:
        below[g["top"]] = below.get(g["top"], 0) + g["images"]
        if g["second"] is not None:
            inner[g["top"]][g["second"]] = inner[g["top"]].get(g["second"], 0) + g["images"]
    loose = below.pop(None, 0)
    if local:  # empty folders hold no file for Spark to list; here they can be seen
        for name in _local_dirs(root):
            below.setdefault(name, 0)
    files = sum(g["files"] for g in groups)
    split = all(s in below for s in SPLIT_FOLDERS)
    if split and local:
        for s in SPLIT_FOLDERS:
            for name in _local_dirs(os.path.join(root, s)):
                inner[s].setdefault(name, 0)
    if split:
        classes = _split_classes(below, inner, shown, extensions)
        images = sum(inner["train"].values()) + sum(inner["test"].values())
    else:
        classes = _flat_classes(below, loose, files, shown, extensions)
        images = sum(below.values())
    used_bytes = sum(g["bytes"] for g in groups if g["top"] is not None and (not split or g["second"] is not None))
    return Layout(split, classes, images, used_bytes, files - images)


def _count_files(spark, reader, uri: str, root: str, shown: str, extensions: tuple[str, ...]) -> list:
    """Files, images and image bytes per (top folder, class folder below train|test): the listing job."""
    ending = "|".join(e[1:].lower() for e in extensions)
    rel = F.col("rel")
    is_image = F.lower(rel).rlike(rf"\.({ending})$")
    try:
        # Paths and lengths only: a few tasks list any number of files.
        listed = (reader.load(uri).select(relative_path(root).alias("rel"), "length").where(rel.isNotNull())
                  .coalesce(task_slots(spark, 2)))
        return (listed.select(class_folder(rel, split_folders=False).alias("top"),  # train|test in a split layout
                              class_folder(rel, split_folders=True).alias("second"), is_image.alias("image"), "length")
                .groupBy("top", "second")
                .agg(F.count(F.lit(1)).alias("files"), F.sum(F.col("image").cast("long")).alias("images"),
                     F.sum(F.when(F.col("image"), F.col("length")).otherwise(0)).alias("bytes"))
                .collect())
    except spark_errors() as exc:
        raise ImageFolderError(f"{shown}: cannot list it: {first_line(exc)}") from exc


def _split_classes(below: dict, inner: dict, shown: str, extensions: tuple[str, ...]) -> list[str]:
    """The class names of a folder with train/ and test/, refusing anything beside them, a split
    without class folders, an empty class, or classes that differ between the two."""
    others = sorted(set(below) - set(SPLIT_FOLDERS))
    if others:
        raise ImageFolderError(
            f"{shown}: holds train/ and test/, so those two must hold the class folders, but it also holds "
            f"{', '.join(o + '/' for o in others)}; move them into train/ and test/, or read a folder with "
            f"only class folders")
    for s in SPLIT_FOLDERS:
        if not inner[s]:
            raise ImageFolderError(f"{shown}/{s}: no class folders (expected {shown}/{s}/<class>/<image>)")
        _refuse_empty_classes(inner[s], f"{shown}/{s}", extensions)
    if set(inner["train"]) != set(inner["test"]):
        only_train = sorted(set(inner["train"]) - set(inner["test"]))
        only_test = sorted(set(inner["test"]) - set(inner["train"]))
        raise ImageFolderError(f"{shown}: train/ and test/ must hold the same class folders; only in train/: "
                               f"{only_train or 'none'}; only in test/: {only_test or 'none'}")
    return sorted(inner["train"])


def _flat_classes(below: dict, loose: int, files: int, shown: str, extensions: tuple[str, ...]) -> list[str]:
    """The class names of a folder of class folders, refusing none or an empty one."""
    if not below:
        wanted = ", ".join(extensions)
        found = (f"found {loose} image file(s) directly in it" if loose else
                 f"found {files} file(s), none of them an image ({wanted})" if files else "found nothing")
        raise ImageFolderError(f"{shown}: no class folders: expected {shown}/<class>/<image> (one folder per "
                               f"class, e.g. {shown}/cat/1.png); {found}")
    _refuse_empty_classes(below, shown, extensions)
    return sorted(below)


def _refuse_empty_classes(images_per_class: dict[str, int], parent: str, extensions: tuple[str, ...]) -> None:
    for name, count in sorted(images_per_class.items()):
        if not count:
            raise ImageFolderError(f"{parent}/{name}: class folder holds no images (no {', '.join(extensions)} files)")


def _local_dirs(folder: str) -> list[str]:
    """Sub-folders Spark would list (not hidden: no leading ``.`` or ``_``)."""
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith((".", "_")))
    except OSError:
        return []
