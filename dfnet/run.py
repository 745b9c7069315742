"""The run folder that ``dfnet train`` writes, callable from Python.

:func:`train_run` trains on a DataFrame, evaluates on another and writes the
run folder, the same as ``dfnet train`` (which calls it):

- ``model/`` (:meth:`dfnet.model.TrainedModel.save`), ``history.json`` (one
  record per epoch), ``metrics.json`` (the test evaluation, what the rows were,
  the config, the schedule plan, timings, early stopping, the MLflow run) and
  ``report.html`` (:meth:`dfnet.model.TrainedModel.report`);
- optionally the MLflow run (:class:`dfnet.tracking.MLflowLogger`: params,
  epochs and the model while training; then the test metrics and the folder's
  files as artifacts);
- optionally the tables of :mod:`dfnet.tables` (:class:`RunTables`).

Everything that can be refused is refused before training: an existing folder
(without ``overwrite``), checkpoint options, table names, modes and columns, an
unwritable table. The one exception is a catalog another process holds (Spark's
embedded Derby metastore, see :mod:`dfnet.metastore`): then the tables are
checked and written after training, once it is free, rather than keeping every
other run in the folder waiting meanwhile. The folder is assembled under a
temporary name beside it and renamed into place at the end, so a failed run
leaves nothing half-written and an existing folder is replaced only then.

:class:`TrainRun` is the same run as steps, for a caller that reads its data
between the checks and the training (the CLI checks the folder before it starts
Spark, and the tables before it reads the data).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .config import TrainConfig
from .errors import ConfigError, DataValidationError, DFNetError, OutputExistsError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from .evaluate import Evaluation
    from .model import TrainedModel
    from .tracking import MLflowLogger

#: How a refusal names the run's options: as Python keywords. The CLI passes its flags instead
#: (``--output``, ``--overwrite`` ...), so each message names what its reader typed.
PYTHON_OPTIONS = {"output": "output", "overwrite": "overwrite=True", "checkpoint_dir": "checkpoint_dir",
                  "checkpoint_every": "checkpoint_every", "resume": "resume=True"}
RUN_FILES = ("history.json", "metrics.json", "report.html")


@dataclass(frozen=True)
class RunTables:
    """The Spark SQL tables a run writes (see :mod:`dfnet.tables`); None leaves one out.

    ``predictions`` receives the test predictions, replacing or adding to an existing
    table only with ``mode`` ``"overwrite"`` or ``"append"``; ``history`` (one row per
    epoch) and ``metrics`` (one row per class) are always appended to, their rows
    carrying the run id. Names are checked here, the catalog before training.
    """

    predictions: str | None = None
    history: str | None = None
    metrics: str | None = None
    mode: str = "error"

    def __post_init__(self):
        from .tables import WRITE_MODES, check_table_name

        if self.mode not in WRITE_MODES:
            raise DataValidationError(f"mode={self.mode!r}: expected one of {', '.join(WRITE_MODES)}")
        for name in self.names().values():
            check_table_name(name)

    def names(self) -> dict[str, str]:
        """``{kind: table}`` of the tables to write, in the order they are written and shown."""
        wanted = {"predictions": self.predictions, "history": self.history, "metrics": self.metrics}
        return {kind: name for kind, name in wanted.items() if name}

    def writes(self) -> list[tuple[str, str, Any]]:
        """``(table, mode, columns)`` of each table to write, as :func:`dfnet.tables.check_can_write` takes them."""
        from .tables import CLASS_METRICS_SCHEMA, HISTORY_SCHEMA, PREDICTIONS_SCHEMA

        modes = {"predictions": (self.mode, PREDICTIONS_SCHEMA), "history": ("append", HISTORY_SCHEMA),
                 "metrics": ("append", CLASS_METRICS_SCHEMA)}
        return [(name, *modes[kind]) for kind, name in self.names().items()]


@dataclass(frozen=True)
class RunResult:
    """What :func:`train_run` made: the model, its test evaluation, ``metrics.json`` as a dict,
    the run folder, the tables written (``{kind: table}``) and the MLflow run (``run_id``,
    ``model_uri``, ``tracking_uri``; None without MLflow)."""

    model: "TrainedModel"
    evaluation: "Evaluation"
    metrics: dict
    folder: Path
    tables: dict[str, str]
    mlflow: dict | None = None

    @property
    def run_id(self) -> str:
        """The run id of the model and of the tables' rows."""
        return self.model.run_id


def default_output(name: str) -> Path:
    """``runs/<name>-<local time>``: where ``dfnet train`` puts a run without ``--output``."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_output(output: str | Path, overwrite: bool, names: Mapping[str, str] = PYTHON_OPTIONS) -> Path:
    """``output`` as a path; refused when it exists (a file, or a folder that is not empty) unless ``overwrite``."""
    target = Path(output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise OutputExistsError(f"output folder {target} already exists and is not empty; "
                                f"choose another {names['output']} or pass {names['overwrite']}")
    return target


def is_local_path(path: str) -> bool:
    """Whether ``path`` names a local file rather than a URI (``hdfs://``, ``dbfs:/``, ``s3a://`` ...)."""
    return "://" not in path and ":" not in path[:6]


def check_checkpoint_options(checkpoint_dir: str | None, checkpoint_every: int, resume: bool, target: Path,
                             names: Mapping[str, str] = PYTHON_OPTIONS) -> None:
    """Refuse checkpoint options the run cannot honour, before any work."""
    if resume and checkpoint_dir is None:
        raise ConfigError(f"{names['resume']} needs {names['checkpoint_dir']}, the folder to resume from")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ConfigError(f"{names['checkpoint_every']}={checkpoint_every!r}: must be an integer >= 1")
    if checkpoint_dir is not None and is_local_path(str(checkpoint_dir)):
        # The run folder appears whole at the end of a run, so checkpoints written inside it
        # during the run would make it exist (and be refused, or replaced) before it is done.
        checkpoints, output = Path(checkpoint_dir).resolve(), target.resolve()
        if checkpoints == output or output in checkpoints.parents:
            raise ConfigError(f"{names['checkpoint_dir']} {checkpoint_dir} lies inside {names['output']} {target}, "
                              f"which is written whole at the end of the run; choose a folder beside it")


class TrainRun:
    """One run folder, checked before training, then trained, evaluated and written whole.

    The constructor refuses what needs no Spark (the folder, the checkpoint options,
    the table names; MLflow not installed); :meth:`check_tables` the tables (before
    training); :meth:`train` does the rest. The options are :func:`train_run`'s;
    ``option_names`` says how refusals name them (default :data:`PYTHON_OPTIONS`).
    """

    def __init__(self, output: str | Path, *, overwrite: bool = False, report: bool = True,
                 tables: RunTables | None = None, mlflow: "bool | MLflowLogger" = False,
                 checkpoint_dir: str | None = None, checkpoint_every: int = 1, resume: bool = False,
                 verbose: bool = True, progress_bar: bool | None = None,
                 option_names: Mapping[str, str] = PYTHON_OPTIONS):
        self.folder = check_output(output, overwrite, option_names)
        check_checkpoint_options(checkpoint_dir, checkpoint_every, resume, self.folder, option_names)
        self.report = report
        self.tables = tables or RunTables()
        self.tracker = _tracker(mlflow, self.folder)
        self.checkpoint_dir, self.checkpoint_every, self.resume = checkpoint_dir, checkpoint_every, resume
        self.verbose, self.progress_bar = verbose, progress_bar
        #: None until the tables are checked; True when their checks wait for a busy catalog
        self.tables_deferred: bool | None = None

    # --- before training ---------------------------------------------------------------
    def check_tables(self, spark: "SparkSession") -> None:
        """Check every table (name, mode, columns, creatable) in ``spark``'s catalog, unless another
        process has its embedded metastore open: then the checks wait for the end of the run, and
        this run trains meanwhile instead of holding the catalog (and every later run in the
        folder) for its whole length."""
        from .metastore import catalog_holder, describe_process, embedded_metastore

        writes = self.tables.writes()
        metastore = embedded_metastore(spark) if writes else None
        holder = catalog_holder(metastore) if metastore is not None else None
        if holder is not None:
            self._say(f"dfnet: the Spark catalog in {metastore.folder} is open in {describe_process(holder)}; "
                      f"this run checks and writes its tables once it is free, after training", sys.stderr)
            self.tables_deferred = True
            return
        _check_writes(spark, writes)
        self.tables_deferred = False

    # --- the run -----------------------------------------------------------------------
    def train(self, spark: "SparkSession", train_df: "DataFrame", test_df: "DataFrame",
              config: TrainConfig | None = None, *, class_names: Sequence[str] | None = None,
              dataset: str | None = None, classes: Sequence[int] | None = None, metrics: dict | None = None,
              features_col: str = "image", label_col: str = "label", key_cols: Sequence[str] | None = None,
              run_id: str | None = None, callbacks: Sequence = (), title: str | None = None) -> RunResult:
        """Train on ``train_df``, evaluate on ``test_df``, write the folder, MLflow and the tables."""
        from .progress import ProgressPrinter
        from .train import fit

        if self.tables_deferred is None:
            self.check_tables(spark)
        config = config or TrainConfig()
        progress = [ProgressPrinter(bar=self.progress_bar)] if self.verbose else []
        start = time.perf_counter()
        model = fit(train_df, config, features_col=features_col, label_col=label_col,
                    num_classes=len(class_names) if class_names else None,
                    callbacks=[*progress, *callbacks, *([self.tracker] if self.tracker else [])], verbose=False,
                    key_cols=key_cols, checkpoint_dir=self.checkpoint_dir, checkpoint_every=self.checkpoint_every,
                    resume=self.resume, run_id=run_id, class_names=class_names)
        train_seconds = time.perf_counter() - start
        evaluation = model.evaluate(test_df, features_col=features_col, label_col=label_col)
        self._say(evaluation.report())
        summary = self._metrics(model, evaluation, config, train_seconds, dataset=dataset, classes=classes,
                                class_names=class_names, extra=metrics or {})
        default_title = f"dfnet {config.model}: {dataset} ({self.folder.name})" if dataset else \
            f"dfnet {config.model} ({self.folder.name})"
        self._write_folder(model, summary, evaluation, test_df, features_col, label_col, title or default_title)
        self._log_to_mlflow(evaluation)
        tables = self._write_tables(spark, model, evaluation, test_df, features_col, label_col)
        return RunResult(model, evaluation, summary, self.folder, tables, summary.get("mlflow"))

    def _metrics(self, model: "TrainedModel", evaluation: "Evaluation", config: TrainConfig, train_seconds: float,
                 *, dataset: str | None, classes: Sequence[int] | None, class_names: Sequence[str] | None,
                 extra: dict) -> dict:
        """What ``metrics.json`` holds (its keys are read by users and by ``dfnet predict``: keep them)."""
        early = model.early_stopping_result
        tracker = self.tracker
        return {**evaluation.as_dict(), "dataset": dataset, **extra, "classes": list(classes) if classes else None,
                "class_names": list(class_names) if class_names else None, "train_seconds": train_seconds,
                "final_train_accuracy": model.history[-1]["accuracy"], "config": config.to_dict(),
                "schedule_plan": model.schedule_plan,
                **({"early_stopping": early, "best_epoch": early["best_epoch"],
                    "stopped_epoch": early["stopped_epoch"]} if early else {}),
                **({"mlflow": {"run_id": tracker.run_id, "model_uri": tracker.model_uri,
                               "tracking_uri": tracker.tracking_uri}} if tracker else {})}

    def _write_folder(self, model: "TrainedModel", metrics: dict, evaluation: "Evaluation", test_df: "DataFrame",
                      features_col: str, label_col: str, title: str) -> None:
        """Assemble the folder under a temporary name beside it, then move it into place."""
        target = self.folder
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; a run folder is meant to be shared
        try:
            model.save(staging / "model")
            (staging / "history.json").write_text(json.dumps(model.history, indent=2))
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
            if self.report:
                model.report(test_df, staging / "report.html", evaluation=evaluation, features_col=features_col,
                             label_col=label_col, title=title)
            _publish(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        saved = "model, history.json, metrics.json and report.html" if self.report else \
            "model, history.json and metrics.json"
        self._say(f"Saved {saved} to {target}")

    def _log_to_mlflow(self, evaluation: "Evaluation") -> None:
        logger = self.tracker
        if logger is None:
            return
        logger.log_evaluation(evaluation)
        logger.log_artifacts(*(self.folder / name for name in RUN_FILES if (self.folder / name).is_file()))
        self._say(f"MLflow: run {logger.run_id} ({logger.tracking_uri}), model {logger.model_uri}")

    def _write_tables(self, spark: "SparkSession", model: "TrainedModel", evaluation: "Evaluation",
                      test_df: "DataFrame", features_col: str, label_col: str) -> dict[str, str]:
        from .tables import write_class_metrics, write_history, write_predictions

        tables = self.tables.names()
        if self.tables_deferred:
            try:
                _check_writes(spark, self.tables.writes())
            except DFNetError as e:
                raise DFNetError(f"{e}. The run is saved in {self.folder}: write its predictions later with "
                                 f"dfnet predict --model {self.folder} --table NAME") from e
        if "history" in tables:
            write_history(model, tables["history"], spark=spark)
        if "metrics" in tables:
            write_class_metrics(evaluation, tables["metrics"], run_id=model.run_id, spark=spark)
        if "predictions" in tables:
            write_predictions(model, test_df, tables["predictions"], mode=self.tables.mode,
                              features_col=features_col, label_col=label_col)
        if tables:
            self._say("Tables (run_id " + model.run_id + "): " +
                      ", ".join(f"{kind} {name}" for kind, name in tables.items()))
        return tables

    def _say(self, line: str, stream=None) -> None:
        if self.verbose:
            print(line, file=stream or sys.stdout, flush=True)


def train_run(spark: "SparkSession", train_df: "DataFrame", test_df: "DataFrame", config: TrainConfig | None,
              output: str | Path, *, class_names: Sequence[str] | None = None, dataset: str | None = None,
              classes: Sequence[int] | None = None, tables: RunTables | None = None,
              mlflow: "bool | MLflowLogger" = False, report: bool = True, overwrite: bool = False,
              checkpoint_dir: str | None = None, checkpoint_every: int = 1, resume: bool = False,
              features_col: str = "image", label_col: str = "label", key_cols: Sequence[str] | None = None,
              run_id: str | None = None, callbacks: Sequence = (), metrics: dict | None = None,
              title: str | None = None, verbose: bool = True, progress_bar: bool | None = None) -> RunResult:
    """Train, evaluate and write a run folder, as ``dfnet train`` does (see the module docstring).

    Parameters
    ----------
    spark : the session the tables are written in.
    train_df, test_df : labelled rows, as :func:`dfnet.fit` takes them (``features_col``,
        ``label_col``; an ``id`` column for a predictions table); the test rows are scored once,
        after training, into ``metrics.json``, ``report.html`` and the tables.
    config : hyperparameters (dfnet's defaults when None).
    output : the run folder; refused when it exists and is not empty, unless ``overwrite``.
    class_names : the name of each class (default: the classes are numbered; ``num_classes``
        is then the largest label + 1).
    dataset, classes : what the rows are, recorded in ``metrics.json`` (``dfnet predict
        --model RUN`` scores the test split of that data set, with those classes).
    tables : :class:`RunTables` to write (default: none).
    mlflow : log the run to MLflow: True, or an :class:`~dfnet.tracking.MLflowLogger` of your
        own (an experiment, tags ...); the run is named after the folder.
    report : write ``report.html``.
    checkpoint_dir, checkpoint_every, resume : as :func:`dfnet.fit` (``checkpoint_dir`` must
        lie outside ``output``, which appears only whole, at the end).
    features_col, label_col, key_cols, run_id, callbacks : passed to :func:`dfnet.fit`
        (``dfnet train`` holds its validation rows out by ``key_cols=["id"]``).
    metrics : more entries for ``metrics.json`` (after ``dataset``).
    title : the report's title (default ``dfnet <model>: <dataset> (<folder name>)``).
    verbose : print the epochs, the test evaluation and where each part was written, as
        ``dfnet train`` does; ``progress_bar`` as :class:`dfnet.progress.ProgressPrinter` (None:
        on a terminal).

    Returns
    -------
    :class:`RunResult`: ``model``, ``evaluation``, ``metrics`` (``metrics.json``), ``folder``,
    ``tables``, ``mlflow`` (``run_id``, ``model_uri``, ``tracking_uri``).
    """
    run = TrainRun(output, overwrite=overwrite, report=report, tables=tables, mlflow=mlflow,
                   checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                   verbose=verbose, progress_bar=progress_bar)
    return run.train(spark, train_df, test_df, config, class_names=class_names, dataset=dataset, classes=classes,
                     metrics=metrics, features_col=features_col, label_col=label_col, key_cols=key_cols,
                     run_id=run_id, callbacks=callbacks, title=title)


def _tracker(mlflow: "bool | MLflowLogger", folder: Path) -> "MLflowLogger | None":
    """The MLflow logger of a run named after its folder; fails before training without MLflow."""
    if mlflow is False or mlflow is None:
        return None
    if mlflow is True:
        from .tracking import MLflowLogger

        return MLflowLogger(run_name=folder.name)
    return mlflow


def _check_writes(spark: "SparkSession", writes: list[tuple[str, str, Any]]) -> None:
    from .tables import check_can_write, table_identity

    names = [name for name, _, _ in writes]
    if len({table_identity(spark, name) for name in names}) < len(names):
        raise DataValidationError(f"the predictions, history and metrics tables must be different tables, "
                                  f"got {names}")
    for name, mode, schema in writes:
        check_can_write(spark, name, mode, schema)


def _publish(staging: Path, target: Path) -> None:
    """Move the finished run folder into place, replacing ``target`` only now."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
