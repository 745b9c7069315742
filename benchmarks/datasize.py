"""Data size benchmark: seconds per epoch against the number of training rows.

    python benchmarks/datasize.py [--sizes 6000,12000,30000,60000,120000,300000,600000] [--epochs 5]

The DataFrame engine, 784-64-10 ReLU/softmax, float32, the classic schedule
with sample 1.0 (one full-batch gradient step per epoch), `local[2]`, 2
partitions, warm JVM (--warmup-steps throwaway steps first). Each size is
built in Spark from Fashion-MNIST's 60,000 training rows (cached in
--partitions partitions), never on the driver: copy `c` of a row gets the id
`c * 60000 + id`, the copies are a `union` coalesced back to --partitions
without a shuffle, and ids >= rows are dropped, so sizes below 60,000 are a
subset and sizes above are the training set replicated. Per size, `fit` runs
--epochs epochs and releases its cache before the next size; the median of the
epochs after the first is reported.

A line `seconds = intercept + slope * rows` is fitted to the medians by least
squares; the script prints the slope per 10,000 rows, the intercept, R^2 and
each size's residual. After each epoch it also records memory, read from
/proc: the driver JVM's and Python's resident set (VmRSS) and peak (VmHWM),
the Python workers' resident sets, and the bytes of Spark's cached blocks in
memory and on disk (a cache that spills to disk reads slower and bends the
line). While each size trains, a background thread also samples every 0.2 s
(--probe-interval; 0 turns it off, and the worker peaks then come only from the
epoch-end readings, when the workers are idle, so they under-report): the
driver Python process's and the JVM's peak RSS (VmHWM), the largest peak of any
one Python worker (the pyspark daemon and the workers it forks, the JVM's
descendants in /proc) and the largest sum of the workers' RSS; the table and
the JSON report these peaks per size, and the seconds per epoch at 60,000 and
600,000 rows on lines of their own. With 8-bit pixels packed as one byte each,
the training cache holds about 520 bytes per row (600,000 rows: ~310 MB), far below the driver's
storage memory; the 60,000-row source stays cached as `array<float>`
(~190 MB). Saves benchmarks/results/<--name>.json and .html.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from common import copies_of, default_data_dir, environment, save_results
from py4j.protocol import Py4JError
from pyspark.sql import functions as F

from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.engine.data import X_COL, encode_training_data
from dfnet.session import get_or_create_spark
from dfnet.train import fit

BASE_ROWS = 60_000
DEFAULT_SIZES = "6000,12000,30000,60000,120000,300000,600000"
#: Sizes whose seconds per epoch are reported on their own line and in the JSON.
REPORTED_SIZES = (60_000, 600_000)
MB = 1024 * 1024


# --- memory, read from /proc (psutil is not installed) -------------------------------

def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes (empty if the process is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def descendants(root: int) -> list[int]:
    """PIDs of every process below ``root`` (the JVM's Python daemon and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses; the ppid follows the last ")".
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cached_rdds(sc) -> dict[int, tuple[int, int]]:
    """Bytes of every cached RDD, ``{rdd id: (in memory, on disk)}``, as the block manager counts them."""
    return {int(info.id()): (int(info.memSize()), int(info.diskSize())) for info in sc._jsc.sc().getRDDStorageInfo()}


class MemoryProbe:
    """Memory during a ``fit``: a ``fit`` callback (after each epoch, once its time is taken, so not
    timed) and a context manager whose background thread samples the processes every
    ``interval`` seconds while training runs.

    Peaks, in bytes: ``python_hwm`` and ``jvm_hwm`` are the driver Python process's and the
    JVM's VmHWM (the kernel's high-water mark since the process started, so the peak over this
    size and every size measured before it in the same run); ``worker_hwm`` is the largest
    VmHWM of any one Python worker (the pyspark daemon and its forked workers, found as
    descendants of the JVM in /proc), ``workers_rss`` the largest sum of the workers' VmRSS
    seen at one sample. ``cache_*`` counts only the caches that appeared after the probe was
    made (the training encoding), not the 60,000-row source cached before.
    """

    def __init__(self, spark, interval: float = 0.2):
        self.sc = spark.sparkContext
        self.jvm_pid = int(self.sc._jvm.java.lang.ProcessHandle.current().pid())
        self.existing = set(cached_rdds(self.sc))
        self.samples: list[dict] = []
        self.interval = interval
        self.sampled: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def processes(self) -> dict:
        """One reading of the driver, JVM and worker processes from /proc."""
        jvm, python = proc_status(self.jvm_pid), proc_status()
        workers = [proc_status(pid) for pid in descendants(self.jvm_pid)]
        return {"jvm_rss": jvm.get("VmRSS", 0), "jvm_hwm": jvm.get("VmHWM", 0),
                "python_rss": python.get("VmRSS", 0), "python_hwm": python.get("VmHWM", 0),
                "workers_rss": sum(w.get("VmRSS", 0) for w in workers),
                "worker_hwm": max((w.get("VmHWM", 0) for w in workers), default=0), "workers": len(workers)}

    def _keep_peaks(self, reading: dict) -> None:
        for key, value in reading.items():
            self.sampled[key] = max(self.sampled.get(key, 0), value or 0)

    def _run(self) -> None:
        if self.interval <= 0:  # background sampling off: epoch-end snapshots only
            return
        while not self._stop.wait(self.interval):
            self._keep_peaks(self.processes())

    def __enter__(self) -> "MemoryProbe":
        self._thread = threading.Thread(target=self._run, name="memory-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._keep_peaks(self.processes())

    def snapshot(self) -> dict:
        new = [sizes for rdd, sizes in cached_rdds(self.sc).items() if rdd not in self.existing]
        return {**self.processes(), "cache_memory": sum(m for m, _ in new), "cache_disk": sum(d for _, d in new)}

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        pass

    def on_epoch_end(self, record, total_epochs: int) -> None:
        self.samples.append(self.snapshot())

    def peak(self) -> dict:
        """The largest value of each reading, over the epoch-end snapshots and the background samples."""
        peaks = {key: max(s[key] or 0 for s in self.samples) for key in self.samples[0]} if self.samples else {}
        for key, value in self.sampled.items():
            peaks[key] = max(peaks.get(key, 0), value)
        return peaks


def storage_memory_bytes(spark) -> int | None:
    """The most memory Spark's block managers may use for cached blocks (in local mode: the driver's)."""
    try:
        values = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().valuesIterator()
        total = 0
        while values.hasNext():
            total += int(values.next()._1())
        return total
    except (Py4JError, AttributeError):  # a diagnostic only; the Scala API differs between Spark versions
        return None


# --- building a size in Spark --------------------------------------------------------

def rows_of(base, rows: int, partitions: int):
    """``rows`` rows from the cached 60,000-row ``base``: a subset, or copies of it
    (:func:`common.copies_of`), ids ``0 .. rows-1``."""
    return copies_of(base, -(-rows // BASE_ROWS), partitions, BASE_ROWS, below=rows)


def packed_bytes_per_row(base, dtype: str) -> float:
    """Bytes per image in dfnet's training encoding of these rows (pixel bytes only; one small job)."""
    data = encode_training_data(base.limit(1000), features_col="image", label_col="label", num_features=784,
                                dtype=dtype)
    try:
        return float(data.frame.select(F.avg(F.octet_length(X_COL))).first()[0])
    finally:
        data.release()


def partition_rows(df) -> list[int]:
    """Rows in each partition of ``df`` (one Spark job, not timed)."""
    counts = df.groupBy(F.spark_partition_id().alias("p")).count().orderBy("p").collect()
    return [row["count"] for row in counts]


# --- one size ------------------------------------------------------------------------

def measure(spark, base, rows: int, config: TrainConfig, partitions: int, probe_interval: float = 0.2) -> dict:
    df = rows_of(base, rows, partitions)
    sizes = partition_rows(df)
    probe = MemoryProbe(spark, probe_interval)
    start = time.perf_counter()
    with probe:
        model = fit(df, config, num_classes=10, callbacks=[probe], verbose=False)
    total = time.perf_counter() - start
    seconds = [h["seconds"] for h in model.history]
    if model.history[0]["rows"] != rows:
        raise RuntimeError(f"asked for {rows} rows, the epoch saw {model.history[0]['rows']}")
    median = statistics.median(seconds[1:])
    result = {
        "rows": rows, "copies": -(-rows // BASE_ROWS), "partitions": len(sizes), "partition_rows": sizes,
        "seconds_per_epoch": median, "min": min(seconds[1:]), "max": max(seconds[1:]),
        "rows_per_second": rows / median, "epoch_seconds": seconds,
        # validation + encoding + caching, done once per fit
        "setup_seconds": total - sum(seconds), "memory": probe.peak(),
    }
    m = result["memory"]
    result["cache_bytes_per_row"] = (m.get("cache_memory", 0) + m.get("cache_disk", 0)) / rows
    return result


def fit_line(rows: list[float], seconds: list[float]) -> dict:
    """Least-squares ``seconds = intercept + slope * rows``, with R^2 and residuals."""
    x, y = np.asarray(rows, dtype=float), np.asarray(seconds, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return {}
    slope, intercept = np.polyfit(x, y, 1)
    fitted = intercept + slope * x
    residual = y - fitted
    total = float(np.sum((y - y.mean()) ** 2))
    return {"intercept": float(intercept), "slope_per_row": float(slope), "slope_per_10k_rows": float(slope * 1e4),
            "r2": 1.0 - float(np.sum(residual ** 2)) / total if total else float("nan"),
            "fitted": fitted.tolist(), "residuals": residual.tolist(),
            "relative_residuals": (residual / y).tolist()}


def figure(results: list[dict], line: dict, title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    xs = [r["rows"] for r in results]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(
        name="s/epoch (median; bars: min-max)", x=xs, y=[r["seconds_per_epoch"] for r in results], mode="markers",
        error_y={"type": "data", "symmetric": False,
                 "array": [r["max"] - r["seconds_per_epoch"] for r in results],
                 "arrayminus": [r["seconds_per_epoch"] - r["min"] for r in results]}), secondary_y=False)
    if line:
        grid = np.linspace(0, max(xs), 50)
        fig.add_trace(go.Scatter(
            name=f"{line['intercept']:.3f} s + {line['slope_per_10k_rows']:.3f} s per 10k rows "
                 f"(R^2 {line['r2']:.4f})", x=grid, y=line["intercept"] + line["slope_per_row"] * grid,
            mode="lines"), secondary_y=False)
    for key, label in (("jvm_hwm", "driver JVM peak RSS"), ("python_hwm", "driver Python peak RSS"),
                       ("worker_hwm", "largest Python worker peak RSS"), ("cache_memory", "cached in memory"),
                       ("cache_disk", "cached on disk")):
        fig.add_trace(go.Scatter(name=f"{label} (MB, right)", x=xs, y=[r["memory"].get(key, 0) / MB for r in results],
                                 mode="lines+markers", line={"dash": "dot"}), secondary_y=True)
    fig.update_layout(title=title, xaxis_title="training rows")
    fig.update_yaxes(title_text="seconds per epoch", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="MB", rangemode="tozero", secondary_y=True)
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="training rows, comma-separated")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per size; the first is not counted")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--probe-interval", type=float, default=0.2,
                        help="seconds between background memory samples while a size trains (0: epoch ends only)")
    parser.add_argument("--warmup-steps", type=int, default=20, help="throwaway steps before measuring")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--name", default="datasize", help="results/<name>.json; use another name for smoke runs")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",") if v]
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not counted)")
    if args.partitions < 1:
        parser.error(f"--partitions must be >= 1, got {args.partitions}")
    if not sizes or min(sizes) < 1:
        parser.error(f"--sizes must be positive row counts, got {args.sizes!r}")

    spark = get_or_create_spark(args.master, app_name="dfnet-bench-datasize")
    base = load_dataframe(spark, "fashion-mnist", "train", data_dir=args.data_dir,
                          num_partitions=args.partitions).cache()
    base.count()
    config = TrainConfig(hidden=(64,), schedule="classic", sample=1.0, optimizer="adam", dtype="float32",
                         epochs=args.epochs).validate()
    if args.warmup_steps:
        # The JVM runs ~30% slower for its first ~20 jobs.
        start = time.perf_counter()
        fit(base, config.replace(epochs=args.warmup_steps), num_classes=10, verbose=False)
        print(f"warm-up: {args.warmup_steps} steps on {BASE_ROWS} rows, {time.perf_counter() - start:.1f} s",
              flush=True)
    storage = storage_memory_bytes(spark)
    packed = packed_bytes_per_row(base, config.dtype)
    print(f"training encoding: {packed:.0f} bytes of pixels per row", flush=True)
    results = []
    for rows in sizes:
        r = measure(spark, base, rows, config, args.partitions, args.probe_interval)
        m = r["memory"]
        print(f"{rows:8d} rows ({r['partitions']} partitions): {r['seconds_per_epoch']:.3f} s/epoch "
              f"[{r['min']:.3f}-{r['max']:.3f}] | setup {r['setup_seconds']:.1f} s | peak RSS: driver Python "
              f"{m['python_hwm'] / MB:.0f} MB, JVM {m['jvm_hwm'] / MB:.0f} MB, largest worker "
              f"{m['worker_hwm'] / MB:.0f} MB, {m['workers']} workers {m['workers_rss'] / MB:.0f} MB | cache "
              f"{m['cache_memory'] / MB:.0f} MB memory, {m['cache_disk'] / MB:.0f} MB disk", flush=True)
        results.append(r)
    base.unpersist()

    line = fit_line([r["rows"] for r in results], [r["seconds_per_epoch"] for r in results])
    print("\n| rows | copies | s/epoch (median) | min | max | line | residual | rows/s | setup s | "
          "driver Python peak MB | JVM peak MB | largest worker peak MB | workers RSS peak MB (sum) | "
          "cache MB (memory / disk) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(results):
        m = r["memory"]
        fitted = f"{line['fitted'][i]:.3f} | {line['residuals'][i]:+.3f} ({line['relative_residuals'][i]:+.0%})" \
            if line else "- | -"
        print(f"| {r['rows']:,} | {r['copies']} | {r['seconds_per_epoch']:.3f} | {r['min']:.3f} | {r['max']:.3f} | "
              f"{fitted} | {r['rows_per_second']:,.0f} | {r['setup_seconds']:.1f} | {m['python_hwm'] / MB:.0f} | "
              f"{m['jvm_hwm'] / MB:.0f} | {m['worker_hwm'] / MB:.0f} | {m['workers_rss'] / MB:.0f} | "
              f"{m['cache_memory'] / MB:.0f} / {m['cache_disk'] / MB:.0f} |")
    at = {r["rows"]: r["seconds_per_epoch"] for r in results if r["rows"] in REPORTED_SIZES}
    for rows in REPORTED_SIZES:
        print(f"seconds per epoch at {rows:,} rows: " + (f"{at[rows]:.3f}" if rows in at else "not measured "
                                                         "(add it to --sizes)"))
    if line:
        print(f"\nline: seconds/epoch = {line['intercept']:.3f} s + {line['slope_per_10k_rows']:.4f} s per 10,000 rows"
              f" (R^2 {line['r2']:.4f}, max |residual| {max(abs(v) for v in line['residuals']):.3f} s)")
    if storage:
        print(f"Spark's storage memory (block managers' maximum): {storage / MB:.0f} MB")
    title = (f"Seconds per full-batch epoch against rows, 784-64-10, {args.master}, "
             f"{args.partitions} partitions")
    path = save_results(args.name, {
        "environment": environment(spark), "layers": [784, 64, 10], "partitions": args.partitions,
        "epochs": args.epochs, "warmup_steps": args.warmup_steps, "base_rows": BASE_ROWS,
        "probe_interval": args.probe_interval,
        "packed_bytes_per_row": packed,
        "config": config.to_dict(), "storage_memory_bytes": storage, "line": line, "results": results,
        "seconds_per_epoch_at": {str(rows): at.get(rows) for rows in REPORTED_SIZES},
        "peak_memory_bytes": {key: max(r["memory"].get(key, 0) for r in results)
                              for key in ("python_hwm", "jvm_hwm", "worker_hwm", "workers_rss")},
    }, figure(results, line, title))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
