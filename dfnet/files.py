"""Files: local ones written so that a failure never leaves a half-written one under its final
name, and what dfnet keeps where Spark writes (models, checkpoints), listed through Spark's own
readers on a classic session and on Spark Connect alike (no Hadoop FileSystem through py4j)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlparse

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def stage_file(target: Path, write) -> str:
    """Write ``write(f)`` (a binary file object) to a temporary sibling of ``target``, readable
    like any saved file; return its name for the caller to ``os.replace`` onto ``target``."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp files are private; saved files are meant to be shared
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomically(target: Path, write) -> Path:
    """Stage ``target``'s new content, then rename it into place (the old file stays on failure)."""
    tmp = stage_file(target, write)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target


def first_line(error: BaseException) -> str:
    """The first line of an error's message (a JVM error's carries its whole stack trace)."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def spark_errors() -> tuple[type, ...]:
    """What Spark raises for a missing path or an unreadable file, on classic and Connect."""
    from pyspark.errors import PySparkException
    try:
        from py4j.protocol import Py4JJavaError
        return PySparkException, Py4JJavaError
    except ImportError:  # a Connect-only client
        return (PySparkException,)


def default_fs_is_local(spark) -> bool:
    """Whether a path without a scheme is a local one (Spark's default file system is ``file:``)."""
    try:
        default = spark.conf.get("spark.hadoop.fs.defaultFS", None)
    except Exception:  # a setting the server does not let clients read
        return False
    return default is None or default.startswith("file:")


def spark_path(spark, path: str) -> str:
    """``path`` as Spark should get it: a relative local path made absolute against this
    process's folder (Spark would resolve it against its JVM's start-up folder)."""
    path = str(path).rstrip("/") or "/"
    if not _SCHEME.match(path) and default_fs_is_local(spark):
        return "file:" + os.path.abspath(path)
    return path


def spark_files(spark, path: str) -> list[str]:
    """The visible files under ``path``, as paths relative to it (``data-1/part-0.parquet``), from
    the file index of Spark's ``binaryFile`` reader: no Spark job, and no file content read.
    Hidden ones (``_SUCCESS``, ``_temporary/``, ``.crc``) are left out, as Spark's readers do;
    an empty list when ``path`` does not exist."""
    try:
        found = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                 .load(path).inputFiles())
    except spark_errors():
        return []
    root = urlparse(spark_path(spark, path)).path.rstrip("/")
    out = []
    for uri in found:
        file = urlparse(uri).path
        if file.startswith(root + "/"):
            out.append(file[len(root) + 1:])
    return sorted(out)


def prune_folder(spark, path: str) -> None:
    """Replace the folder ``path`` by a marker of a few hundred bytes (``pruned=true/``), which
    :func:`spark_files` callers skip: Spark's writers can overwrite a folder but not delete it."""
    marker = spark.createDataFrame([(0, True)], "unused int, pruned boolean")
    marker.coalesce(1).write.mode("overwrite").partitionBy("pruned").parquet(path)


PRUNED = "pruned=true"


def live_folders(files: list[str]) -> dict[str, list[str]]:
    """Top-level folder -> its files, for the folders in ``files`` (from :func:`spark_files`)
    that :func:`prune_folder` has not replaced."""
    folders: dict[str, list[str]] = {}
    for file in files:
        head, _, rest = file.partition("/")
        if rest:
            folders.setdefault(head, []).append(rest)
    return {name: rest for name, rest in folders.items() if not any(r.startswith(PRUNED + "/") for r in rest)}
