"""Helpers shared by the benchmark scripts: data location, Spark session, saving results."""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def default_data_dir() -> str:
    """``$DFNET_DATA_DIR``, else the reference data beside the project (``../shared/data``)."""
    return os.environ.get("DFNET_DATA_DIR", str(ROOT.parent / "shared" / "data"))


def environment(spark) -> dict:
    import numpy
    import pyspark

    return {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "pyspark": pyspark.__version__, "numpy": numpy.__version__, "cpus": os.cpu_count(),
            "master": spark.sparkContext.master}


def save_results(name: str, payload: dict, figure=None) -> Path:
    """Write ``results/<name>.json`` (and ``<name>.html`` for a plotly figure)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    if figure is not None:
        # One shared plotly.min.js beside the charts: offline, and not 4.8 MB per chart.
        figure.write_html(RESULTS / f"{name}.html", include_plotlyjs="directory", full_html=True)
    return path


def copies_of(base, copies: int, partitions: int, id_stride: int, below: int | None = None):
    """``copies`` copies of ``base`` ``(id, image, label)``, built in Spark, never on the driver.

    Copy ``c`` of a row gets the id ``c * id_stride + id`` (ids ``>= below``
    dropped when given). The copies are a ``union`` coalesced (no shuffle) to
    ``partitions``, so two copies of one image sit at least a base partition
    apart. A broadcast ``crossJoin(spark.range(copies))`` would put them next to
    each other, and the cache of the packed rows then compressed about twice as
    well as distinct images (measured at 120,000 rows: 272 against 519 bytes
    per row), flattering every size above the base.
    """
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    parts = []
    for c in range(copies):
        part = base.select((F.lit(c) * id_stride + F.col("id")).alias("id"), "image", "label")
        parts.append(part if below is None else part.where(F.col("id") < below))
    df = functools.reduce(DataFrame.union, parts)
    return df.coalesce(partitions) if copies > 1 else df
