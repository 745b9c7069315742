"""Getting a SparkSession the way dfnet needs it, without disturbing one the user already has."""

from __future__ import annotations

from pyspark.sql import SparkSession

#: Settings dfnet applies only to sessions it creates itself; an existing
#: session (a notebook's `spark`) keeps its own configuration.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "4g",
}


def get_or_create_spark(master: str | None = None, app_name: str = "dfnet",
                        conf: dict[str, str] | None = None) -> SparkSession:
    """Return the active SparkSession, or start one on `master` (default ``local[*]``).

    An already running session is returned unchanged: its master and
    configuration are the user's, and dfnet will not stop it.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name).master(master or "local[*]")
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
