"""``fit``: train a network on a DataFrame, as named phases over one training state.

check -> inputs -> initial state (new or resumed) -> data and plan -> epochs -> finish.

A *schedule* (:mod:`dfnet.schedules`) says which rows each Spark job of an
epoch trains on and how its result updates the weights; the *engine*
(:mod:`dfnet.engine`) runs each job; the callbacks (:mod:`dfnet.progress`)
hear about every step and epoch.
"""

from __future__ import annotations

import math
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from pyspark.sql import DataFrame

from .checkpoint import DEFAULT_KEEP, Checkpoint, CheckpointStore, check_compatible
from .compat import check_supported
from .config import TrainConfig
from .engine import make_engine, refuse_connect
from .engine.data import TrainingData, validate_frame
from .errors import ConfigError
from .model import TrainedModel
from .nn.network import Sequential, build_cnn, build_mlp
from .optim import Optimizer, make_optimizer
from .progress import Callback, Callbacks, EpochRecord, ProgressPrinter
from .schedules import EpochResult, Schedule, SchedulePlan, describe_plan, make_schedule, plan_schedule
from .session import task_slots
from .splits import hashed_split

__all__ = ["fit", "build_network", "engine_for", "new_run_id", "EarlyStopping",
           "EpochRecord", "ProgressPrinter", "Callback"]


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
    config = _checked(df, config or TrainConfig(), validation_df=validation_df, run_id=run_id, resume=resume,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
    hooks = Callbacks(list(callbacks) + ([ProgressPrinter()] if verbose else []))
    with ExitStack() as cleanup:
        inputs = _inputs(df, validation_df, config, features_col=features_col, label_col=label_col,
                         key_cols=key_cols, network=network, num_classes=num_classes,
                         skip_bad_images=skip_bad_images, cleanup=cleanup)
        network = network or build_network(inputs.config, inputs.num_features, inputs.num_classes)
        state, store = _initial_state(inputs.config, network, initial_params, hooks, checkpoint_dir=checkpoint_dir,
                                      checkpoint_keep=checkpoint_keep, resume=resume, spark=df.sparkSession)
        # A resumed run keeps its name, so its history, tables and tracking stay one run.
        run_id = run_id or (state.resumed and state.resumed.run_id) or new_run_id()
        engine = engine_for(inputs.config, network)
        data = _prepare_training(engine, inputs, features_col=features_col, label_col=label_col, cleanup=cleanup)
        try:
            _check_training(data, inputs, state, hooks)
            _prepare_validation(data, engine, inputs, features_col=features_col, label_col=label_col,
                                cleanup=cleanup)
            schedule = _schedule(inputs.config, engine, data, state, df.sparkSession,
                                 whole_epochs_only=data.validation is not None or store is not None)
            hooks.message("; ".join(filter(None, (
                describe_plan(inputs.config.schedule, schedule.plan, data.train.count,
                              None if data.validation is None else data.validation.count),
                getattr(engine, "aggregation_note", "")))))
            hooks.hook("on_train_begin", inputs.config, _facts(run_id, data, schedule, state))
            checkpoint = _checkpointer(store, checkpoint_every, inputs.config, data, schedule.plan, run_id=run_id,
                                       class_names=class_names)
            _train_epochs(state, schedule, data, inputs.config, hooks, checkpoint)
        except BaseException as error:
            hooks.hook("on_train_failed", error)
            raise
    model = _finish(state, inputs.config, schedule, hooks, class_names=class_names, run_id=run_id)
    hooks.hook("on_train_end", model)
    return model


# --- phase 1: check the arguments (no Spark job) ---------------------------------------

def _checked(df: DataFrame, config: TrainConfig, *, validation_df, run_id, resume, checkpoint_dir,
             checkpoint_every) -> TrainConfig:
    """The validated config; every argument that can be judged without reading data is judged here."""
    config = config.validate()
    if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
        raise ConfigError(f"run_id={run_id!r}: must be a non-empty string")
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
    return config


# --- phase 2: the inputs, decoded and checked ---------------------------------------------

@dataclass
class Inputs:
    """The training (and validation) rows as checked, and what they told about the network."""

    train: DataFrame
    validation: DataFrame | None
    config: TrainConfig  # with the decoded images' shape
    summary: dict  # validate_frame's: rows, max_len, labels, partitions (on Connect)
    num_features: int
    num_classes: int
    key_cols: list[str]


def _inputs(df: DataFrame, validation_df: DataFrame | None, config: TrainConfig, *, features_col: str,
            label_col: str, key_cols, network: Sequential | None, num_classes: int | None, skip_bad_images: bool,
            cleanup: ExitStack) -> Inputs:
    """Decode image columns (cached until ``cleanup``), check every row, and hold validation rows out."""
    df, config, decoded = _image_features(df, features_col, config, skip_bad_images, cleanup)
    if validation_df is not None and decoded:
        validation_df, _, _ = _image_features(validation_df, features_col, config, skip_bad_images, cleanup)
    key_cols = list(key_cols) if key_cols else [features_col, label_col]
    missing_keys = [c for c in key_cols if c not in df.columns]
    if config.validation_split and missing_keys:
        raise ConfigError(f"key_cols {missing_keys} not found; the DataFrame has columns {df.columns}")
    if network is not None:
        num_classes = network.num_classes
    summary = validate_frame(df, features_col, label_col, network.num_features if network else None, num_classes)
    if config.partitions is not None and config.partitions > summary["rows"]:
        raise ConfigError(f"partitions={config.partitions} is more than the {summary['rows']} rows of the "
                          f"DataFrame: some partitions would hold no rows; use at most {summary['rows']}")
    num_features = int(summary["max_len"])
    num_classes = num_classes or max(2, int(summary["max_label"]) + 1)
    if network is not None and network.dtype.name != config.dtype:
        raise ConfigError(f"dtype={config.dtype!r} but the network computes in {network.dtype.name}")
    return Inputs(df, validation_df, config, summary, num_features, num_classes, key_cols)


def _image_features(df: DataFrame, features_col: str, config: TrainConfig, skip_bad_images: bool,
                    cleanup: ExitStack) -> tuple[DataFrame, TrainConfig, bool]:
    """``df`` with image structs or file bytes in ``features_col`` decoded into pixel arrays (the
    persisted decoding released by ``cleanup``), the config with their (H, W, C), and True; anything
    else unchanged (validate_frame then judges it), and False."""
    from .images import as_training_frame, is_image_column

    if not is_image_column(df, features_col):
        return df, config, False
    frame, shape, check = as_training_frame(df, features_col, image_shape=config.image_shape,
                                            skip_bad_images=skip_bad_images)
    cleanup.callback(check.unpersist)
    return frame, config.replace(image_shape=tuple(shape)), True


# --- phase 3: the initial state, new or resumed -----------------------------------------------

@dataclass
class TrainingState:
    """Everything that changes while a run trains; a checkpoint is a snapshot of it."""

    network: Sequential
    params: np.ndarray
    optimizer: Optimizer  # the driver's (gradient schedules step it)
    history: list[EpochRecord]
    stopper: EarlyStopping | None
    resumed: Checkpoint | None = None
    stopped: bool = False  # early stopping triggered

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def _initial_state(config: TrainConfig, network: Sequential, initial_params, hooks: Callbacks, *,
                   checkpoint_dir: str | None, checkpoint_keep: int | None, resume: bool, spark
                   ) -> tuple[TrainingState, CheckpointStore | None]:
    """Fresh weights (``initial_params``, or drawn from ``config.seed``), or the newest good
    checkpoint's state when resuming; and the run's checkpoint store (None without a directory)."""
    params = (network.init_params(config.seed, config.init_scheme) if initial_params is None
              else np.array(initial_params, dtype=network.dtype))
    if params.shape != (network.num_params,):
        raise ConfigError(f"initial_params has shape {params.shape}, the network needs ({network.num_params},)")
    if not np.all(np.isfinite(params)):
        raise ConfigError(f"initial_params holds {int(np.sum(~np.isfinite(params)))} NaN or infinite value(s)")
    stopper = EarlyStopping(config.early_stopping, config.min_delta) if config.early_stopping else None
    state = TrainingState(network, params, _driver_optimizer(config, network), [], stopper)
    if checkpoint_dir is None:
        return state, None
    store = CheckpointStore(spark, checkpoint_dir, keep=checkpoint_keep)
    if not resume:
        if store.epochs():
            raise ConfigError(f"checkpoint directory {store.uri} already holds checkpoints (epochs "
                              f"{store.epochs()}); pass resume=True (--resume) to continue that run, or choose "
                              f"an empty directory")
        return state, store
    resumed = store.latest()
    if resumed is None:
        hooks.message(f"No checkpoint in {store.uri}: starting from scratch")
        return state, store
    check_compatible(resumed, network.to_config(), config.to_dict(), {})
    state.params = resumed.params.astype(network.dtype)
    state.optimizer.load_state_dict(resumed.optimizer_state)
    state.history = [EpochRecord(**h) for h in resumed.history]
    if stopper is not None and resumed.stopper_state is not None:
        stopper.load_state_dict(resumed.stopper_state, network.dtype)
    state.resumed, state.stopped = resumed, stopper is not None and stopper.should_stop
    return state, store


def _driver_optimizer(config: TrainConfig, network: Sequential) -> Optimizer:
    decay = dict(weight_decay=config.weight_decay, decay_mask=network.decay_mask()) if config.weight_decay else {}
    return make_optimizer(config.optimizer, config.learning_rate, momentum=config.momentum,
                          beta1=config.beta1, beta2=config.beta2, **decay)


# --- phase 4: the cached data and the plan ----------------------------------------------------

@dataclass
class PreparedData:
    """The engine's cached training (and validation) rows."""

    train: TrainingData
    partitions: int
    total_rows: int  # of the input, before any validation split
    held_out: DataFrame | None  # the validation rows to cache, once the training side is judged
    validation: TrainingData | None = None


def _prepare_training(engine, inputs: Inputs, *, features_col: str, label_col: str,
                      cleanup: ExitStack) -> PreparedData:
    """Split off the validation rows, then cache the training side in the engine's form (released
    by ``cleanup``)."""
    config, train, validation = inputs.config, inputs.train, inputs.validation
    if config.validation_split:
        train, validation = hashed_split(train, config.validation_split, config.seed, inputs.key_cols)
    elif validation is not None:
        validate_frame(validation, features_col, label_col, inputs.num_features, inputs.num_classes)
    options = {}
    if config.schedule == "auto" and config.engine == "dataframe":  # averaging: no partition of one class
        options["shuffle_seed"] = config.seed
    if "partitions" in inputs.summary:  # Connect: counted by the validation job, so no job of its own
        options["input_partitions_hint"] = inputs.summary["partitions"]
    data = engine.prepare(train, features_col=features_col, label_col=label_col, num_partitions=config.partitions,
                          **options)
    cleanup.callback(data.release)
    return PreparedData(data, data.num_partitions(), inputs.summary["rows"], validation)


def _check_training(data: PreparedData, inputs: Inputs, state: TrainingState, hooks: Callbacks) -> None:
    """Refuse an empty training side, and a checkpoint of other data."""
    config = inputs.config
    if data.train.count == 0:
        raise ConfigError(f"validation_split={config.validation_split} leaves no training rows of {data.total_rows}")
    if state.resumed is not None:
        check_compatible(state.resumed, state.network.to_config(), config.to_dict(),
                         {"rows": data.train.count, "partitions": data.partitions})
        hooks.message(f"Resuming from {state.resumed.uri} (epoch {state.resumed.epoch} of {config.epochs} done)")


def _prepare_validation(data: PreparedData, engine, inputs: Inputs, *, features_col: str, label_col: str,
                        cleanup: ExitStack) -> None:
    """Cache the validation rows (released by ``cleanup``); refuse an empty side."""
    if data.held_out is None:
        return
    data.validation = engine.prepare(data.held_out, features_col=features_col, label_col=label_col)
    cleanup.callback(data.validation.release)
    if data.validation.count == 0:
        what = (f"validation_split={inputs.config.validation_split} holds out none of the {data.total_rows} rows; "
                f"use a larger fraction") if inputs.config.validation_split else "validation_df holds no rows"
        raise ConfigError(what)


def _schedule(config: TrainConfig, engine, data: PreparedData, state: TrainingState, spark, *,
              whole_epochs_only: bool) -> Schedule:
    """The schedule strategy for this run, planned from the rows, partitions and task slots."""
    sizes: dict = {}  # tasks -> rows of the largest: one small job, asked once

    def task_rows(tasks: int | None) -> int:
        if tasks not in sizes:
            sizes[tasks] = max(data.train.partition_sizes(tasks))
        return sizes[tasks]

    plan = plan_schedule(config, rows=data.train.count, partitions=data.partitions,
                         slots=task_slots(spark, data.partitions), task_rows=task_rows,
                         whole_epochs_only=whole_epochs_only)
    return make_schedule(plan, config, engine, data.train, state.optimizer, partitions=data.partitions,
                         task_rows=task_rows)


def _facts(run_id: str, data: PreparedData, schedule: Schedule, state: TrainingState) -> dict:
    """What ``on_train_begin`` hears besides the config."""
    return {"run_id": run_id, "rows": data.train.count, "partitions": data.partitions,
            "validation_rows": None if data.validation is None else data.validation.count,
            "plan": schedule.plan.as_dict(), "history": [r.as_dict() for r in state.history]}


# --- phase 5: the epochs -------------------------------------------------------------------------

def _train_epochs(state: TrainingState, schedule: Schedule, data: PreparedData, config: TrainConfig, hooks: Callbacks,
                  checkpoint: Callable[[TrainingState], None]) -> None:
    """Run the schedule's epochs until ``config.epochs`` or early stopping; validate, checkpoint
    and report each."""
    epoch = state.epochs_done + 1
    while epoch <= config.epochs and not state.stopped:
        start = time.perf_counter()
        results = schedule.train(state.params, epoch, hooks.step)
        seconds = time.perf_counter() - start
        for offset, result in enumerate(results):
            record = _record(epoch + offset, result, seconds, len(results))
            if data.validation is not None:
                _validate(record, state, schedule, data.validation)
            state.history.append(record)
            checkpoint(state)
            hooks.epoch_end(record, config.epochs)
        epoch += len(results)


def _record(epoch: int, result: EpochResult, seconds: float, epochs_in_job: int) -> EpochRecord:
    """The history line of an epoch; a job that trained several epochs shares its time out equally."""
    return EpochRecord(epoch, result.loss_sum / max(result.rows, 1), result.correct / max(result.rows, 1),
                       result.rows, result.steps, result.batch_size, seconds / epochs_in_job,
                       epochs_in_job=epochs_in_job if epochs_in_job > 1 else None)


def _validate(record: EpochRecord, state: TrainingState, schedule: Schedule, validation: TrainingData) -> None:
    """Score the validation rows (one job, dropout off) into ``record``; early stopping watches it."""
    scored = schedule.engine.gradient(state.params, validation.all_rows(), aggregate=schedule.aggregate)
    record.val_loss = scored.loss_sum / scored.count
    record.val_accuracy = scored.correct / scored.count
    if state.stopper is not None:
        state.stopper.update(record.epoch, record.val_loss, state.params)
        record.best_epoch = state.stopper.best_epoch
        state.stopped = state.stopper.should_stop


def _checkpointer(store: CheckpointStore | None, every: int, config: TrainConfig, data: PreparedData,
                  plan: SchedulePlan, *, run_id: str, class_names) -> Callable[[TrainingState], None]:
    """What saves the state after an epoch: every ``every`` epochs, the last and a stopping one
    (nothing without a store)."""
    def checkpoint(state: TrainingState) -> None:
        epoch = state.epochs_done
        if store is None or not (epoch % every == 0 or epoch == config.epochs or state.stopped):
            return
        store.save(Checkpoint(
            epoch, state.params.copy(), config.optimizer, state.optimizer.state_dict(),
            [r.as_dict() for r in state.history], state.network.to_config(), config.to_dict(),
            {"rows": data.train.count, "partitions": data.partitions},
            stopper_state=None if state.stopper is None else state.stopper.state_dict(),
            class_names=list(class_names) if class_names else None, run_id=run_id, schedule_plan=plan.as_dict()))

    return checkpoint


# --- phase 6: the model --------------------------------------------------------------------------

def _finish(state: TrainingState, config: TrainConfig, schedule: Schedule, hooks: Callbacks, *, class_names,
            run_id: str) -> TrainedModel:
    """The trained model: with early stopping, the best epoch's weights and what stopping did."""
    params, early, stopper = state.params, None, state.stopper
    if stopper is not None and stopper.best_params is not None:
        params = stopper.best_params.copy()
        last = state.history[-1].epoch
        early = {"best_epoch": stopper.best_epoch, "best_val_loss": stopper.best_loss,
                 "stopped_epoch": last if state.stopped else None,
                 "patience": config.early_stopping, "min_delta": config.min_delta}
        hooks.message((f"Early stopping: no lower validation loss for {config.early_stopping} epochs, stopped "
                       f"after epoch {last}" if state.stopped else
                       f"Early stopping did not trigger in {config.epochs} epochs") +
                      f"; restored the weights of epoch {stopper.best_epoch} (val loss {stopper.best_loss:.4f})")
    return TrainedModel(state.network, params, config=config, history=[r.as_dict() for r in state.history],
                        class_names=list(class_names) if class_names else None, run_id=run_id,
                        early_stopping_result=early, schedule_plan=schedule.plan.as_dict())


# --- parts the phases share ------------------------------------------------------------------------

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
                       patch_rows=config.patch_rows, partial_dtype=config.partial_dtype)


def new_run_id() -> str:
    """A name for a training run, unique in practice and sortable by start time: ``20261123-235501-3f9a1c``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


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
