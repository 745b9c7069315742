"""One point of a sweep: one ``fit`` with the point's setting, timed epoch by epoch, its Spark jobs
counted, and one small job that tells where its tasks ran.

Jobs per epoch. On a classic session every epoch runs under a job group of its
own (``fit`` calls back at the start of training and after each epoch, in the
thread that submits the jobs, and a job takes the group set when it is
submitted); after the fit the status tracker counts each group's jobs. A Spark
Connect client has no status tracker: there the figure is the schedule plan's
``jobs_per_epoch`` (``TrainedModel.schedule_plan``), which counts training jobs
only (no validation job).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from pyspark.sql import DataFrame

from ..config import TrainConfig
from ..files import first_line
from ..session import is_connect
from .placement import Placement, where_tasks_run

_GROUP_KEYS = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


@dataclass(frozen=True)
class PointSpec:
    """What one point sets: its text (``partitions=4``), its config and the slots it may use."""

    label: str
    config: TrainConfig  # epochs = warmup + measured epochs
    slots: int


@dataclass
class Measurement:
    """A point's fit as measured: seconds of the measured epochs, jobs, where its tasks ran."""

    epoch_seconds: list[float]
    jobs_per_epoch: float | None
    jobs_source: str
    placement: Placement
    model: object  # the TrainedModel
    partitions: int
    tasks: int
    epochs_per_job: int
    accuracy: float | None = None
    extra: dict = field(default_factory=dict)


class EpochJobGroups:
    """A fit callback that puts each epoch's jobs in a job group of their own (classic sessions);
    :meth:`counts` reads the status tracker after the fit. The caller's job group is put back by
    :meth:`restore`."""

    def __init__(self, spark, prefix: str):
        self.sc = spark.sparkContext
        self.prefix = prefix
        self.saved = {key: self.sc.getLocalProperty(key) for key in _GROUP_KEYS}
        self.epochs = 0
        self._enter(0)

    def _enter(self, epoch: int) -> None:
        self.sc.setJobGroup(f"{self.prefix}-e{epoch}", f"dfnet bench: epoch {epoch}" if epoch else "dfnet bench")

    def on_train_begin(self, config, facts) -> None:
        self._enter(len(facts.get("history", [])) + 1)

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        pass

    def on_epoch_end(self, record, total_epochs: int) -> None:
        self.epochs = record.epoch
        self._enter(record.epoch + 1)

    def counts(self) -> list[int]:
        """Jobs of epochs 1..N, in order."""
        tracker = self.sc.statusTracker()
        return [len(tracker.getJobIdsForGroup(f"{self.prefix}-e{e}")) for e in range(1, self.epochs + 1)]

    def restore(self) -> None:
        for key, value in self.saved.items():
            self.sc.setLocalProperty(key, value)


class EpochTicker:
    """A fit callback that hands each step and epoch to ``tick(epoch, step, steps)`` (the bar)."""

    def __init__(self, tick: Callable[[int, int, int], None]):
        self.tick = tick

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        self.tick(epoch, step, steps)

    def on_epoch_end(self, record, total_epochs: int) -> None:
        self.tick(record.epoch, 1, 1)


def measure_point(df: DataFrame, spec: PointSpec, *, warmup: int, features_col: str, label_col: str,
                  test_df: DataFrame | None, input_partitions: int, group_prefix: str,
                  tick: Callable[[int, int, int], None] | None = None,
                  placements: dict[int, Placement] | None = None) -> Measurement:
    """Fit ``spec.config`` on ``df`` and measure it (raises what fit raises). ``placements``: where
    tasks ran, by task count, shared by the points of a sweep (one job per task count)."""
    from ..train import fit

    spark = df.sparkSession
    groups = None if is_connect(spark) else EpochJobGroups(spark, group_prefix)
    callbacks = [c for c in (groups, EpochTicker(tick) if tick else None) if c is not None]
    try:
        model = fit(df, spec.config, features_col=features_col, label_col=label_col, verbose=False,
                    callbacks=callbacks)
    finally:
        if groups is not None:
            groups.restore()
    plan = model.schedule_plan or {}
    history = model.history
    per_job = int(plan.get("epochs_per_job") or 1)
    partitions = spec.config.partitions or input_partitions
    tasks = plan.get("tasks") or partitions  # the plan's record of its jobs' tasks
    placements = {} if placements is None else placements
    if tasks not in placements:
        placements[tasks] = where_tasks_run(df, label_col, tasks if tasks != input_partitions else None,
                                            df_partitions=input_partitions)
    placement = placements[tasks]
    if groups is not None:
        jobs, source = _counted_jobs(groups.counts(), warmup, per_job), "status tracker"
    else:
        planned = plan.get("jobs_per_epoch")
        jobs, source = (None if planned is None else planned / per_job), "plan"
    accuracy = None if test_df is None else model.evaluate(test_df, features_col=features_col,
                                                           label_col=label_col).accuracy
    return Measurement([float(h["seconds"]) for h in history[warmup:]], jobs, source, placement, model,
                       partitions, tasks, per_job, accuracy)


def _counted_jobs(counts: list[int], warmup: int, epochs_per_job: int) -> float | None:
    """Jobs per epoch from each epoch's count: over the measured epochs, or over all of them when
    one job trains several epochs (its jobs are counted in the first epoch it trains)."""
    chosen = counts if epochs_per_job > 1 else counts[warmup:]
    return sum(chosen) / len(chosen) if chosen else None


def point_row(base: dict, spec: PointSpec, run: Callable[[], Measurement]) -> dict:
    """The row of one point: ``base`` (sweep-wide columns) with the point's own; a failure of
    ``run`` is kept in ``error`` (timings null) rather than raised."""
    config = spec.config
    row = {**base, "timestamp": datetime.now(timezone.utc), "point": spec.label, "slots": spec.slots,
           "partitions": config.partitions, "engine": config.engine, "schedule": config.schedule,
           "aggregate": config.aggregate}
    try:
        measured = run()
    except Exception as error:  # a point that fails is a result; KeyboardInterrupt still stops the sweep
        row["error"] = f"{type(error).__name__}: {first_line(error)}"
        return row
    seconds = measured.epoch_seconds
    model, plan = measured.model, measured.model.schedule_plan or {}
    row.update({
        "partitions": measured.partitions, "tasks": measured.tasks,
        "schedule": plan.get("schedule", config.schedule), "aggregate": plan.get("aggregate"),
        "rows": int(model.history[-1]["rows"]) if model.history else base.get("rows"),
        "seconds_per_epoch": statistics.median(seconds) if seconds else None,
        "seconds_min": min(seconds) if seconds else None, "seconds_max": max(seconds) if seconds else None,
        "epoch_seconds": seconds, "jobs_per_epoch": measured.jobs_per_epoch, "jobs_source": measured.jobs_source,
        "executors": measured.placement.executors, "hosts": measured.placement.hosts,
        "executor_ids": list(measured.placement.executor_ids), "host_names": list(measured.placement.host_names),
        "accuracy": measured.accuracy, "model": describe_network(model), "weights": int(model.network.num_params),
        "epochs_per_job": measured.epochs_per_job})
    return row


def describe_network(model) -> str:
    """``mlp 64-128-10`` / ``cnn 8x8x1 conv10 128-10``: what trained, in a few characters."""
    network, config = model.network, model.config
    dense = "-".join(str(h) for h in (*config.hidden, model.num_classes))
    if config.model == "mlp":
        return f"mlp {network.num_features}-{dense}"
    shape = "x".join(str(v) for v in model.image_shape)
    kernels = "-".join(str(k) for k in config.resolve_kernels(model.image_shape))
    return f"cnn {shape} conv{kernels} {dense}"
