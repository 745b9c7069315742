"""A small cost model of an epoch, fitted to benchmark rows, and what it projects.

    seconds/epoch = J * job_overhead                         (per job: scheduling, the driver's part)
                  + J * per_task * ceil(P / C)               (tasks per core: waves of C tasks)
                  + (per_row + per_byte * B) * N / P * ceil(P / C)   (rows of the busiest core)

N training rows per epoch, P tasks per job (partitions, or the models averaging
coalesces them to), C task slots (cores), J Spark jobs per epoch, B packed
bytes per row. ``N / P * ceil(P / C)`` is N over the effective cores: the rows
of the busiest core when the tasks are equal and run in waves of C. With one
job per epoch (J = 1) this is the model of ``benchmarks/projection.py``, which
calls these functions.

The coefficients are fitted by least squares on relative error (each point
weighted 1/measured), every coefficient constrained to be >= 0 (exactly: the
best of every subset of the terms). How well it predicts is measured on points
it did not see: leave-one-out, each point predicted by the model fitted on the
others. What the model leaves out (each a limit of what it can say): with
fewer tasks than cores (P < C) the measurements need not follow it (on 2
cores one task ran as fast as two: its JVM thread and its Python worker keep
two cores busy); costs serial in P on the driver cannot be told apart from
per-task costs on few cores; projected cores are as fast as the measured ones,
the rows stay cached, and the network, skew and stragglers are not modelled.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np

from ..errors import ConfigError

TERMS = ("job_overhead", "per_task", "per_row", "per_byte")
UNITS = {"job_overhead": "s", "per_task": "s per task per core", "per_row": "s per row per core",
         "per_byte": "s per byte per core"}
#: A model is fitted on at least this many measured points, with different (N, P, C, J).
MIN_POINTS = 3


def tasks_per_core(partitions: int, cores: int) -> int:
    """Waves of tasks: ``ceil(P / C)``."""
    return math.ceil(partitions / cores)


def rows_per_core(rows: float, partitions: int, cores: int) -> float:
    """Rows of the busiest core: ``N / P * ceil(P / C)``."""
    return rows / partitions * tasks_per_core(partitions, cores)


def features(rows: float, partitions: int, cores: int, bytes_per_row: float = 0.0, jobs: float = 1.0) -> np.ndarray:
    """The model's four terms for one point, before their coefficients (in :data:`TERMS` order)."""
    per_core = rows_per_core(rows, partitions, cores)
    return np.array([jobs, jobs * tasks_per_core(partitions, cores), per_core, bytes_per_row * per_core])


def fit_nonnegative(X: np.ndarray, y: np.ndarray, usable: list[int]) -> np.ndarray:
    """Least squares on relative error with every coefficient >= 0 (exact: every subset of the
    ``usable`` columns of ``X`` is fitted, the best one without a negative coefficient kept)."""
    A, b = X / y[:, None], np.ones_like(y)
    best, best_loss = np.zeros(X.shape[1]), math.inf
    for k in range(1, len(usable) + 1):
        for cols in itertools.combinations(usable, k):
            coef, *_ = np.linalg.lstsq(A[:, cols], b, rcond=None)
            if np.any(coef < 0):
                continue
            loss = float(np.sum((A[:, cols] @ coef - b) ** 2))
            if loss < best_loss - 1e-15:
                best_loss, best = loss, np.zeros(X.shape[1])
                best[list(cols)] = coef
    return best


def predict(coef: dict, rows: float, partitions: int, cores: int, bytes_per_row: float = 0.0,
            jobs: float = 1.0) -> dict:
    """Seconds per epoch and its three parts (``job_seconds``, ``task_seconds``, ``row_seconds``)."""
    per_core = rows_per_core(rows, partitions, cores)
    parts = {"job_seconds": jobs * coef["job_overhead"],
             "task_seconds": jobs * coef["per_task"] * tasks_per_core(partitions, cores),
             "row_seconds": (coef["per_row"] + coef.get("per_byte", 0.0) * bytes_per_row) * per_core}
    return {"seconds": sum(parts.values()), **parts}


@dataclass
class CostPoint:
    """A measured point as the model sees it, its prediction, and its leave-one-out prediction."""

    point: str
    rows: int
    tasks: int
    cores: int
    jobs: float
    measured: float
    predicted: float = math.nan
    held_out: float = math.nan  # predicted by the model fitted on the other points

    @property
    def held_out_error(self) -> float:
        return (self.held_out - self.measured) / self.measured


@dataclass
class CostModel:
    """Coefficients fitted to a sweep's rows, how well they predict unseen points, the measured
    scaling, and :meth:`project` for other rows and cores."""

    coefficients: dict[str, float]
    fitted_terms: list[str]
    points: list[CostPoint]
    scaling: list[dict] = field(default_factory=list)

    @property
    def jobs_per_epoch(self) -> float:
        """The median jobs per epoch of the points (what :meth:`project` assumes by default)."""
        return statistics.median(p.jobs for p in self.points)

    @property
    def held_out_error(self) -> dict:
        """Leave-one-out |relative error|: its median and maximum over the points."""
        errors = [abs(p.held_out_error) for p in self.points if math.isfinite(p.held_out)]
        return {"points": len(errors), "median": statistics.median(errors) if errors else math.nan,
                "max": max(errors) if errors else math.nan}

    def project(self, *, rows: float, partitions: int | None = None, cores: int | None = None,
                jobs_per_epoch: float | None = None) -> float:
        """Projected seconds per epoch for ``rows`` rows on ``cores`` task slots (default: the most
        measured) in ``partitions`` tasks (default: one per core)."""
        return self.parts(rows=rows, partitions=partitions, cores=cores, jobs_per_epoch=jobs_per_epoch)["seconds"]

    def parts(self, *, rows: float, partitions: int | None = None, cores: int | None = None,
              jobs_per_epoch: float | None = None) -> dict:
        """:meth:`project`'s seconds and its job, task and row parts."""
        cores = cores or max(p.cores for p in self.points)
        partitions = partitions or cores
        for name, value in (("rows", rows), ("partitions", partitions), ("cores", cores)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name}={value!r}: must be a positive number")
        jobs = self.jobs_per_epoch if jobs_per_epoch is None else jobs_per_epoch
        return predict(self.coefficients, rows, int(partitions), int(cores), jobs=jobs)

    def projections(self, rows: Iterable[float] | None = None, cores: Iterable[int] | None = None) -> list[dict]:
        """:meth:`parts` for every rows x cores (default: 1x, 10x, 100x the measured rows on 1x, 4x,
        16x the measured cores), one partition per core."""
        base_rows, base_cores = max(p.rows for p in self.points), max(p.cores for p in self.points)
        rows = list(rows or (base_rows, 10 * base_rows, 100 * base_rows))
        cores = list(cores or (base_cores, 4 * base_cores, 16 * base_cores))
        return [{"rows": n, "cores": c, "partitions": c, **self.parts(rows=n, cores=c)} for c in cores for n in rows]

    def as_dict(self) -> dict:
        return {"model": "seconds/epoch = J*job_overhead + J*per_task*ceil(P/C) + per_row*N/P*ceil(P/C)",
                "coefficients": self.coefficients, "units": {k: UNITS[k] for k in self.coefficients},
                "fitted_terms": self.fitted_terms, "held_out_error": self.held_out_error,
                "points": [{**asdict(p), "held_out_error": p.held_out_error} for p in self.points],
                "scaling": self.scaling, "projections": self.projections()}

    def describe(self) -> str:
        """The coefficients, the leave-one-out check, the scaling and projections, as text."""
        c = self.coefficients
        lines = [f"cost model: {c['job_overhead']:.4f} s per job + {c['per_task']:.4f} s per task wave + "
                 f"{c['per_row'] * 1e4:.4f} s per 10,000 rows per core (fitted: {', '.join(self.fitted_terms)})"]
        err = self.held_out_error
        lines.append(f"leave-one-out |error|: median {err['median']:.0%}, max {err['max']:.0%} over {err['points']} "
                     f"points")
        for p in self.points:
            lines.append(f"  {p.point}: measured {p.measured:.3f} s, fitted {p.predicted:.3f} s, held out "
                         f"{p.held_out:.3f} s ({p.held_out_error:+.0%})")
        for s in self.scaling:
            tasks = f"{s['parallel']} task{'s' if s['parallel'] != 1 else ''}"
            lines.append(f"  scaling {s['point']}: {tasks} at once, speed-up {s['speedup']:.2f}, "
                         f"efficiency {s['efficiency']:.0%}")
        lines.append(f"projected s/epoch (one partition per core, {self.jobs_per_epoch:g} jobs/epoch):")
        for p in self.projections():
            lines.append(f"  {p['rows']:,} rows on {p['cores']} cores: {p['seconds']:.2f} s")
        return "\n".join(lines)

    def __repr__(self) -> str:
        c, err = self.coefficients, self.held_out_error
        return (f"CostModel(job_overhead={c['job_overhead']:.4g}, per_task={c['per_task']:.4g}, "
                f"per_row={c['per_row']:.4g}, held-out |error| median {err['median']:.0%})")


def fit_cost_model(rows) -> CostModel:
    """Fit :class:`CostModel` to benchmark rows (dicts of :data:`~dfnet.bench.BENCH_COLUMNS`, Spark
    Rows, or a DataFrame of them, e.g. a bench table): N = ``rows``, P = ``tasks`` (else
    ``partitions``), C = ``slots``, J = ``jobs_per_epoch`` (else 1), measured =
    ``seconds_per_epoch``. Failed points are left out. Raises :class:`~dfnet.errors.ConfigError`
    with fewer than :data:`MIN_POINTS` measured points, or points that do not vary."""
    points = _points(rows)
    if len(points) < MIN_POINTS:
        raise ConfigError(f"a cost model needs at least {MIN_POINTS} measured points; these rows have {len(points)}")
    X = np.array([features(p.rows, p.tasks, p.cores, 0.0, p.jobs) for p in points])
    y = np.array([p.measured for p in points])
    if len({tuple(row) for row in X.round(12)}) < MIN_POINTS:
        raise ConfigError(f"a cost model needs points that differ in rows, tasks, cores or jobs; these "
                          f"{len(points)} points have {len({tuple(row) for row in X.round(12)})} different settings")
    usable = [i for i in range(3) if np.any(X[:, i] > 0)]
    coef = fit_nonnegative(X, y, usable)
    for i, p in enumerate(points):
        p.predicted = float(X[i] @ coef)
        others = [j for j in range(len(points)) if j != i]
        p.held_out = float(X[i] @ fit_nonnegative(X[others], y[others], usable))
    coefficients = {term: float(coef[i]) for i, term in enumerate(TERMS[:3])}
    return CostModel(coefficients, [TERMS[i] for i in usable if coef[i] > 0], points, scaling(points))


def _points(rows) -> list[CostPoint]:
    if hasattr(rows, "collect") and hasattr(rows, "schema"):  # a DataFrame
        rows = rows.collect()
    points = []
    for row in rows:
        row = row.asDict() if hasattr(row, "asDict") else dict(row)
        seconds, tasks = row.get("seconds_per_epoch"), row.get("tasks") or row.get("partitions")
        if row.get("error") or not seconds or not tasks or not row.get("slots") or not row.get("rows"):
            continue
        points.append(CostPoint(str(row.get("point")), int(row["rows"]), int(tasks), int(row["slots"]),
                                float(row.get("jobs_per_epoch") or 1.0), float(seconds)))
    return points


def scaling(points: list[CostPoint]) -> list[dict]:
    """Measured speed-up and efficiency against the point with the fewest tasks at once
    (``min(P, C)``): speed-up / (tasks at once / the base's). Empty when that does not vary."""
    parallel = [min(p.tasks, p.cores) for p in points]
    if len(set(parallel)) < 2:
        return []
    base = min(range(len(points)), key=lambda i: (parallel[i], points[i].measured))
    out = []
    for p, k in zip(points, parallel):
        speedup = points[base].measured / p.measured
        out.append({"point": p.point, "parallel": k, "speedup": speedup,
                    "efficiency": speedup / (k / parallel[base])})
    return out
