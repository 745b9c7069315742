"""Reading a session's state the same way on Spark 3.5 and 4.x, classic and Connect."""

from __future__ import annotations


def all_settings(spark) -> dict[str, str]:
    """Every SQL setting the session has (``spark.conf.getAll`` from Spark 4.0; ``SET`` everywhere)."""
    return {row["key"]: row["value"] for row in spark.sql("SET").collect()}
