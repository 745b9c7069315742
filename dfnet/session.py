"""Getting a SparkSession the way dfnet needs it, without disturbing one the user already has."""

from __future__ import annotations

import os
import warnings

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


def get_or_create_spark(master: str | None = None, app_name: str = "dfnet",
                        conf: dict[str, str] | None = None,
                        warehouse: str | os.PathLike | None = None) -> SparkSession:
    """Return the active SparkSession, or start one on `master` (default ``local[*]``).

    An already running session is returned unchanged: its master, catalog and
    configuration are the user's, and dfnet will not stop it. A new session
    gets :data:`DEFAULT_CONF`, then ``warehouse`` (see :func:`warehouse_conf`;
    by default Spark's own: ``spark-warehouse/`` and ``metastore_db/`` in the
    working directory), then ``conf``.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        wanted = warehouse_conf(warehouse)["spark.sql.warehouse.dir"] if warehouse is not None else None
        have = active.conf.get("spark.sql.warehouse.dir", None)
        if wanted is not None and have is not None and have.removeprefix("file:").rstrip("/") != wanted:
            warnings.warn(f"warehouse={os.fspath(warehouse)!r} is ignored: the running session keeps its tables "
                          f"in {have}", stacklevel=2)
        return active
    builder = SparkSession.builder.appName(app_name).master(master or "local[*]")
    settings = {**DEFAULT_CONF, **(warehouse_conf(warehouse) if warehouse is not None else {}), **(conf or {})}
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
