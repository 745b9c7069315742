"""Sharing Spark's embedded Derby metastore between processes that run in one folder.

Sessions dfnet starts keep their tables in Spark's Hive catalog, whose default metastore is an
embedded Derby database (``metastore_db/`` beside ``spark-warehouse/``) that ONE process may open
at a time, and holds from its first catalog call until it exits. A second process that reaches
for the catalog meanwhile gets Hive's ten retries, then an exception, and thousands of lines of
Derby and DataNucleus stack traces on its console. This module lets dfnet wait its turn instead:

- :func:`embedded_metastore` finds the Derby folder a classic session will open (None for
  Spark Connect, an in-memory catalog, a Hive metastore service or a database server, which
  admit many processes);
- :func:`catalog_holder` names the process that has it open (Derby holds a lock on
  ``dbex.lck`` while a database is booted; ``/proc/locks`` names the lock's owner);
- :func:`wait_for_catalog` waits, with one line saying for whom, until the catalog is free or
  ``timeout`` passes, then raises :class:`~dfnet.errors.CatalogBusyError` naming the holder and
  what to do.

How to give several processes one catalog at the same time (a Hive metastore service, or a
database server behind the metastore) is in ``docs/tables.md``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import CatalogBusyError

#: Seconds dfnet waits for another process's catalog by default (``DFNET_CATALOG_TIMEOUT``).
DEFAULT_TIMEOUT_S = 600.0
POLL_S = 1.0
_DATABASE_NAME = re.compile(r"databaseName=([^;]+)")
_DERBY_HOME = re.compile(r"-Dderby\.system\.home=(\S+)")
#: Loggers that print Derby's "another instance has booted the database" as pages of stack
#: traces while Hive retries: dfnet reports a busy catalog in one line instead.
METASTORE_LOGGERS = ("DataNucleus", "org.datanucleus", "org.apache.hadoop.hive.metastore",
                     "org.apache.hadoop.hive.ql.metadata", "hive.metastore", "hive.ql.metadata")


@dataclass(frozen=True)
class EmbeddedMetastore:
    """The Derby database folder of a classic session's Hive catalog, and its JVM's process id."""

    folder: Path
    jvm_pid: int | None

    @property
    def lock_file(self) -> Path:
        return self.folder / "dbex.lck"


def embedded_metastore(spark) -> EmbeddedMetastore | None:
    """The embedded Derby metastore ``spark`` opens for its catalog, or None when its catalog
    admits many processes (or is not this process's to open: Spark Connect)."""
    from .session import is_connect

    if is_connect(spark):
        return None
    conf = spark.sparkContext.getConf()
    if conf.get("spark.sql.catalogImplementation", "in-memory") != "hive":
        return None
    if conf.get("spark.hadoop.hive.metastore.uris", "") or conf.get("spark.hive.metastore.uris", ""):
        return None
    url = conf.get("spark.hadoop.javax.jdo.option.ConnectionURL", "jdbc:derby:;databaseName=metastore_db;create=true")
    if not url.startswith("jdbc:derby:") or url.startswith("jdbc:derby://"):
        return None  # a database server (or Derby's network server) serves many processes
    match = _DATABASE_NAME.search(url)
    name = match.group(1) if match else "metastore_db"
    home = _DERBY_HOME.search(conf.get("spark.driver.extraJavaOptions", ""))
    folder = Path(home.group(1) if home and not os.path.isabs(name) else os.getcwd()) / name
    return EmbeddedMetastore(folder.resolve(), _jvm_pid(spark))


def _jvm_pid(spark) -> int | None:
    try:
        return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # not a py4j gateway we know
        return None


def catalog_holder(metastore: EmbeddedMetastore) -> int | None:
    """The id of another process that has ``metastore`` open, or is about to (it holds dfnet's
    turn, see :func:`wait_for_catalog`), or None when it is free (or ours); -1 for a holder this
    machine does not name."""
    return _lock_owner(_turn_file(metastore), "FLOCK") or _lock_owner(metastore.lock_file, "POSIX", metastore)


def _turn_file(metastore: EmbeddedMetastore) -> Path:
    """The file whose lock gives dfnet processes their turn at ``metastore`` (in the temporary
    folder, named by the metastore's path: nothing is added to the user's folder)."""
    import hashlib
    import tempfile

    digest = hashlib.sha1(str(metastore.folder).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"dfnet-catalog-{digest}.lock"


def _lock_owner(path: Path, kind: str, metastore: EmbeddedMetastore | None = None) -> int | None:
    """The process other than this one (and its JVM) that holds a ``kind`` lock on ``path``: from
    ``/proc/locks``; where there is no ``/proc`` (macOS), a try at the same lock (-1: busy)."""
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return None
    ours = {os.getpid(), metastore.jvm_pid if metastore else None}
    try:
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return _probe(path, kind)
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == kind and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = int(fields[4])
            if pid not in ours:
                return pid
    return None


def _probe(path: Path, kind: str) -> int | None:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        if kind == "FLOCK":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1)
        return None  # closing the descriptor lets go again
    except OSError:
        return -1
    finally:
        os.close(fd)


def _take_turn(metastore: EmbeddedMetastore) -> int | None:
    """dfnet's turn at ``metastore`` for the life of this process (as the JVM keeps the database
    open for its life), as an open descriptor holding an exclusive ``flock``; -1 if this process
    took it already (for an earlier session); None if another process has the turn."""
    import fcntl

    fd = os.open(_turn_file(metastore), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return -1 if _lock_owner(_turn_file(metastore), "FLOCK") is None else None


def describe_process(pid: int) -> str:
    """``process 1234 (dfnet train --dataset digits ...)``, as far as this machine tells."""
    if pid < 0:
        return "another process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return f"process {pid}"
    shown = " ".join(_short(a) for a in argv)
    return f"process {pid} ({shown[:117] + '...' if len(shown) > 120 else shown})"


def _short(arg: str) -> str:
    return os.path.basename(arg) if os.sep in arg and not arg.startswith("-") else arg


def catalog_timeout() -> float:
    """Seconds to wait for a busy catalog: ``DFNET_CATALOG_TIMEOUT``, else :data:`DEFAULT_TIMEOUT_S`."""
    value = os.environ.get("DFNET_CATALOG_TIMEOUT")
    try:
        return DEFAULT_TIMEOUT_S if value is None else max(0.0, float(value))
    except ValueError:
        raise CatalogBusyError(f"DFNET_CATALOG_TIMEOUT={value!r}: expected a number of seconds") from None


def wait_for_catalog(spark, timeout: float | None = None, *,
                     say: Callable[[str], None] | None = None) -> None:
    """Return once ``spark``'s catalog can be opened by this process: at once for a catalog that
    admits many processes, or one this process already has; else as :func:`wait_for_metastore`."""
    metastore = embedded_metastore(spark)
    if metastore is None or getattr(spark, _TURN_ATTR, None) == metastore.folder:
        return
    wait_for_metastore(metastore, timeout, say=say)
    setattr(spark, _TURN_ATTR, metastore.folder)


def wait_for_metastore(metastore: EmbeddedMetastore, timeout: float | None = None, *,
                       say: Callable[[str], None] | None = None) -> None:
    """Wait until no other process holds ``metastore`` or dfnet's turn at it, then take the turn
    for the life of this process (as its JVM keeps the database open for its life). Says once
    what it waits for (on standard error unless ``say``); raises :class:`CatalogBusyError` after
    ``timeout`` seconds (default :func:`catalog_timeout`)."""
    timeout = catalog_timeout() if timeout is None else timeout
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    deadline, told, turn = time.monotonic() + timeout, False, None
    while True:
        if turn is None:
            turn = _take_turn(metastore)
        holder = catalog_holder(metastore) if turn is None else _lock_owner(metastore.lock_file, "POSIX", metastore)
        if turn is not None and holder is None:
            return  # the turn's descriptor stays open: other dfnet processes wait for this one
        shown = -1 if holder is None else holder  # the turn is taken, by a process /proc does not name
        if time.monotonic() >= deadline:
            if turn is not None and turn >= 0:
                os.close(turn)
            raise CatalogBusyError(busy_message(metastore, shown, timeout))
        if not told:
            say(f"dfnet: waiting for the Spark catalog in {metastore.folder}, open in {describe_process(shown)}: "
                f"its embedded Derby metastore admits one process at a time (up to {timeout:.0f} s, "
                f"DFNET_CATALOG_TIMEOUT)")
            told = True
        time.sleep(POLL_S)


_TURN_ATTR = "_dfnet_catalog_turn"


def busy_message(metastore: EmbeddedMetastore, holder: int, waited: float) -> str:
    return (f"the Spark catalog in {metastore.folder} is still open in {describe_process(holder)} after "
            f"{waited:.0f} s: Spark's embedded Derby metastore admits one process at a time. Let that process "
            f"finish (or stop its session), run from another folder or with --warehouse DIR, or share a metastore "
            f"service between processes (docs/tables.md#many-processes-one-catalog)")


def quiet_metastore_logs(spark) -> None:
    """Turn off the metastore loggers of :data:`METASTORE_LOGGERS` in a session dfnet started
    (a user's session keeps its logging)."""
    try:
        jvm = spark.sparkContext._jvm
        configurator = jvm.org.apache.logging.log4j.core.config.Configurator
        off = jvm.org.apache.logging.log4j.Level.OFF
        for name in METASTORE_LOGGERS:
            configurator.setLevel(name, off)
    except Exception:  # not log4j 2 (Spark < 3.3): leave logging as it is
        pass
