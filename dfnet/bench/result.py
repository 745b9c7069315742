"""A sweep's result: its rows, as a Spark DataFrame in the caller's session, a figure, a cost
model, a table for ``%sql``, and files."""

from __future__ import annotations

import functools
import json
import os
from datetime import datetime
from pathlib import Path

from pyspark.sql import DataFrame

from ..errors import ConfigError
from .schema import BENCH_COLUMNS, BENCH_SCHEMA, as_tuple


class Sweep:
    """The rows of one sweep (one per point, :data:`BENCH_COLUMNS` order) and what is made of them."""

    def __init__(self, sweep: str, rows: list[dict], spark, environment: dict):
        self.sweep = sweep
        self.rows = [{name: row.get(name) for name in BENCH_COLUMNS} for row in rows]
        self.spark = spark
        self.environment = environment

    @property
    def run_id(self) -> str:
        return self.rows[0]["run_id"]

    @functools.cached_property
    def df(self) -> DataFrame:
        """The rows as a DataFrame of :data:`BENCH_SCHEMA` in the sweep's session (no job runs)."""
        return self.spark.createDataFrame([as_tuple(row) for row in self.rows], BENCH_SCHEMA)

    def figure(self):
        """Seconds per epoch (median, min-max error bars) against the swept value: a plotly Figure."""
        from .figure import sweep_figure

        return sweep_figure(self.rows)

    @functools.cached_property
    def cost_model(self):
        """The :class:`~dfnet.bench.cost.CostModel` fitted on the rows, or None when they cannot
        fit one (fewer than 3 measured points, or points that do not vary)."""
        from .cost import fit_cost_model

        try:
            return fit_cost_model(self.rows)
        except ConfigError:
            return None

    def write_table(self, name: str, mode: str = "append", *, format: str | None = None) -> DataFrame:
        """Save the rows as table ``name`` (appended by default: one table holds many sweeps, told
        apart by ``run_id``; appending the same sweep twice is refused); return the table."""
        from ..tables import save_table

        return save_table(self.df, name, mode=mode, format=format, run_id=self.run_id)

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``path.json`` (rows, cost model, environment) and ``path.html`` (the figure, opens
        offline: plotly.js inside); return both paths."""
        from ..files import write_atomically

        base = Path(path)
        if base.suffix in (".json", ".html"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        model = self.cost_model
        payload = {"sweep": self.sweep, "run_id": self.run_id, "environment": self.environment,
                   "columns": list(BENCH_COLUMNS), "rows": [_jsonable(row) for row in self.rows],
                   "cost_model": None if model is None else model.as_dict()}
        json_path = write_atomically(base.with_name(base.name + ".json"),
                                     lambda f: f.write(json.dumps(payload, indent=2).encode()))
        html = self.figure().to_html(include_plotlyjs=True, full_html=True)
        html_path = write_atomically(base.with_name(base.name + ".html"), lambda f: f.write(html.encode()))
        return json_path, html_path

    def __repr__(self) -> str:
        failed = sum(1 for row in self.rows if row["error"])
        return (f"Sweep({self.sweep!r}, run_id={self.run_id!r}, {len(self.rows)} points"
                + (f", {failed} failed" if failed else "") + ")")


def _jsonable(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
