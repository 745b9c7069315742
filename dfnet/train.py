"""The epoch loop: schedules, history, progress, divergence checks.

A *schedule* turns the cached training rows into the row sets of one epoch's
steps; the *engine* turns a row set into summed gradients (one Spark job); the
*optimizer* steps on the driver.
"""

from __future__ import annotations

import math
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .checkpoint import DEFAULT_KEEP, Checkpoint, CheckpointStore, check_compatible
from .compat import check_supported
from .config import TrainConfig
from .engine import make_engine, refuse_connect
from .engine.data import TrainingData, validate_frame
from .engine.dataframe import LocalPlan, resolve_aggregate
from .errors import ConfigError, TrainingDivergedError
from .model import TrainedModel
from .nn.network import LossAndGrad, Sequential, build_cnn, build_mlp
from .optim import make_optimizer
from .session import task_slots


@dataclass
class EpochRecord:
    """One line of training history. ``loss`` and ``accuracy`` are means over
    the rows the epoch's steps saw, each measured before that step's update."""

    epoch: int
    loss: float
    accuracy: float
    rows: int
    steps: int
    batch_size: float  # mean rows per step
    seconds: float  # training steps only, validation excluded
    val_loss: float | None = None  # on the validation rows, after the epoch's updates
    val_accuracy: float | None = None
    best_epoch: int | None = None  # early stopping: the epoch of the lowest validation loss so far

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# --- schedules ---------------------------------------------------------------------

def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**31 - 1)


def epoch_rows(data: TrainingData, fraction: float, seed: int, epoch: int):
    """The epoch's sample without replacement (all rows when ``fraction`` is 1)."""
    if fraction >= 1.0:
        return data.all_rows()
    return data.sample(fraction, _epoch_seed(seed, epoch))


def classic_steps(data: TrainingData, config: TrainConfig, epoch: int) -> Iterator:
    """One full-batch step on the epoch's sample."""
    yield epoch_rows(data, config.sample, config.seed, epoch)


def minibatch_steps(data: TrainingData, config: TrainConfig, epoch: int) -> Iterator:
    """The epoch's sample split into ~``batch_size``-row batches by a seeded hash of the row key,
    reshuffled every epoch."""
    rows = epoch_rows(data, config.sample, config.seed, epoch)
    num_batches = steps_per_epoch(config, data.count)
    for k in range(num_batches):
        yield data.batch(rows, k, num_batches, _epoch_seed(config.seed, epoch))


SCHEDULES: dict[str, Callable[[TrainingData, TrainConfig, int], Iterator]] = {
    "classic": classic_steps,
    "minibatch": minibatch_steps,
}


def steps_per_epoch(config: TrainConfig, rows: int) -> int:
    if config.schedule == "classic":
        return 1
    return max(1, round(rows * config.sample / config.batch_size))


#: ``auto`` trains one model per ~this many rows at most: on smaller shares an epoch of a model's
#: maths is shorter than the Spark job that runs it (0.1-0.3 s), so a second model buys no time,
#: while averaging k models that each saw 1/k of the rows needs more epochs to the same accuracy.
MIN_ROWS_PER_MODEL = 8192


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


#: ``auto`` lets one job train several whole epochs while a model's epoch has fewer rows than this,
#: so small data is not one 0.2-0.3 s Spark job per 0.05 s epoch (the 1,437 digits: 11 epochs a job).
ROWS_PER_JOB = 16384


def plan_auto(config: TrainConfig, *, rows: int, partitions: int, slots: int,
              task_rows: Callable[[int | None], int] | None = None, whole_epochs_only: bool = False) -> SchedulePlan:
    """The ``auto`` schedule: model averaging, planned from the data and the cluster.

    - models = min(partitions, task slots, rows // :data:`MIN_ROWS_PER_MODEL`), at
      least 1. Each job runs one task per model (``coalesce``), so 8 or 64
      partitions on a 2-core machine still train 2 models: more partitions than
      slots would only add task launches and models that each see less data.
    - averages per epoch = 1 for up to 2 models, else ceil(models / 2) (more
      models drift further apart between averages), at most one per local step;
      ``local_steps`` overrides.

    Jobs per epoch are the averages per epoch: independent of the row count.
    The plan is a function of the configuration, the row and partition counts
    and the slot count only (not of timings), so a run is reproducible and a
    resumed run plans the same. ``task_rows(tasks)`` gives the rows of the
    largest task when the cache is coalesced to ``tasks`` (None: not
    coalesced); by default an even split.

    With one average per epoch and fewer than :data:`ROWS_PER_JOB` rows per
    model, one job trains ``ROWS_PER_JOB // rows`` whole epochs (each its own
    permutation and fresh local optimizer, exactly as separate jobs would),
    unless ``whole_epochs_only``: a run that validates or checkpoints after
    every epoch, or samples its rows, needs one job per epoch.
    """
    models = max(1, min(partitions, slots, rows // MIN_ROWS_PER_MODEL))
    largest = task_rows(models if models < partitions else None) if task_rows else math.ceil(rows / models)
    batch = config.resolved_batch_size(largest)
    why_batch = f"local batches of {batch}" + (" (auto_batch_size)" if config.batch_size is None else "")
    config = config.replace(batch_size=batch)
    local_per_epoch = _local_steps_per_epoch(config, largest)
    per_job = 1
    if config.local_steps is not None:
        local = config.local_steps
        why_rounds = f"local_steps={local}"
    else:
        rounds = 1 if models <= 2 else min(local_per_epoch, math.ceil(models / 2))
        local = None if rounds == 1 else math.ceil(local_per_epoch / rounds)
        why_rounds = "one average per epoch" if rounds == 1 else f"{rounds} averages per epoch for {models} models"
        if rounds == 1 and not whole_epochs_only and config.sample >= 1.0:
            per_job = max(1, min(config.epochs, ROWS_PER_JOB // max(largest, 1)))
            if per_job > 1:
                why_rounds += f"; {per_job} epochs per job ({largest} rows a model: a job costs more than an epoch)"
    if models == 1:
        why_models = ("1 model: one task slot" if slots == 1 else "1 model: one partition" if partitions == 1 else
                      f"1 model: {rows} rows are fewer than {2 * MIN_ROWS_PER_MODEL} (a second model would "
                      f"cost more in averaging than it saves)")
    else:
        limit = "task slot" if models == slots else ("partition" if models == partitions else
                                                     f"{MIN_ROWS_PER_MODEL} rows")
        why_models = f"{models} models, one per {limit} ({partitions} partitions, {slots} task slots)"
    return SchedulePlan("average", batch, models, local, f"{why_models}; {why_rounds}; {why_batch}", per_job)


def plan_schedule(config: TrainConfig, *, rows: int, partitions: int, slots: int,
                  task_rows: Callable[[int | None], int] | None = None, whole_epochs_only: bool = False
                  ) -> SchedulePlan:
    """The plan of ``config.schedule`` (``auto`` resolved by :func:`plan_auto`)."""
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


class EarlyStopping:
    """Tracks the validation loss: the best epoch, its weights, and epochs without improvement."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.best_params: np.ndarray | None = None
        self.wait = 0

    def update(self, epoch: int, val_loss: float, params: np.ndarray) -> None:
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.best_params, self.wait = val_loss, epoch, params.copy(), 0
        else:
            self.wait += 1

    @property
    def should_stop(self) -> bool:
        return self.wait >= self.patience

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_params": None if self.best_params is None else self.best_params.copy()}

    def load_state_dict(self, state: dict, dtype) -> None:
        self.best_loss, self.best_epoch, self.wait = float(state["best_loss"]), state["best_epoch"], int(state["wait"])
        self.best_params = None if state.get("best_params") is None else state["best_params"].astype(dtype)


def split_validation(df: DataFrame, fraction: float, seed: int, key_cols: Sequence[str]
                     ) -> tuple[DataFrame, DataFrame]:
    """``(training rows, validation rows)``: a row is held out when a seeded hash of its key
    columns falls below ``fraction``, so the two are disjoint, together are ``df``, and a row's
    side does not depend on the partitioning, the row order or the run."""
    bucket = F.pmod(F.xxhash64(*[F.col(c) for c in key_cols], F.lit(seed), F.lit("validation")),
                    F.lit(_SPLIT_BUCKETS))
    held_out = bucket < F.lit(int(round(fraction * _SPLIT_BUCKETS)))
    return df.filter(~held_out), df.filter(held_out)


_SPLIT_BUCKETS = 1 << 30


# --- progress ----------------------------------------------------------------------

class Callback(Protocol):
    """What ``fit`` tells its callbacks. A callback may also have ``on_message(text)``: one-line
    notes such as where a run resumes from."""

    def on_step(self, epoch: int, step: int, steps: int) -> None: ...
    def on_epoch_end(self, record: EpochRecord, total_epochs: int) -> None: ...


class ProgressPrinter:
    """Prints ``Epoch i/N | Loss | Acc | Batchsize | seconds`` lines, and a live bar on a terminal."""

    def __init__(self, out=None, bar: bool | None = None):
        self.out = out or sys.stdout
        self.bar_stream = sys.stderr
        self.bar = self.bar_stream.isatty() if bar is None else bar

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        if not self.bar:
            return
        width = 30
        filled = int(width * step / steps)
        self.bar_stream.write(f"\r  epoch {epoch} [{'#' * filled}{'.' * (width - filled)}] {step}/{steps} steps")
        self.bar_stream.flush()

    def on_message(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def on_epoch_end(self, record: EpochRecord, total_epochs: int) -> None:
        if self.bar:
            self.bar_stream.write("\r" + " " * 70 + "\r")
        val = "" if record.val_accuracy is None else \
            f" | Val loss {record.val_loss:.4f} | Val acc {record.val_accuracy:.4f}"
        print(f"Epoch {record.epoch}/{total_epochs} | Loss {record.loss:.4f} | Acc {record.accuracy:.4f} | "
              f"Batchsize {record.batch_size:.0f} | {record.seconds:.2f} s{val}", file=self.out, flush=True)


# --- the loop ----------------------------------------------------------------------

def build_network(config: TrainConfig, num_features: int, num_classes: int) -> Sequential:
    """The MLP or CNN that ``config`` describes, for images of ``num_features`` values."""
    if config.model == "mlp":
        return build_mlp(num_features, config.hidden, num_classes, activation=config.activation,
                         loss=config.loss, dtype=config.dtype, dropout=config.dropout)
    image_shape = config.resolve_image_shape(num_features)
    try:
        return build_cnn(image_shape, [(k, config.kernel_size) for k in config.resolve_kernels(image_shape)],
                         n_out=num_classes,
                         dense=config.hidden, activation=config.activation,
                         conv_activation=config.conv_activation_name, padding=config.padding, pool=config.pool,
                         loss=config.loss, dtype=config.dtype, dropout=config.dropout)
    except ValueError as e:  # a kernel or pooling window larger than what reaches it
        raise ConfigError(f"model='cnn' does not fit {image_shape} images: {e}") from e


def engine_for(config: TrainConfig, network: Sequential):
    """The engine ``config`` asks for, computing ``network``."""
    return make_engine(config.engine, network, aggregate=config.aggregate, patches=config.patches,
                       patch_rows=config.patch_rows)


def fit(df: DataFrame, config: TrainConfig | None = None, *, features_col: str = "image",
        label_col: str = "label", num_classes: int | None = None, network: Sequential | None = None,
        initial_params: np.ndarray | None = None, validation_df: DataFrame | None = None,
        callbacks: Sequence[Callback] = (), verbose: bool = True, checkpoint_dir: str | None = None,
        checkpoint_every: int = 1, checkpoint_keep: int | None = DEFAULT_KEEP,
        resume: bool = False, run_id: str | None = None, key_cols: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None, skip_bad_images: bool = False) -> TrainedModel:
    """Train a network on a DataFrame of images and integer labels.

    Parameters
    ----------
    df : DataFrame with an array column of pixels (``features_col``) and a
        column of class indices ``0..k-1`` (``label_col``). ``features_col`` may
        also hold the struct of ``spark.read.format("image")`` or file bytes
        (``binaryFile``'s ``content``): they are decoded once, checked (a file
        that is no image is named; with ``skip_bad_images`` such rows are left
        out) and resized to ``config.image_shape`` (H, W, C) or, by default,
        kept at their common size (see :func:`dfnet.images.as_training_frame`).
    config : hyperparameters; dfnet's defaults when None. With
        ``config.validation_split`` F > 0 a fraction F of ``df``'s rows is held
        out (a seeded hash of ``key_cols``) and scored after every epoch;
        ``config.early_stopping`` N stops after N epochs without a lower
        validation loss and hands back the best epoch's weights.
    num_classes : k; by default the largest label + 1 (at least 2).
    network : an explicit architecture; by default the MLP or CNN ``config`` describes
        (a CNN's ``image_shape`` defaults to square single-channel images).
    initial_params : flat starting weights; by default drawn with ``config.init``.
    validation_df : labelled rows scored after every epoch (``val_loss``,
        ``val_accuracy`` in the history), instead of a ``validation_split``;
        one extra Spark job per epoch.
    key_cols : the columns that identify a row for the validation split (e.g.
        ``["id"]``); by default the image and the label themselves.
    checkpoint_dir : a directory Spark can write (local, ``hdfs://``, ``dbfs:/``,
        ``s3a://`` ...); a checkpoint is written there every ``checkpoint_every``
        epochs and after the last one, keeping the newest ``checkpoint_keep``
        (None: all). See :mod:`dfnet.checkpoint`.
    run_id : names the run in the tables of :mod:`dfnet.tables`; by default a new
        one from the UTC time and a random suffix (``TrainedModel.run_id``).
    class_names : the name of each class index, kept in the model (its reports,
        tables and MLflow model); by default none (classes shown as numbers).
    callbacks : objects with ``on_step`` and ``on_epoch_end`` (see :class:`Callback`),
        optionally ``on_message``, ``on_train_begin``, ``on_train_end`` and
        ``on_train_failed``, e.g. :class:`dfnet.tracking.MLflowLogger`.
    resume : continue from the newest good checkpoint in ``checkpoint_dir``
        (bit-identical to an uninterrupted run, early stopping included); with
        none there, start from scratch. Without ``resume``, a ``checkpoint_dir``
        that already holds checkpoints is refused rather than mixed with a new run's.

    Everything about the input is checked before the first step: missing
    columns, wrong types, image lengths, NaN/inf pixels, labels out of range,
    an empty DataFrame, more partitions than rows, a checkpoint of another run,
    early stopping without validation rows.
    """
    config = (config or TrainConfig()).validate()
    if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
        raise ConfigError(f"run_id={run_id!r}: must be a non-empty string")
    run_id = run_id or new_run_id()
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every={checkpoint_every!r}: must be an integer >= 1")
    if resume and checkpoint_dir is None:
        raise ConfigError("resume=True needs a checkpoint_dir to resume from")
    if config.validation_split and validation_df is not None:
        raise ConfigError(f"validation_split={config.validation_split} holds rows of df out for validation, "
                          f"and validation_df was given too: use one or the other")
    if config.early_stopping is not None and not config.validation_split and validation_df is None:
        raise ConfigError(f"early_stopping={config.early_stopping} watches the validation loss: give "
                          f"validation_split (--validation-split F) or validation_df")
    check_supported(df.sparkSession)
    if config.engine != "dataframe":  # before the validation job, not when the engine first needs an RDD
        refuse_connect(df.sparkSession, config.engine)
    decoded: list = []  # images fit decoded and cached: released when fit returns or raises
    df, config = _image_features(df, features_col, config, skip_bad_images, decoded)
    try:
        if validation_df is not None and decoded:
            validation_df, _ = _image_features(validation_df, features_col, config, skip_bad_images, decoded)
        key_cols = list(key_cols) if key_cols else [features_col, label_col]
        missing_keys = [c for c in key_cols if c not in df.columns]
        if config.validation_split and missing_keys:
            raise ConfigError(f"key_cols {missing_keys} not found; the DataFrame has columns {df.columns}")
        num_features = network.num_features if network is not None else None
        if network is not None:
            num_classes = network.num_classes
        summary = validate_frame(df, features_col, label_col, num_features, num_classes)
        if config.partitions is not None and config.partitions > summary["rows"]:
            raise ConfigError(f"partitions={config.partitions} is more than the {summary['rows']} rows of the "
                              f"DataFrame: some partitions would hold no rows; use at most {summary['rows']}")
        num_features = int(summary["max_len"])
        num_classes = num_classes or max(2, int(summary["max_label"]) + 1)
        network = network or build_network(config, num_features, num_classes)
        if network.dtype.name != config.dtype:
            raise ConfigError(f"dtype={config.dtype!r} but the network computes in {network.dtype.name}")
        params = (network.init_params(config.seed, config.init_scheme) if initial_params is None
                  else np.array(initial_params, dtype=network.dtype))
        if params.shape != (network.num_params,):
            raise ConfigError(f"initial_params has shape {params.shape}, the network needs ({network.num_params},)")
        if not np.all(np.isfinite(params)):
            raise ConfigError(f"initial_params holds {int(np.sum(~np.isfinite(params)))} NaN or infinite value(s)")

        callbacks = list(callbacks) + ([ProgressPrinter()] if verbose else [])
        optimizer = _driver_optimizer(config, network)
        stopper = EarlyStopping(config.early_stopping, config.min_delta) if config.early_stopping else None
        history: list[EpochRecord] = []
        store, resumed = None, None
        if checkpoint_dir is not None:
            store = CheckpointStore(df.sparkSession, checkpoint_dir, keep=checkpoint_keep)
            if resume:
                resumed = store.latest()
                if resumed is None:
                    _tell(callbacks, f"No checkpoint in {store.uri}: starting from scratch")
                else:
                    check_compatible(resumed, network.to_config(), config.to_dict(), {})
                    params = resumed.params.astype(network.dtype)
                    optimizer.load_state_dict(resumed.optimizer_state)
                    history = [EpochRecord(**h) for h in resumed.history]
                    if stopper is not None and resumed.early_stopping is not None:
                        stopper.load_state_dict(resumed.early_stopping, network.dtype)
            elif store.epochs():
                raise ConfigError(f"checkpoint directory {store.uri} already holds checkpoints (epochs "
                                  f"{store.epochs()}); pass resume=True (--resume) to continue that run, or choose "
                                  f"an empty directory")

        if config.validation_split:
            df, validation_df = split_validation(df, config.validation_split, config.seed, key_cols)
        elif validation_df is not None:
            validate_frame(validation_df, features_col, label_col, num_features, num_classes)
        engine = engine_for(config, network)
        shuffle = config.schedule == "auto" and config.engine == "dataframe"
        prepare_args = dict(shuffle_seed=config.seed) if shuffle else {}
        if "partitions" in summary:  # Connect: counted by the validation job, so no job of its own
            prepare_args["input_partitions_hint"] = summary["partitions"]
        data = engine.prepare(df, features_col=features_col, label_col=label_col, num_partitions=config.partitions,
                              **prepare_args)
    except BaseException:
        _release(decoded)
        raise
    validation = None
    try:
        partitions = data.num_partitions()
        if data.count == 0:
            raise ConfigError(f"validation_split={config.validation_split} leaves no training rows of "
                              f"{summary['rows']}")
        if resumed is not None:
            check_compatible(resumed, network.to_config(), config.to_dict(),
                             {"rows": data.count, "partitions": partitions})
            _tell(callbacks, f"Resuming from {resumed.uri} (epoch {resumed.epoch} of {config.epochs} done)")
        if validation_df is not None:
            validation = engine.prepare(validation_df, features_col=features_col, label_col=label_col)
            if validation.count == 0:
                raise ConfigError(f"validation_split={config.validation_split} holds out none of the "
                                  f"{summary['rows']} rows; use a larger fraction")
        sizes: dict = {}  # tasks -> rows of each: one small job, asked once

        def task_rows(tasks: int | None) -> int:
            if tasks not in sizes:
                sizes[tasks] = max(data.partition_sizes(tasks))
            return sizes[tasks]

        plan = plan_schedule(config, rows=data.count, partitions=partitions,
                             slots=task_slots(df.sparkSession, partitions), task_rows=task_rows,
                             whole_epochs_only=validation is not None or store is not None)
        # What the loop runs: the planned schedule and batch size (the checkpoints and the model
        # keep the configuration as given, so a resumed run plans again and compares like with like).
        run = config.replace(schedule=plan.schedule, batch_size=plan.batch_size)
        if plan.schedule == "average":
            max_rows = task_rows(_coalesced(plan, partitions))
            total_steps = averaging_rounds(run, max_rows, plan.local_steps)
            grouped: dict[int, LossAndGrad] = {}  # epochs_per_job > 1: the job's later epochs' sums
            updates = lambda epoch: _averaging_epoch(engine, data, params, run, epoch, max_rows,  # noqa: E731
                                                     plan, partitions, grouped)
        else:
            total_steps = steps_per_epoch(run, data.count)
            updates = lambda epoch: _gradient_epoch(engine, data, params, optimizer, run, epoch)  # noqa: E731
        if hasattr(engine, "aggregate"):
            engine.aggregate = resolve_aggregate(config.aggregate, _coalesced(plan, partitions) or partitions,
                                                 network.num_params)
        _tell(callbacks, _describe_plan(config.schedule, plan, data.count, total_steps,
                                        None if validation is None else validation.count))
        _hook(callbacks, "on_train_begin", config,
              {"run_id": run_id, "rows": data.count, "partitions": partitions,
               "validation_rows": None if validation is None else validation.count,
               "plan": {**asdict(plan), "jobs_per_epoch": total_steps}, "history": [r.as_dict() for r in history]})
        stopped = stopper is not None and stopper.should_stop
        for epoch in range(len(history) + 1, config.epochs + 1):
            if stopped:
                break
            start = time.perf_counter()
            loss_sum, correct, rows, steps = 0.0, 0, 0, 0
            optimizer.lr = config.lr_at(epoch)
            for result in updates(epoch):
                steps += 1
                loss_sum += result.loss_sum
                correct += result.correct
                rows += result.count
                for cb in callbacks:
                    cb.on_step(epoch, steps, total_steps)
            record = EpochRecord(epoch, loss_sum / max(rows, 1), correct / max(rows, 1), rows, steps,
                                 rows / steps, time.perf_counter() - start)
            if validation is not None:
                scored = engine.gradient(params, validation.all_rows())
                record.val_loss = scored.loss_sum / scored.count
                record.val_accuracy = scored.correct / scored.count
                if stopper is not None:
                    stopper.update(epoch, record.val_loss, params)
                    record.best_epoch = stopper.best_epoch
                    stopped = stopper.should_stop
            history.append(record)
            if store is not None and (epoch % checkpoint_every == 0 or epoch == config.epochs or stopped):
                store.save(Checkpoint(epoch, params.copy(), config.optimizer, optimizer.state_dict(),
                                      [r.as_dict() for r in history], network.to_config(), config.to_dict(),
                                      {"rows": data.count, "partitions": partitions},
                                      early_stopping=None if stopper is None else stopper.state_dict()))
            for cb in callbacks:
                cb.on_epoch_end(record, config.epochs)
    except BaseException as error:
        _hook(callbacks, "on_train_failed", error)
        raise
    finally:
        data.release()
        if validation is not None:
            validation.release()
        _release(decoded)
    early = None
    if stopper is not None and stopper.best_params is not None:
        params = stopper.best_params.copy()
        early = {"best_epoch": stopper.best_epoch, "best_val_loss": stopper.best_loss,
                 "stopped_epoch": history[-1].epoch if stopped else None,
                 "patience": config.early_stopping, "min_delta": config.min_delta}
        _tell(callbacks, (f"Early stopping: no lower validation loss for {config.early_stopping} epochs, stopped "
                          f"after epoch {history[-1].epoch}" if stopped else
                          f"Early stopping did not trigger in {config.epochs} epochs") +
              f"; restored the weights of epoch {stopper.best_epoch} (val loss {stopper.best_loss:.4f})")
    model = TrainedModel(network, params, config=config, history=[r.as_dict() for r in history],
                         class_names=list(class_names) if class_names else None, run_id=run_id,
                         early_stopping=early, schedule_plan={**asdict(plan), "jobs_per_epoch": total_steps})
    _hook(callbacks, "on_train_end", model)
    return model


def _image_features(df: DataFrame, features_col: str, config: TrainConfig, skip_bad_images: bool,
                    decoded: list) -> tuple[DataFrame, TrainConfig]:
    """``df`` with image structs or file bytes in ``features_col`` decoded into pixel arrays (the
    persisted decoding appended to ``decoded``), and the config with their (H, W, C); anything
    else unchanged (validate_frame then judges it)."""
    from .images import as_training_frame, is_image_column

    if not is_image_column(df, features_col):
        return df, config

    frame, shape, check = as_training_frame(df, features_col, image_shape=config.image_shape,
                                            skip_bad_images=skip_bad_images)
    decoded.append(check)
    return frame, config.replace(image_shape=tuple(shape))


def _release(decoded: list) -> None:
    for check in decoded:
        check.unpersist()
    decoded.clear()


def _driver_optimizer(config: TrainConfig, network: Sequential):
    decay = dict(weight_decay=config.weight_decay, decay_mask=network.decay_mask()) if config.weight_decay else {}
    return make_optimizer(config.optimizer, config.learning_rate, momentum=config.momentum,
                          beta1=config.beta1, beta2=config.beta2, **decay)


def _coalesced(plan: SchedulePlan, partitions: int) -> int | None:
    """The task count an averaging job coalesces the cache to, None when it keeps the partitions."""
    return plan.models if plan.models is not None and plan.models < partitions else None


def _describe_plan(asked: str, plan: SchedulePlan, rows: int, jobs: int, validation_rows) -> str:
    """The start-of-run line: which schedule runs (``asked``: the configured one), and why."""
    what = {"average": "model averaging", "minibatch": f"mini-batches of {plan.batch_size}",
            "classic": "one full-batch step an epoch"}[plan.schedule]
    head = f"Schedule {asked}" + (f" -> {what}" if asked == "auto" else f": {what}")
    validation = "" if validation_rows is None else f", plus 1 validation job ({validation_rows} rows)"
    per = "per epoch" if plan.epochs_per_job == 1 else f"per {plan.epochs_per_job} epochs"
    return (f"{head}: {plan.reason}; {jobs} Spark job{'s' if jobs != 1 else ''} {per}{validation}; "
            f"{rows} training rows")


def new_run_id() -> str:
    """A name for a training run, unique in practice and sortable by start time: ``20261123-235501-3f9a1c``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _hook(callbacks: Sequence[Callback], name: str, *args) -> None:
    """Call the optional hook ``name`` of every callback that has it."""
    for cb in callbacks:
        method = getattr(cb, name, None)
        if method is not None:
            method(*args)


def _tell(callbacks: Sequence[Callback], text: str) -> None:
    _hook(callbacks, "on_message", text)


def _gradient_epoch(engine, data: TrainingData, params: np.ndarray, optimizer, config: TrainConfig,
                    epoch: int) -> Iterator[LossAndGrad]:
    """Synchronous schedules: one job per step, the optimizer steps on the driver."""
    dropout = engine.network.has_dropout
    for step, rows in enumerate(SCHEDULES[config.schedule](data, config, epoch), start=1):
        result = (engine.gradient(params, rows, (config.seed, epoch, step)) if dropout else
                  engine.gradient(params, rows))
        if result.count:
            _check_finite(result, epoch, step, config, "the loss or gradient")
            optimizer.step(params, result.grad_sum / result.count)
            _check_finite_weights(params, epoch, step, config)
        yield result


def _local_steps_per_epoch(config: TrainConfig, max_partition_rows: int) -> int:
    """Local mini-batch steps the largest partition makes in one epoch of the averaging schedule."""
    return max(1, math.ceil(max_partition_rows * config.sample / config.batch_size))


def averaging_rounds(config: TrainConfig, max_partition_rows: int, local_steps: int | None = None) -> int:
    """Jobs per epoch of the averaging schedule: the largest task's local steps / local steps
    between averages (``local_steps``, default ``config.local_steps``, default a whole epoch)."""
    local = _local_steps_per_epoch(config, max_partition_rows)
    return math.ceil(local / (local_steps or config.local_steps or local))


def _averaging_epoch(engine, data: TrainingData, params: np.ndarray, config: TrainConfig, epoch: int,
                     max_partition_rows: int, schedule: SchedulePlan | None = None,
                     partitions: int | None = None, grouped: dict | None = None) -> Iterator[LossAndGrad]:
    """Model averaging: each job, every task (a partition, or ``schedule.models`` coalesced
    groups of them) trains locally from the broadcast weights; the driver replaces the weights
    by the row-weighted average of the tasks' results.

    With ``schedule.epochs_per_job`` k > 1 the first epoch of each group of k runs ONE job that
    trains all k (the weights are those after the group from then on); the group's later
    epochs only hand back their sums, kept in ``grouped``, and cost no job."""
    schedule = schedule or SchedulePlan("average", config.batch_size, None, config.local_steps)
    if grouped is not None and epoch in grouped:
        yield grouped.pop(epoch)
        return
    rows = epoch_rows(data, config.sample, config.seed, epoch)
    tasks = _coalesced(schedule, partitions) if partitions is not None else None
    if tasks is not None:
        rows = rows.coalesce(tasks)
    per_round = schedule.local_steps or _local_steps_per_epoch(config, max_partition_rows)
    later = range(epoch + 1, min(config.epochs, epoch + schedule.epochs_per_job - 1) + 1)
    for r in range(averaging_rounds(config, max_partition_rows, schedule.local_steps)):
        plan = LocalPlan(epoch=epoch, round=r, steps=per_round, batch_size=config.batch_size, seed=config.seed,
                         optimizer=config.optimizer, lr=config.lr_at(epoch),
                         optimizer_args=dict(momentum=config.momentum, beta1=config.beta1, beta2=config.beta2),
                         weight_decay=config.weight_decay, dropout=engine.network.has_dropout,
                         more_lrs=tuple(config.lr_at(e) for e in later))
        first, *rest = engine.local_epochs(params, rows, plan)
        if rest:
            grouped.update(zip(later, rest))
        final = (rest or [first])[-1]  # the weights after the job's last epoch, and their row weight
        result = LossAndGrad(first.loss_sum, final.grad_sum, first.correct, first.count)
        if result.count:
            _check_finite(result, epoch, r + 1, config, "the loss or the partitions' locally trained weights")
            params[:] = (result.grad_sum / final.count).astype(params.dtype)
            _check_finite_weights(params, epoch, r + 1, config)
        yield result


def _check_finite(result: LossAndGrad, epoch: int, step: int, config: TrainConfig, what: str) -> None:
    if not (math.isfinite(result.loss_sum) and np.all(np.isfinite(result.grad_sum))):
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch}, step {step}: {what} is NaN or infinite "
            f"(lr={config.learning_rate}); lower the learning rate")


def _check_finite_weights(params: np.ndarray, epoch: int, step: int, config: TrainConfig) -> None:
    """After every update: a finite gradient times a huge learning rate can still overflow the
    weights, and the last step of a run would otherwise hand back NaN or infinite weights."""
    with np.errstate(all="ignore"):
        finite = bool(np.isfinite(params).all())
    if not finite:
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch}, step {step}: the updated weights are NaN or infinite "
            f"(lr={config.learning_rate}); lower the learning rate")
