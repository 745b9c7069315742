"""Schedules: which rows each Spark job of an epoch trains on, and how its result updates the weights.

A schedule is planned once per run (:func:`plan_schedule`, a function of the
configuration, the row and partition counts and the task slots only, so a run
is reproducible and a resumed run plans the same), then runs as a strategy
object that owns its plan, its aggregation and its epochs per job:

- :class:`GradientSchedule` (``classic``, ``minibatch``): one job per step sums
  the gradient of the step's rows; the driver's optimizer steps.
- :class:`AveragingSchedule` (``average``, and ``auto`` on the DataFrame
  engine): each job, every task trains its own model from the broadcast weights;
  the driver takes the row-weighted mean of the tasks' weights.

Why ``auto`` plans what it does, with figures: docs/performance.md ("The
defaults against what a user would pick instead", "Time to accuracy",
"Accuracy as models multiply").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np

from .config import TrainConfig
from .engine.dataframe import LocalPlan
from .errors import TrainingDivergedError

#: ``auto`` trains one model per this many rows at most: averaging k models that each saw 1/k of
#: the rows needs more epochs to the same accuracy, the more so the fewer rows each saw (Fashion-MNIST:
#: 88% test accuracy after 11 epochs at 30,000 rows a model, 16-17 at 15,000, 21-25 at about 7,500;
#: docs/performance.md, "Accuracy as models multiply"); and on smaller shares a model's epoch is
#: shorter than its Spark job.
MIN_ROWS_PER_MODEL = 16384
#: ``auto`` lets one job train several whole epochs while a model's epoch has fewer rows than this,
#: so small data is not one Spark job per epoch whose maths is a fraction of the job's cost.
ROWS_PER_JOB = 16384


@dataclass(frozen=True)
class SchedulePlan:
    """What a run's schedule does: the schedule that runs and, for model averaging, how many
    models train side by side (tasks per job) and how many local steps they take between averages."""

    schedule: str  # classic, minibatch or average
    batch_size: int = 64  # rows per (local) step, resolved (TrainConfig.resolved_batch_size)
    models: int | None = None  # average: models (coalesced tasks) per job; None: one per partition
    local_steps: int | None = None  # average: local steps between two averages (None: an epoch)
    reason: str = ""
    epochs_per_job: int = 1  # average: whole epochs one job trains (small data, no per-epoch validation)
    jobs_per_epoch: int | None = None  # set when the schedule is made (it knows the task sizes)
    aggregate: str | None = None  # how a job adds its partial rows, resolved for its task count
    tasks: int | None = None  # tasks a training job runs (the partitions, or the coalesced models)
    lr_scale: float = 1.0  # the configured learning rate (lr_at) is multiplied by this ...
    warmup_epochs: float = 0.0  # ... reached linearly from 1x over this many epochs (Goyal et al. 2017)

    def lr_factor(self, epochs_done: float) -> float:
        """What multiplies ``config.lr_at`` after ``epochs_done`` epochs (a fraction within one):
        ``lr_scale``, ramped up linearly from 1 over ``warmup_epochs``."""
        if self.warmup_epochs <= 0 or epochs_done >= self.warmup_epochs:
            return self.lr_scale
        return 1.0 + (self.lr_scale - 1.0) * epochs_done / self.warmup_epochs

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- planning ---------------------------------------------------------------------

def plan_schedule(config: TrainConfig, *, rows: int, partitions: int, slots: int,
                  task_rows: Callable[[int | None], int] | None = None, whole_epochs_only: bool = False
                  ) -> SchedulePlan:
    """The plan of ``config.schedule`` (``auto`` resolved by :func:`plan_auto`). ``task_rows(tasks)``
    gives the rows of the largest task when the cache is coalesced to ``tasks`` (None: not
    coalesced); by default an even split."""
    if config.schedule == "auto":
        if config.engine != "dataframe":
            return SchedulePlan("minibatch", config.resolved_batch_size(rows),
                                reason=f"the {config.engine} engine steps in mini-batches")
        return plan_auto(config, rows=rows, partitions=partitions, slots=slots, task_rows=task_rows,
                         whole_epochs_only=whole_epochs_only)
    if config.schedule == "average":
        largest = task_rows(None) if task_rows else math.ceil(rows / partitions)
        return SchedulePlan("average", config.resolved_batch_size(largest), None, config.local_steps,
                            "as asked: one model per partition")
    return SchedulePlan(config.schedule, config.resolved_batch_size(rows), reason="as asked")


def plan_auto(config: TrainConfig, *, rows: int, partitions: int, slots: int,
              task_rows: Callable[[int | None], int] | None = None, whole_epochs_only: bool = False) -> SchedulePlan:
    """The ``auto`` schedule: model averaging, planned from the data and the cluster.

    - models = min(partitions, task slots, rows // :data:`MIN_ROWS_PER_MODEL`), at
      least 1. Each job runs one task per model (``coalesce``): more partitions
      than slots would only add task launches and models that each see less data.
    - One average per epoch (``local_steps`` overrides): averaging more often
      reached 88% no sooner (Fashion-MNIST: 4 models, 2 averages an epoch against 1;
      7 models, 4 against 1), and every average is a Spark job that reads each
      task's rows again.
    - With fewer than :data:`ROWS_PER_JOB` rows per model, one job trains
      ``ROWS_PER_JOB // rows`` whole epochs, unless ``whole_epochs_only``: a
      run that validates or checkpoints after every epoch, or samples its rows,
      needs one job per epoch.
    """
    models = max(1, min(partitions, slots, rows // MIN_ROWS_PER_MODEL))
    largest = task_rows(models if models < partitions else None) if task_rows else math.ceil(rows / models)
    batch = config.resolved_batch_size(largest)
    why_batch = f"local batches of {batch}" + (" (auto_batch_size)" if config.batch_size is None else "")
    config = config.replace(batch_size=batch)
    per_job = 1
    if config.local_steps is not None:
        local = config.local_steps
        why_rounds = f"local_steps={local}"
    else:
        local = None
        why_rounds = "one average per epoch"
        if not whole_epochs_only and config.sample >= 1.0:
            per_job = max(1, min(config.epochs, ROWS_PER_JOB // max(largest, 1)))
            if per_job > 1:
                why_rounds += f"; {per_job} epochs per job ({largest} rows a model: a job costs more than an epoch)"
    return SchedulePlan("average", batch, models, local,
                        f"{_why_models(models, rows, partitions, slots)}; {why_rounds}; {why_batch}", per_job)


def _why_models(models: int, rows: int, partitions: int, slots: int) -> str:
    if models == 1:
        return ("1 model: one task slot" if slots == 1 else "1 model: one partition" if partitions == 1 else
                f"1 model: {rows} rows are fewer than {2 * MIN_ROWS_PER_MODEL} (averaged models that "
                f"each see fewer rows need more epochs to the same accuracy)")
    limit = "task slot" if models == slots else ("partition" if models == partitions else
                                                 f"{MIN_ROWS_PER_MODEL} rows (models that see fewer rows "
                                                 f"average into a less accurate one)")
    return f"{models} models, one per {limit} ({partitions} partitions, {slots} task slots)"


def steps_per_epoch(config: TrainConfig, rows: int) -> int:
    """Gradient steps (= Spark jobs) per epoch of ``classic`` (one) or ``minibatch``."""
    if config.schedule == "classic":
        return 1
    return max(1, round(rows * config.sample / config.batch_size))


def local_steps_per_epoch(config: TrainConfig, max_partition_rows: int) -> int:
    """Local mini-batch steps the largest task makes in one epoch of the averaging schedule."""
    return max(1, math.ceil(max_partition_rows * config.sample / config.batch_size))


def averaging_rounds(config: TrainConfig, max_partition_rows: int, local_steps: int | None = None) -> int:
    """Jobs per epoch of the averaging schedule: the largest task's local steps / local steps
    between averages (``local_steps``, default ``config.local_steps``, default a whole epoch)."""
    local = local_steps_per_epoch(config, max_partition_rows)
    return math.ceil(local / (local_steps or config.local_steps or local))


# --- the rows of an epoch ----------------------------------------------------------------

def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**31 - 1)


def epoch_rows(data, fraction: float, seed: int, epoch: int):
    """The epoch's sample without replacement (all rows when ``fraction`` is 1)."""
    if fraction >= 1.0:
        return data.all_rows()
    return data.sample(fraction, _epoch_seed(seed, epoch))


def gradient_steps(data, config: TrainConfig, epoch: int) -> Iterator:
    """The row sets of an epoch's gradient steps: ``classic``, one full batch of the epoch's
    sample; ``minibatch``, the sample split into ~``batch_size``-row batches by a seeded hash of
    the row key, reshuffled every epoch."""
    rows = epoch_rows(data, config.sample, config.seed, epoch)
    if config.schedule == "classic":
        yield rows
        return
    num_batches = steps_per_epoch(config, data.count)
    for k in range(num_batches):
        yield data.batch(rows, k, num_batches, _epoch_seed(config.seed, epoch))


# --- running an epoch ----------------------------------------------------------------------

@dataclass
class EpochResult:
    """What an epoch's steps added up: loss and correct predictions (each measured before its
    step's update) over ``rows`` rows, in ``steps`` updates of the weights."""

    loss_sum: float = 0.0
    correct: int = 0
    rows: int = 0
    steps: int = 0
    batch_size: float = 0.0  # rows per optimizer step

    def add(self, loss_sum: float, correct: int, rows: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.rows += rows
        self.steps += 1


OnStep = Callable[[int, int, int], None]  # (epoch, step, steps)


class Schedule(Protocol):
    """What the trainer asks of a schedule: its plan, the engine and aggregation its jobs use, and
    ``train``, which trains from ``epoch`` (``params`` updated in place) and returns one result per
    epoch trained, calling ``on_step`` after each job."""

    plan: SchedulePlan
    engine: object
    aggregate: str

    def train(self, params: np.ndarray, epoch: int, on_step: OnStep) -> list[EpochResult]: ...


class GradientSchedule:
    """``classic`` and ``minibatch``: one Spark job per step sums the gradient of the step's rows;
    the driver's optimizer steps on their mean."""

    def __init__(self, plan: SchedulePlan, config: TrainConfig, engine, data, optimizer):
        self.config = config.replace(schedule=plan.schedule, batch_size=plan.batch_size)
        self.engine, self.data, self.optimizer = engine, data, optimizer
        tasks = data.num_partitions()
        self.aggregate = engine.aggregation_for(config.aggregate, tasks)
        self.plan = dataclasses.replace(plan, jobs_per_epoch=steps_per_epoch(self.config, data.count),
                                        aggregate=self.aggregate, tasks=tasks)

    def train(self, params: np.ndarray, epoch: int, on_step: OnStep) -> list[EpochResult]:
        """Train ``epoch`` (``params`` updated in place): its one result."""
        config, dropout, plan = self.config, self.engine.network.has_dropout, self.plan
        result = EpochResult()
        for step, rows in enumerate(gradient_steps(self.data, config, epoch), start=1):
            self.optimizer.lr = config.lr_at(epoch) * plan.lr_factor(epoch - 1 + (step - 1) / plan.jobs_per_epoch)
            noise_key = (config.seed, epoch, step) if dropout else None
            summed = self.engine.gradient(params, rows, noise_key, aggregate=self.aggregate)
            if summed.count:
                check_finite(summed.loss_sum, summed.grad_sum, epoch, step, config, "the loss or gradient")
                self.optimizer.step(params, summed.grad_sum / summed.count)
                check_finite_weights(params, epoch, step, config)
            result.add(summed.loss_sum, summed.correct, summed.count)
            on_step(epoch, step, self.plan.jobs_per_epoch)
        result.batch_size = result.rows / max(result.steps, 1)
        return [result]


class AveragingSchedule:
    """Model averaging: each job, every task (a partition, or ``plan.models`` coalesced groups of
    them) trains locally from the broadcast weights; the driver replaces the weights by the
    row-weighted mean of the tasks' results.

    With ``plan.epochs_per_job`` k > 1 one job trains k whole epochs (each with its own
    permutation and a fresh local optimizer) and hands back each epoch's totals; ``on_step`` then
    hears of the job once, for its first epoch.
    """

    def __init__(self, plan: SchedulePlan, config: TrainConfig, engine, data, partitions: int,
                 task_rows: Callable[[int | None], int]):
        self.config = config.replace(schedule=plan.schedule, batch_size=plan.batch_size)
        self.engine, self.data = engine, data
        self.tasks = plan.models if plan.models is not None and plan.models < partitions else None
        self.max_rows = task_rows(self.tasks)
        self.aggregate = engine.aggregation_for(config.aggregate, self.tasks or partitions)
        self.plan = dataclasses.replace(
            plan, jobs_per_epoch=averaging_rounds(self.config, self.max_rows, plan.local_steps),
            aggregate=self.aggregate, tasks=self.tasks or partitions)

    def train(self, params: np.ndarray, epoch: int, on_step: OnStep) -> list[EpochResult]:
        """Train from ``epoch`` (``params`` updated in place): one result per epoch trained, more
        than one when a job trains several."""
        config, plan = self.config, self.plan
        rows = epoch_rows(self.data, config.sample, config.seed, epoch)
        if self.tasks is not None:
            rows = rows.coalesce(self.tasks)
        steps_per_round = plan.local_steps or local_steps_per_epoch(config, self.max_rows)
        later = range(epoch + 1, min(config.epochs, epoch + plan.epochs_per_job - 1) + 1)
        results = [EpochResult(batch_size=plan.batch_size) for _ in range(1 + len(later))]
        for r in range(plan.jobs_per_epoch):
            local = LocalPlan(
                epoch=epoch, round=r, steps=steps_per_round, batch_size=config.batch_size, seed=config.seed,
                optimizer=config.optimizer, lr=config.lr_at(epoch) * plan.lr_factor(epoch - 1 + r / plan.jobs_per_epoch),
                optimizer_args=dict(momentum=config.momentum, beta1=config.beta1, beta2=config.beta2),
                weight_decay=config.weight_decay, dropout=self.engine.network.has_dropout,
                more_lrs=tuple(config.lr_at(e) * plan.lr_factor(e - 1) for e in later))
            trained = self.engine.train_locally(params, rows, local, aggregate=self.aggregate)
            first = trained.epochs[0]
            if first.count:
                check_finite(first.loss_sum, trained.weights, epoch, r + 1, config,
                             "the loss or the partitions' locally trained weights")
                params[:] = trained.weights.astype(params.dtype)
                check_finite_weights(params, epoch, r + 1, config)
            for result, totals in zip(results, trained.epochs):
                result.add(totals.loss_sum, totals.correct, totals.count)
            on_step(epoch, r + 1, plan.jobs_per_epoch)
        return results


def make_schedule(plan: SchedulePlan, config: TrainConfig, engine, data, optimizer, *, partitions: int,
                  task_rows: Callable[[int | None], int]) -> GradientSchedule | AveragingSchedule:
    """The strategy that runs ``plan``."""
    if plan.schedule == "average":
        return AveragingSchedule(plan, config, engine, data, partitions, task_rows)
    return GradientSchedule(plan, config, engine, data, optimizer)


def describe_plan(asked: str, plan: SchedulePlan, rows: int, validation_rows: int | None) -> str:
    """The start-of-run line: which schedule runs (``asked``: the configured one), and why."""
    what = {"average": "model averaging", "minibatch": f"mini-batches of {plan.batch_size}",
            "classic": "one full-batch step an epoch"}[plan.schedule]
    head = f"Schedule {asked}" + (f" -> {what}" if asked == "auto" else f": {what}")
    validation = "" if validation_rows is None else f", plus 1 validation job ({validation_rows} rows)"
    per = "per epoch" if plan.epochs_per_job == 1 else f"per {plan.epochs_per_job} epochs"
    jobs = plan.jobs_per_epoch
    return (f"{head}: {plan.reason}; {jobs} Spark job{'s' if jobs != 1 else ''} {per}{validation}; "
            f"{rows} training rows")


# --- divergence ---------------------------------------------------------------------------

def check_finite(loss_sum: float, vector: np.ndarray, epoch: int, step: int, config: TrainConfig,
                 what: str) -> None:
    """Stop at the first NaN or infinite loss or summed vector, naming the epoch and step."""
    if not (math.isfinite(loss_sum) and np.all(np.isfinite(vector))):
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch}, step {step}: {what} is NaN or infinite "
            f"(lr={config.learning_rate}); lower the learning rate")


def check_finite_weights(params: np.ndarray, epoch: int, step: int, config: TrainConfig) -> None:
    """After every update: a finite gradient times a huge learning rate can still overflow the
    weights, and the last step of a run would otherwise hand back NaN or infinite weights."""
    with np.errstate(all="ignore"):
        finite = bool(np.isfinite(params).all())
    if not finite:
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch}, step {step}: the updated weights are NaN or infinite "
            f"(lr={config.learning_rate}); lower the learning rate")
