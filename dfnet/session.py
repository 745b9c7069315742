"""Getting a SparkSession the way dfnet needs it, without disturbing one the user already has.

This module is also the one place that knows the two kinds of session: a classic one (a
``SparkContext`` in this process, RDDs, broadcast, py4j) and a Spark Connect one (Databricks
serverless and standard access mode, ``SparkSession.builder.remote(...)``, ``SPARK_REMOTE``),
which has none of them. :func:`is_connect`, :func:`ship_weights`, :func:`input_partitions` and
:func:`task_slots` give the rest of dfnet one call that works on both.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import SparkSession

#: Settings dfnet applies only to sessions it creates itself; an existing
#: session (a notebook's `spark`) keeps its own configuration.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "4g",
    # Tables outlive the process: a Hive catalog with its embedded Derby
    # metastore, as the pyspark shell has (pip's pyspark ships the Hive jars).
    "spark.sql.catalogImplementation": "hive",
}


def warehouse_conf(warehouse: str | os.PathLike) -> dict[str, str]:
    """Settings that keep tables AND their catalog together under one local folder.

    ``<warehouse>/tables`` holds the table files, ``<warehouse>/metastore_db``
    the Derby metastore that names them and ``<warehouse>/derby.log`` its log,
    so any later session started with the same folder finds the tables by name.
    Embedded Derby admits one process at a time: a second process opening the
    same folder while the first still runs fails to reach the catalog.
    """
    root = os.path.abspath(os.fspath(warehouse))
    return {"spark.sql.warehouse.dir": os.path.join(root, "tables"),
            "spark.hadoop.javax.jdo.option.ConnectionURL":
                f"jdbc:derby:;databaseName={os.path.join(root, 'metastore_db')};create=true",
            "spark.driver.extraJavaOptions": f"-Dderby.system.home={root}"}


def use_this_python_on_local_workers(master: str) -> None:
    """On a local master, Python workers run this interpreter: pyspark starts ``PYSPARK_PYTHON``,
    else ``python3`` from ``PATH``, which need not have pyarrow or dfnet (``.venv/bin/dfnet train``
    without an activated environment). A ``PYSPARK_PYTHON`` the user set stays. pyspark reads the
    variable when the SparkContext starts (``spark.pyspark.python`` only reaches spark-submit)."""
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        os.environ["PYSPARK_PYTHON"] = sys.executable


#: What a JVM prints on its way up that says nothing to a dfnet user: the log4j profile and
#: level notes, the loopback-hostname and native-Hadoop warnings, the JDK's incubator-module
#: note. Matched line by line; anything else (errors above all) still reaches the terminal.
STARTUP_NOISE = re.compile("|".join([
    r"^WARNING: Using incubator modules",
    r"^Using Spark's default log4j profile",
    r"^Setting default log level to",
    r"^To adjust logging level use sc\.setLogLevel",
    r"^\S+ \S+ WARN Utils: (Your hostname|Set SPARK_LOCAL_IP|Service '.*' could not bind)",
    r"^\S+ \S+ WARN NativeCodeLoader: Unable to load native-hadoop",
    r"^\S+ \S+ WARN SparkSession: Using an existing Spark session",
]))


def _forward_lines(source: int, target: int, noise: re.Pattern) -> None:
    """Copy ``source`` (the JVM's standard error) to ``target`` line by line, leaving out ``noise``."""
    with os.fdopen(source, "rb", buffering=0) as pipe, os.fdopen(target, "wb", buffering=0) as out:
        for line in iter(pipe.readline, b""):
            if not noise.search(line.decode("utf-8", "replace")):
                out.write(line)


@contextmanager
def quiet_jvm_startup(enabled: bool = True):
    """While a new JVM starts, give it a standard error that drops :data:`STARTUP_NOISE`.

    The JVM inherits file descriptor 2 when it is launched, so for the span of
    the launch descriptor 2 is a pipe; a daemon thread copies the pipe to the
    real standard error for as long as the JVM lives, line by line, without the
    start-up notes. Python's own descriptor 2 is put back at once.
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedded interpreter): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    thread = threading.Thread(target=_forward_lines, args=(read_end, os.dup(saved), STARTUP_NOISE),
                              name="dfnet-jvm-stderr", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def get_or_create_spark(master: str | None = None, app_name: str = "dfnet",
                        conf: dict[str, str] | None = None,
                        warehouse: str | os.PathLike | None = None, *, verbose: bool = False,
                        remote: str | None = None) -> SparkSession:
    """Return the active SparkSession, or start one on `master` (default ``local[*]``); with
    ``remote`` (``sc://host:port``), or else the ``SPARK_REMOTE`` environment variable as
    pyspark reads it, a Spark Connect session to that server instead.

    An already running session is returned unchanged: its master, catalog and
    configuration are the user's, and dfnet will not stop it. A new session
    gets :data:`DEFAULT_CONF`, then ``warehouse`` (see :func:`warehouse_conf`;
    by default Spark's own: ``spark-warehouse/`` and ``metastore_db/`` in the
    working directory), then ``conf``. Its JVM's start-up notes (log level,
    hostname, native Hadoop, incubator modules) stay off the terminal unless
    ``verbose`` (:func:`quiet_jvm_startup`); its later warnings and errors do not.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        wanted = warehouse_conf(warehouse)["spark.sql.warehouse.dir"] if warehouse is not None else None
        have = active.conf.get("spark.sql.warehouse.dir", None)
        if wanted is not None and have is not None and have.removeprefix("file:").rstrip("/") != wanted:
            warnings.warn(f"warehouse={os.fspath(warehouse)!r} is ignored: the running session keeps its tables "
                          f"in {have}", stacklevel=2)
        return active
    remote = remote or os.environ.get("SPARK_REMOTE")
    if remote:
        # The server's configuration is its operator's: a client sets none of DEFAULT_CONF (most
        # are static settings a Connect client may not change).
        with quiet_jvm_startup(enabled=not verbose and remote.startswith("local")):
            return SparkSession.builder.remote(remote).appName(app_name).getOrCreate()
    master = master or "local[*]"
    builder = SparkSession.builder.appName(app_name).master(master)
    settings = {**DEFAULT_CONF, **(warehouse_conf(warehouse) if warehouse is not None else {}), **(conf or {})}
    use_this_python_on_local_workers(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    with quiet_jvm_startup(enabled=not verbose):
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN" if verbose else "ERROR")
    if not verbose:
        from .metastore import quiet_metastore_logs
        quiet_metastore_logs(session)
    return session


@contextmanager
def session_setting(spark, key: str, value: str):
    """``key`` = ``value`` in ``spark``'s session for the block, then as it was (unset again if it
    was unset). The setting is the session's: a query run meanwhile from elsewhere sees it too. A
    setting the session does not let this client read (a Connect server may refuse) is left alone."""
    conf = spark.conf
    try:
        before = conf.get(key, None)
    except Exception:
        before = value
    if before == value:
        yield
        return
    conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            conf.unset(key)
        else:
            conf.set(key, before)


def is_connect(spark) -> bool:
    """Whether ``spark`` (a SparkSession) is a Spark Connect client session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def require_classic(spark, what: str, instead: str) -> None:
    """Refuse ``what`` on a Connect session, saying why and what to use ``instead``."""
    if is_connect(spark):
        from .errors import ConfigError
        raise ConfigError(f"{what} needs a classic Spark session (a SparkContext, RDDs and broadcast "
                          f"variables), and this is a Spark Connect session, which has none of them; "
                          f"{instead}")


class InClosure:
    """The weights as part of the task's function: pickled with it and sent with every task (Spark
    Connect sends it in the plan). The same ``.value`` as a broadcast variable."""

    def __init__(self, value):
        self.value = value


def weights_for_tasks(spark, params):
    """A handle whose ``.value`` gives tasks ``params``: a broadcast variable on a classic
    session, the closure on Connect (which has no broadcast)."""
    return InClosure(params) if is_connect(spark) else spark.sparkContext.broadcast(params)


@contextmanager
def ship_weights(spark, params):
    """:func:`weights_for_tasks` for the jobs inside the block; a broadcast is destroyed after
    it (else executors keep one copy per step)."""
    handle = weights_for_tasks(spark, params)
    try:
        yield handle
    finally:
        if not isinstance(handle, InClosure):
            handle.destroy()


def input_partitions(df) -> int:
    """Partitions of ``df``: the RDD's on a classic session (no job); on Connect, which has no RDD,
    one small job reads the highest partition id that holds a row."""
    if not is_connect(df.sparkSession):
        return df.rdd.getNumPartitions()
    from pyspark.sql import functions as F
    top = df.select(F.spark_partition_id().alias("p")).agg(F.max("p").alias("p")).first()["p"]
    return 1 if top is None else int(top) + 1


_LOCAL_MASTER = re.compile(r"^local(?:-cluster)?\[(\*|\d+)")


def master_of(spark) -> str | None:
    """The session's master: the SparkContext's; on Connect ``spark.master`` if the server tells."""
    if not is_connect(spark):
        return spark.sparkContext.master
    try:
        return spark.conf.get("spark.master", None)
    except Exception:  # a setting the server does not let clients read
        return None


@dataclass(frozen=True)
class ClusterShape:
    """What choosing how a step adds its sums needs to know of the cluster: task slots, and whether
    every task runs on the driver's machine (a ``local`` master)."""

    slots: int = 1
    single_machine: bool = True


def cluster_shape(spark, fallback: int) -> ClusterShape:
    """The session's :class:`ClusterShape`: its :func:`task_slots` and whether its
    tasks all run on the driver's machine (a ``local`` master; unknown, as on a Connect server that
    does not tell its master, counts as a cluster)."""
    master = master_of(spark)
    return ClusterShape(task_slots(spark, fallback), bool(master) and master.startswith("local"))


def task_slots(spark: SparkSession, fallback: int) -> int:
    """Tasks the cluster runs at once: the SparkContext's default parallelism (local[N]: N; a
    cluster: its executors' cores). A Connect session has no SparkContext to ask: there
    ``spark.default.parallelism``, else N of a ``local[N]`` master, else ``fallback``."""
    if not is_connect(spark):
        return max(1, int(spark.sparkContext.defaultParallelism))
    for key in ("spark.default.parallelism", "spark.master"):
        try:
            value = spark.conf.get(key, None)
        except Exception:  # a setting the server does not let clients read
            value = None
        if value is None:
            continue
        if key == "spark.default.parallelism" and value.isdigit():
            return max(1, int(value))
        match = _LOCAL_MASTER.match(value)
        if match:
            return (os.cpu_count() or 1) if match.group(1) == "*" else max(1, int(match.group(1)))
    return max(1, int(fallback))
