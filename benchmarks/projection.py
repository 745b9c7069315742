"""Projection: a small cost model of one full-batch epoch, fitted to the saved measurements.

    python benchmarks/projection.py [--datasize datasize] [--cores 8,32,128] [--rows 600000,6000000,60000000]

No Spark: it reads benchmarks/results/partitions.json, datasize.json and, if
present, clusters.json (any missing file is skipped), all measured on the
DataFrame engine, 784-64-10, one full-batch step per epoch (classic schedule,
sample 1.0), and fits

    seconds/epoch = job_overhead
                  + per_task  * ceil(P / C)                      (tasks per core)
                  + (per_row + per_byte * B) * N / P * ceil(P / C)  (rows per core)

N rows, P partitions, C cores (`local[C]`, or the cluster's cores), B bytes of
packed pixels per row (784 when 8-bit pixels are packed as one byte each, 3136
as float32). `N / P * ceil(P / C)` is N over the effective cores: the rows of
the busiest core when the partitions are equal and run in waves of C.
The model's functions are dfnet's own (``dfnet.bench.cost``, which fits the same model
to the rows of a ``dfnet.bench`` sweep); this script reads the saved results into it.

Assumptions (each one a limit of what the model can say):
- Fixed per-step cost: two Spark jobs (the gradient pass, then the
  `groupBy().agg` of the partial rows) and the driver's optimizer step, the
  same whatever N, P and C (`job_overhead`).
- A task's own cost (deserialising the step's function and weights in a Python
  worker, opening its Arrow stream, sending its one partial-sum row) runs on
  the executors, so tasks run in waves of C (`per_task`). Costs that are
  serial in P on the driver (scheduling, the single-task sum of P partial rows)
  cannot be told apart from these on 2 cores; the projection table shows how
  much they would add if all of `per_task` were serial.
- Per-row cost (Arrow transfer from the JVM cache to Python, decoding, forward
  and backward pass) splits into a part per row and a part per byte;
  `per_byte` is only fitted when the fitted points have two encodings.
- P >= C: with fewer partitions than cores the measurements do not follow
  the model (on 2 cores, P=1 ran as fast as P=2: a task's JVM thread writing
  Arrow batches and its Python worker already keep two cores busy). Such
  points are listed as "outside", neither fitted nor counted in the errors.
- Cores of a projected cluster are as fast as these and the rows stay cached
  in memory; stragglers, skew and garbage collection are not modelled. The
  network between machines is a separate term, added when
  results/network.json exists (``benchmarks/network.py``, run as root: the
  broadcast of the weights and the partial sums converging on one link, at
  ``--network-rate``, fitted there and checked on points it was not fitted on). The network is fixed (784-64-10, 50,890
  parameters): the partial-sum rows and the compute per row would change with it.
- The coefficients are fitted by least squares on relative error (each point
  weighted 1/measured), constrained to be >= 0.

Which points are fitted: in each sweep (partitions: over P; datasize: over N)
every second point is held out, keeping both ends of the sweep in the fit
(`--holdout alternate`), so the check interpolates; `--holdout largest` holds
out the largest third instead, so the check extrapolates as the projection
does (on 2 cores, P <= 8 shows no task cost, so that fit cannot see it). Every
clusters.json point is held out: it is the only source that varies the cores.
The table lists each point's measured and predicted seconds and the relative
error; the projection uses the model fitted on the fitted points only.

A source without a recorded encoding width (`packed_bytes_per_row`) is taken
as float32-packed (3136 bytes) if measured before 2026-11-23 19:39 (commit
854ed4b introduced one-byte pixels), else as 784; override with
`--bytes SOURCE=B`. Saves benchmarks/results/projection.json and .html.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass

import numpy as np
from common import RESULTS, save_results

from dfnet.bench.cost import TERMS, UNITS, features, fit_nonnegative, predict, tasks_per_core

LAYERS = [784, 64, 10]
WEIGHTS = sum(a * b + b for a, b in zip(LAYERS, LAYERS[1:]))  # 50,890
BYTE_PACKING_SINCE = "2026-11-23 19:39:26"
FLOAT32_BYTES, BYTE_PIXELS = 4 * 784, 784


@dataclass
class Point:
    source: str
    label: str
    rows: int
    partitions: int
    cores: int
    bytes_per_row: float
    measured: float
    role: str = "fit"
    predicted: float | None = None

    @property
    def relative_error(self) -> float | None:
        return None if self.predicted is None else (self.predicted - self.measured) / self.measured


# --- reading the measurements --------------------------------------------------------

def cores_of(master: str | None, cpus: int | None) -> int | None:
    """Cores of a ``local[N]`` / ``local[*]`` / ``local`` master; None for anything else."""
    if not master:
        return None
    found = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", master)
    if not found:
        return None
    n = found.group(1)
    return 1 if n is None else (cpus or 1) if n == "*" else int(n)


def encoding_bytes(payload: dict, source: str, overrides: dict[str, float]) -> float:
    if source in overrides:
        return overrides[source]
    if payload.get("packed_bytes_per_row"):
        return float(payload["packed_bytes_per_row"])
    when = payload.get("environment", {}).get("when", "")
    return FLOAT32_BYTES if when and when < BYTE_PACKING_SINCE else BYTE_PIXELS


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def same_network(payload: dict, source: str) -> bool:
    layers = payload.get("layers")
    if layers is not None and list(layers) != LAYERS:
        print(f"  {source}: layers {layers}, not {LAYERS}: skipped")
        return False
    return True


def partitions_points(payload: dict, bytes_per_row: float) -> list[Point]:
    env = payload.get("environment", {})
    cores = cores_of(env.get("master"), env.get("cpus"))
    return [Point("partitions", f"P={r['partitions']}", int(payload["rows"]), int(r["partitions"]), cores,
                  bytes_per_row, float(r["seconds_per_epoch"])) for r in payload["results"]]


def datasize_points(payload: dict, bytes_per_row: float) -> list[Point]:
    env = payload.get("environment", {})
    cores = cores_of(env.get("master"), env.get("cpus"))
    return [Point("datasize", f"N={r['rows']:,}", int(r["rows"]), int(r["partitions"]), cores, bytes_per_row,
                  float(r["seconds_per_epoch"])) for r in payload["results"]]


def clusters_points(payload: dict, bytes_per_row: float) -> list[Point]:
    points = []
    for r in payload.get("results", []):
        seconds = r.get("seconds_per_epoch", r.get("median_epoch_seconds"))
        cores = r.get("cores") or r.get("workers")
        rows = r.get("rows", payload.get("rows"))
        if seconds is None or not cores or not rows:
            print(f"  clusters: {r.get('config', '?')} lacks seconds, cores or rows: skipped")
            continue
        points.append(Point("clusters", str(r.get("config", f"{cores} cores")), int(rows),
                            int(r.get("partitions") or cores), int(cores), bytes_per_row, float(seconds), "holdout"))
    return points


READERS = {"partitions": partitions_points, "datasize": datasize_points, "clusters": clusters_points}


def mark_holdout(points: list[Point], key: str, rule: str) -> None:
    """Mark the points of one sweep (ordered by ``key``) that the fit must not see.

    ``alternate``: every second point, never the two ends, so the fit spans
    the sweep and the check interpolates. ``largest``: the largest third,
    keeping at least two points, so the check extrapolates.
    """
    ordered = sorted(points, key=lambda p: getattr(p, key))
    if rule == "alternate":
        held = ordered[1:-1:2]
    else:
        count = min(math.ceil(len(ordered) / 3), max(0, len(ordered) - 2))
        held = ordered[len(ordered) - count:]
    for p in held:
        p.role = "holdout"


# --- the model: dfnet.bench.cost (tasks_per_core, rows_per_core, features, fit_nonnegative, predict) ---

def network_seconds(model: dict | None, weights: int, partitions: int, rate_bits: float) -> float | None:
    """The bytes-over-network term fitted by ``benchmarks/network.py`` (None without its results):
    the float32 weights broadcast (every executor receives 4W bytes over its own link) and the
    float64 partial sums of P partitions converging on one link (8W x P bytes), at ``rate_bits``."""
    if not model:
        return None
    rate = rate_bits / 8
    return model["broadcast_factor"] * 4 * weights / rate + model["partials_factor"] * 8 * (weights + 3) * partitions / rate


def figure(points: list[Point], projections: list[dict], title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("predicted against measured (s/epoch)",
                                                        "projected s/epoch, one partition per core or more"))
    for role, symbol in (("fit", "circle"), ("holdout", "x")):
        chosen = [p for p in points if p.role == role]
        fig.add_trace(go.Scatter(
            name=f"{role} points", x=[p.measured for p in chosen], y=[p.predicted for p in chosen], mode="markers",
            marker={"symbol": symbol, "size": 9}, text=[f"{p.source} {p.label}" for p in chosen]), row=1, col=1)
    span = [min(min(p.measured, p.predicted) for p in points) * 0.8,
            max(max(p.measured, p.predicted) for p in points) * 1.25]
    fig.add_trace(go.Scatter(name="predicted = measured", x=span, y=span, mode="lines", line={"dash": "dot"}),
                  row=1, col=1)
    for cores in sorted({p["cores"] for p in projections}):
        chosen = [p for p in projections if p["cores"] == cores]
        fig.add_trace(go.Scatter(name=f"{cores} cores", x=[p["rows"] for p in chosen],
                                 y=[p["seconds"] for p in chosen], mode="lines+markers"), row=1, col=2)
    fig.update_xaxes(type="log", title_text="measured", row=1, col=1)
    fig.update_yaxes(type="log", title_text="predicted", row=1, col=1)
    fig.update_xaxes(type="log", title_text="training rows", row=1, col=2)
    fig.update_yaxes(type="log", title_text="seconds per epoch", row=1, col=2)
    fig.update_layout(title=title)
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions-name", default="partitions", help="results/<name>.json of partitions.py (none: leave it out)")
    parser.add_argument("--datasize", default="datasize", help="results/<name>.json of datasize.py (none: leave it out)")
    parser.add_argument("--clusters", default="clusters", help="results/<name>.json of clusters.py (none: leave it out)")
    parser.add_argument("--holdout", choices=("alternate", "largest"), default="alternate",
                        help="points of each sweep kept out of the fit: every second one, or the largest third")
    parser.add_argument("--bytes", action="append", default=[], metavar="SOURCE=B",
                        help="packed bytes per row of a source, e.g. partitions=784")
    parser.add_argument("--cores", default="2,8,32,128", help="projected cluster sizes")
    parser.add_argument("--rows", default="600000,6000000,60000000", help="projected training rows")
    parser.add_argument("--project-bytes", type=float, default=BYTE_PIXELS,
                        help="bytes per row in the projection (784: 8-bit pixels; 3136: float32)")
    parser.add_argument("--network-rate", type=float, default=10e9,
                        help="link rate in bit/s for the network term (from results/network.json)")
    parser.add_argument("--max-partition-rows", type=int, default=1_000_000,
                        help="projected partitions: a multiple of the cores, each at most this many rows")
    parser.add_argument("--name", default="projection")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.bytes:
        source, _, value = item.partition("=")
        try:
            overrides[source] = float(value)
        except ValueError:
            parser.error(f"--bytes expects SOURCE=BYTES, got {item!r}")

    points: list[Point] = []
    sources = {}
    print("measurements:")
    for source, name in (("partitions", args.partitions_name), ("datasize", args.datasize),
                         ("clusters", args.clusters)):
        if name.lower() == "none":
            print(f"  {source}: left out")
            sources[source] = None
            continue
        payload = load(name)
        if payload is None:
            print(f"  {source}: results/{name}.json not found: skipped")
            sources[source] = None
            continue
        if not same_network(payload, source):
            continue
        width = encoding_bytes(payload, source, overrides)
        loaded = READERS[source](payload, width)
        loaded = [p for p in loaded if p.cores]
        for p in loaded:
            if p.partitions < p.cores:
                p.role = "outside"
        inside = [p for p in loaded if p.role == "fit"]
        if source == "partitions":
            mark_holdout(inside, "partitions", args.holdout)
        elif source == "datasize":
            mark_holdout(inside, "rows", args.holdout)
        when = payload.get("environment", {}).get("when", "?")
        print(f"  {source}: results/{name}.json, {len(loaded)} points, measured {when}, {width:.0f} bytes per row")
        sources[source] = {"file": f"{name}.json", "points": len(loaded), "when": when, "bytes_per_row": width}
        points += loaded

    fitted = [p for p in points if p.role == "fit"]
    if len(fitted) < 2:
        print(f"\nonly {len(fitted)} points to fit; run benchmarks/partitions.py and benchmarks/datasize.py first",
              file=sys.stderr)
        return 1
    X = np.array([features(p.rows, p.partitions, p.cores, p.bytes_per_row) for p in fitted])
    y = np.array([p.measured for p in fitted])
    encodings = sorted({p.bytes_per_row for p in fitted})
    usable = [0, 1, 2] + ([3] if len(encodings) > 1 else [])
    coef = dict(zip(TERMS, fit_nonnegative(X, y, usable).tolist()))
    for p in points:
        p.predicted = predict(coef, p.rows, p.partitions, p.cores, p.bytes_per_row)["seconds"]

    print("\nmodel: seconds/epoch = job_overhead + per_task * ceil(P/C) + (per_row + per_byte * B) * N/P * ceil(P/C)")
    print(f"fitted on {len(fitted)} points (least squares on relative error, coefficients >= 0):")
    for term in TERMS:
        note = "" if TERMS.index(term) in usable else "  (not fitted: the fitted points have one encoding)"
        scaled = coef[term] * (1e4 if term in ("per_row", "per_byte") else 1)
        unit = UNITS[term].replace("per row", "per 10,000 rows").replace("per byte", "per 10,000 bytes") \
            if term in ("per_row", "per_byte") else UNITS[term]
        print(f"  {term:13s} {scaled:10.4f} {unit}{note}")

    if len(encodings) > 1:
        print(f"  per_byte rests on the differences between sources with {' and '.join(f'{e:.0f}' for e in encodings)}"
              " bytes per row, measured at other times (and loads)")

    print("\n| source | point | rows | partitions | cores | bytes/row | measured s | predicted s | error | role |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in points:
        print(f"| {p.source} | {p.label} | {p.rows:,} | {p.partitions} | {p.cores} | {p.bytes_per_row:.0f} | "
              f"{p.measured:.3f} | {p.predicted:.3f} | {p.relative_error:+.0%} | {p.role} |")
    summary = {}
    for role in ("fit", "holdout"):
        errors = [abs(p.relative_error) for p in points if p.role == role]
        if errors:
            summary[role] = {"points": len(errors), "median_abs_relative_error": float(np.median(errors)),
                             "max_abs_relative_error": float(max(errors))}
            print(f"{role}: {len(errors)} points, |error| median {np.median(errors):.0%}, max {max(errors):.0%}")

    network = (load("network") or {}).get("model")
    cache_per_row = next((r.get("cache_bytes_per_row") for r in (load(args.datasize) or {}).get("results", [])
                          if r.get("cache_bytes_per_row")), None)
    projections = []
    for cores in (int(v) for v in args.cores.split(",") if v):
        for rows in (int(v) for v in args.rows.split(",") if v):
            partitions = cores * max(1, math.ceil(rows / (cores * args.max_partition_rows)))
            parts = predict(coef, rows, partitions, cores, args.project_bytes)
            serial_extra = coef["per_task"] * (partitions - tasks_per_core(partitions, cores))
            net = network_seconds(network, WEIGHTS, partitions, args.network_rate)
            projections.append({"cores": cores, "rows": rows, "partitions": partitions, **parts,
                                "if_task_costs_serial": parts["seconds"] + serial_extra,
                                "network_seconds": net,
                                "with_network": parts["seconds"] + net if net is not None else None,
                                "cache_gb": rows * cache_per_row / 1e9 if cache_per_row else None})
    print(f"\nprojected seconds per epoch ({args.project_bytes:.0f} bytes/row, partitions: a multiple of the cores, "
          f"<= {args.max_partition_rows:,} rows each):\n")
    print("| cores | rows | partitions | s/epoch | job | tasks | rows | if task costs were serial | network | "
          "with network | cache GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in projections:
        cache = f"{p['cache_gb']:.1f}" if p["cache_gb"] is not None else "-"
        net = "-" if p["network_seconds"] is None else f"{p['network_seconds']:.3f}"
        total = "-" if p["with_network"] is None else f"{p['with_network']:.2f}"
        print(f"| {p['cores']} | {p['rows']:,} | {p['partitions']} | {p['seconds']:.2f} | {p['job_seconds']:.2f} | "
              f"{p['task_seconds']:.2f} | {p['row_seconds']:.2f} | {p['if_task_costs_serial']:.2f} | {net} | {total} | "
              f"{cache} |")
    if network is None:
        print("(no results/network.json: run benchmarks/network.py as root for the network term)")
    else:
        print(f"network term (benchmarks/network.py's fit, {args.network_rate / 1e9:g} Gbit/s links): "
              f"{network['broadcast_factor']:.2f} x 4W / rate (the broadcast) + {network['partials_factor']:.2f} x "
              f"8W x P / rate (the partial sums, on one link), W = {WEIGHTS:,}")
    print("\nassumptions: cores as fast as these 2, rows cached in memory, the network only as the term above, no skew,\n"
          "784-64-10 only; 'if task costs were serial' charges per_task for every partition instead of every\n"
          "wave (an upper bound for driver-side scheduling and the single-task sum of the partial rows).")

    doc = __doc__
    payload = {
        "model": "seconds/epoch = job_overhead + per_task * ceil(P/C) + (per_row + per_byte * B) * N / P * ceil(P/C)",
        "assumptions": doc[doc.index("Assumptions"):doc.index("Which points")].strip(),
        "layers": LAYERS, "sources": sources, "coefficients": coef, "units": UNITS,
        "fitted_terms": [TERMS[i] for i in usable], "errors": summary,
        "points": [{**asdict(p), "relative_error": p.relative_error} for p in points],
        "projection_bytes_per_row": args.project_bytes, "projections": projections,
    }
    path = save_results(args.name, payload, figure(points, projections, "dfnet cost model: check and projection"))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
