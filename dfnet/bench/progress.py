"""What a sweep tells as it goes: one line per point, and a live bar on a terminal."""

from __future__ import annotations

import sys


def point_line(index: int, total: int, row: dict) -> str:
    """``point 2/3: partitions=2 | 0.41 s/epoch (0.39-0.44) | 3 jobs/epoch | 2 executors on 1 host``."""
    head = f"point {index}/{total}: {row['point']}"
    if row.get("error"):
        return f"{head} | failed: {row['error']}"
    parts = [head, f"{row['seconds_per_epoch']:.2f} s/epoch ({row['seconds_min']:.2f}-{row['seconds_max']:.2f})"]
    jobs = row.get("jobs_per_epoch")
    if jobs is not None:
        shown = f"{jobs:.0f}" if float(jobs).is_integer() else f"{jobs:.2f}"
        parts.append(f"{shown} job{'s' if jobs != 1 else ''}/epoch" + (" (plan)" if row.get("jobs_source") == "plan"
                                                                         else ""))
    if (row.get("epochs_per_job") or 1) > 1:
        parts.append(f"{row['epochs_per_job']} epochs per job")
    if row.get("accuracy") is not None:
        parts.append(f"accuracy {row['accuracy']:.4f}")
    e, h = row["executors"], row["hosts"]
    parts.append(f"{e} executor{'s' if e != 1 else ''} on {h} host{'s' if h != 1 else ''}")
    return " | ".join(parts)


class SweepPrinter:
    """Prints :func:`point_line` after each point to ``out`` (standard output), and while a point
    trains a bar of its epochs on standard error when that is a terminal (``bar`` forces it)."""

    def __init__(self, out=None, bar: bool | None = None):
        self.out = out or sys.stdout
        self.bar_stream = sys.stderr
        self.bar = self.bar_stream.isatty() if bar is None else bar

    def on_point_begin(self, index: int, total: int, label: str) -> None:
        self._draw(index, total, label, 0, 1)

    def on_epoch(self, index: int, total: int, label: str, done: float, epochs: int) -> None:
        self._draw(index, total, label, done, epochs)

    def on_point_end(self, index: int, total: int, row: dict) -> None:
        if self.bar:
            self.bar_stream.write("\r" + " " * 78 + "\r")
        print(point_line(index, total, row), file=self.out, flush=True)

    def _draw(self, index: int, total: int, label: str, done: float, epochs: int) -> None:
        if not self.bar:
            return
        width = 24
        filled = int(width * min(done / max(epochs, 1), 1.0))
        self.bar_stream.write(f"\r  point {index}/{total} {label[:24]:24s} [{'#' * filled}{'.' * (width - filled)}] "
                              f"epoch {min(int(done) + 1, epochs)}/{epochs}")
        self.bar_stream.flush()


class Silent:
    """``progress=False``: tells nothing."""

    def on_point_begin(self, index, total, label):
        pass

    def on_epoch(self, index, total, label, done, epochs):
        pass

    def on_point_end(self, index, total, row):
        pass


def progress_for(progress) -> object:
    """``None``: a :class:`SweepPrinter`; ``False``: :class:`Silent`; else the caller's object, which
    has ``on_point_end(index, total, row)`` and may have ``on_point_begin(index, total, label)`` and
    ``on_epoch(index, total, label, epochs_done, epochs)``."""
    if progress is None or progress is True:
        return SweepPrinter()
    if progress is False:
        return Silent()
    return progress
