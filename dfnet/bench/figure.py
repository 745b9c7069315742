"""The figure of benchmark rows: seconds per epoch against the swept value, one trace per series."""

from __future__ import annotations

from typing import Iterable

import plotly.graph_objects as go

#: Sweeps whose x axis is a number: the column it is (``clusters``: ``dfnet bench clusters``, one
#: application per size).
_NUMERIC = {"partitions": "partitions", "slots": "slots", "clusters": "slots"}


def _series_name(row: dict) -> str:
    """What a series is: one sweep (its run id), named by its kind and what it held fixed."""
    fixed = {"partitions": ("engine", "schedule"), "slots": ("engine", "schedule"),
             "clusters": ("engine", "schedule"),
             "engines": ("schedule",), "schedules": ("engine",), "aggregations": ("engine", "schedule")}
    held = ", ".join(f"{key}={row[key]}" for key in fixed.get(row["sweep"], ()) if row.get(key))
    return f"{row['sweep']} {row['run_id']}" + (f" ({held})" if held else "")


def _x_of(row: dict):
    key = _NUMERIC.get(row["sweep"])
    return row[key] if key else row["point"].split("=", 1)[-1]


def sweep_figure(rows: Iterable[dict], *, title: str | None = None) -> go.Figure:
    """Median seconds per epoch with min-max error bars against the swept value; one trace per
    series (a sweep's run id), so the rows of several sweeps of one kind (a table's) compare.
    Failed points have no seconds and are left out; the title counts them."""
    rows = [dict(r.asDict() if hasattr(r, "asDict") else r) for r in rows]
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(_series_name(row), []).append(row)
    fig = go.Figure()
    for name, members in series.items():
        ok = [r for r in members if r.get("seconds_per_epoch") is not None]
        fig.add_trace(go.Scatter(
            name=name, x=[_x_of(r) for r in ok], y=[r["seconds_per_epoch"] for r in ok], mode="lines+markers",
            error_y={"type": "data", "symmetric": False,
                     "array": [r["seconds_max"] - r["seconds_per_epoch"] for r in ok],
                     "arrayminus": [r["seconds_per_epoch"] - r["seconds_min"] for r in ok]},
            text=[_hover(r) for r in ok], hovertemplate="%{text}<extra></extra>"))
    kinds = sorted({r["sweep"] for r in rows})
    failed = sum(1 for r in rows if r.get("error"))
    numeric = all(k in _NUMERIC for k in kinds)
    fig.update_layout(
        title=title or ("Seconds per epoch: " + ", ".join(kinds) + (f" ({failed} failed points not shown)"
                                                                     if failed else "")),
        xaxis_title=" / ".join(_NUMERIC.get(k, k) for k in kinds), yaxis_title="seconds per epoch (median, min-max)",
        xaxis={"type": "log" if numeric and _spread(rows) else ("linear" if numeric else "category")})
    return fig


def _spread(rows: list[dict]) -> bool:
    """Whether the swept numbers span a factor of 8 or more (then a log axis)."""
    xs = [x for x in (_x_of(r) for r in rows) if isinstance(x, (int, float)) and x > 0]
    return bool(xs) and max(xs) / min(xs) >= 8


def _hover(row: dict) -> str:
    jobs = row.get("jobs_per_epoch")
    return (f"{row['point']}: {row['seconds_per_epoch']:.3f} s/epoch ({row['seconds_min']:.3f}-"
            f"{row['seconds_max']:.3f})" + ("" if jobs is None else f"<br>{jobs:g} jobs/epoch")
            + f"<br>{row.get('executors')} executors on {row.get('hosts')} hosts")
