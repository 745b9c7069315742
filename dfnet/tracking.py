"""MLflow tracking: one MLflow run per training, and dfnet models as MLflow pyfunc models.

:class:`MLflowLogger` is a ``fit`` callback (``dfnet train --mlflow``,
``DFNetClassifier(mlflow=True)``). Per training it logs

- every :class:`~dfnet.config.TrainConfig` field as a param, with what the
  schedule planned (``plan_*``) and the data's rows and partitions;
- ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` and ``seconds`` per
  epoch, with ``step=epoch`` (a resumed run logs the epochs it resumes from too);
- ``history.json`` as an artifact, early stopping's outcome, and the model as an
  MLflow model (``model/``, flavour ``python_function``) with a signature and an
  input example.

:meth:`MLflowLogger.log_evaluation` adds test metrics (``test_accuracy``,
``test_macro_f1`` ...) and :meth:`MLflowLogger.log_artifacts` files such as
``report.html`` and ``metrics.json``, to the same run after it ended.

Where the runs go is MLflow's choice, as everywhere else: ``MLFLOW_TRACKING_URI``
or :func:`mlflow.set_tracking_uri`; without either, MLflow's own default (a
local ``mlflow.db`` in the working directory, no server); on Databricks the
notebook's experiment. A run already active (``with mlflow.start_run():``)
receives the logs and is left open; otherwise the logger starts a run and ends
it when training ends (FAILED if training raised).

The pyfunc model (:class:`DFNetPyfunc`) takes a pandas DataFrame with the
features column (each row a list or array of ``num_features`` floats, the same
values ``fit`` took) and returns ``prediction`` (long) and ``probability``
(array<double>), equal to :meth:`dfnet.model.TrainedModel.predict`;
``mlflow.pyfunc.spark_udf(spark, uri)`` returns them as a struct column.
Its data is a dfnet model folder (:meth:`~dfnet.model.TrainedModel.save`, the one model codec),
so :func:`load_trained_model` gives back the :class:`~dfnet.model.TrainedModel` with every field
it was logged with (history, class names, run id, early stopping, schedule plan).
MLflow is an optional extra: ``pip install 'dfnet[mlflow]'``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import TrainConfig
    from .evaluate import Evaluation
    from .model import TrainedModel
    from .train import EpochRecord

#: what each epoch logs, by the EpochRecord field it comes from
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")
#: MLflow's limit on a param value's length
_MAX_PARAM = 6000


def require_mlflow():
    """``mlflow``, or a clear error saying how to install it."""
    try:
        import mlflow
    except ImportError as e:
        raise ConfigError("MLflow tracking needs the mlflow package: pip install 'dfnet[mlflow]'") from e
    return mlflow


def config_params(config: "TrainConfig") -> dict[str, str]:
    """Every TrainConfig field as an MLflow param (tuples as ``16,32``, None as ``None``)."""
    return {name: _param_text(value) for name, value in config.to_dict().items()}


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    return text[:_MAX_PARAM]


class MLflowLogger:
    """A ``fit`` callback that logs the training to one MLflow run (see the module docstring).

    Parameters
    ----------
    experiment : experiment name (created when missing); by default the active
        one (MLflow's ``Default``, or the notebook's on Databricks).
    run_name : the run's name; by default dfnet's run id.
    log_model : log the trained model as an MLflow pyfunc model.
    registered_model_name : also register the model under this name.
    tags : extra tags for the run.
    nested : always start a run of its own, nested under the active run if
        there is one (what ``DFNetClassifier(mlflow=True)`` does, so every fit
        of a ``CrossValidator`` gets its own child run); by default an active
        run receives the logs, unless it already holds another training's
        (then the new one gets a nested run).

    After ``fit``, :attr:`run_id` names the run and :attr:`model_uri` the model
    (``models:/...``), e.g. ``mlflow.pyfunc.load_model(logger.model_uri)``.
    """

    def __init__(self, *, experiment: str | None = None, run_name: str | None = None, log_model: bool = True,
                 registered_model_name: str | None = None, tags: dict[str, str] | None = None,
                 nested: bool = False):
        self.mlflow = require_mlflow()
        self.experiment = experiment
        self.run_name = run_name
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.tags = dict(tags or {})
        self.nested = nested
        self.run_id: str | None = None
        self.model_uri: str | None = None
        self.tracking_uri: str | None = None
        self._owns_run = False
        self._client = None

    # --- fit's hooks -----------------------------------------------------------------
    def on_train_begin(self, config: "TrainConfig", facts: dict) -> None:
        mlflow = self.mlflow
        active = mlflow.active_run()
        # A run already holding a training's params cannot take another's (MLflow refuses to change a
        # param): a second fit inside one `with mlflow.start_run():` gets a nested run of its own.
        taken = active is not None and "dfnet.run_id" in mlflow.tracking.MlflowClient().get_run(
            active.info.run_id).data.tags
        if active is not None and not self.nested and not taken:
            self.run_id, self._owns_run = active.info.run_id, False
        else:
            experiment_id = None
            if self.experiment:
                experiment_id = mlflow.set_experiment(self.experiment).experiment_id
            run = mlflow.start_run(experiment_id=experiment_id, run_name=self.run_name or facts.get("run_id"),
                                   nested=active is not None)
            self.run_id, self._owns_run = run.info.run_id, True
        self._client = mlflow.tracking.MlflowClient()
        self.tracking_uri = mlflow.get_tracking_uri()
        from . import __version__
        tags = {"dfnet.version": __version__, "dfnet.run_id": str(facts.get("run_id")), **self.tags}
        plan = {f"plan_{k}": v for k, v in (facts.get("plan") or {}).items()}
        params = {**config_params(config), **{k: _param_text(v) for k, v in plan.items()},
                  "data_rows": str(facts.get("rows")), "data_partitions": str(facts.get("partitions")),
                  "data_validation_rows": str(facts.get("validation_rows"))}
        self._log_batch(params=params, tags=tags)
        for record in facts.get("history") or ():  # a resumed run: the epochs done before
            self._log_epoch(record)

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        pass

    def on_epoch_end(self, record: "EpochRecord", total_epochs: int) -> None:
        self._log_epoch(record.as_dict())

    def on_train_end(self, model: "TrainedModel") -> None:
        try:
            self._client.log_text(self.run_id, json.dumps(model.history, indent=2), "history.json")
            if model.early_stopping_result:
                early = {k: v for k, v in model.early_stopping_result.items() if v is not None}
                self._log_batch(metrics={f"early_stopping_{k}": float(v) for k, v in early.items()
                                         if k in ("best_epoch", "best_val_loss", "stopped_epoch")})
            if self.log_model:
                self.model_uri = log_pyfunc_model(model, run_id=self.run_id,
                                                  registered_model_name=self.registered_model_name)
                self._client.set_tag(self.run_id, "dfnet.model_uri", self.model_uri)
        except BaseException:
            self._end("FAILED")
            raise
        self._end("FINISHED")

    def on_train_failed(self, error: BaseException) -> None:
        if self.run_id is not None:
            self._end("FAILED")

    # --- after training ----------------------------------------------------------------
    def log_evaluation(self, evaluation: "Evaluation", prefix: str = "test_") -> dict[str, float]:
        """Log an evaluation's overall and per-class metrics (``test_accuracy``, ``test_f1_<class>`` ...)."""
        summary = evaluation.as_dict()
        metrics = {f"{prefix}accuracy": float(evaluation.accuracy), f"{prefix}macro_f1": summary["macro_f1"],
                   f"{prefix}rows": float(evaluation.count)}
        names = list(evaluation.class_names) if evaluation.class_names else None
        for row in summary["per_class"]:
            name = _metric_key(names[row["class"]] if names else str(row["class"]))
            for key in ("precision", "recall", "f1"):
                metrics[f"{prefix}{key}_{name}"] = float(row[key])
        self._log_batch(metrics=metrics)
        return metrics

    def log_artifacts(self, *paths: str | Path) -> None:
        """Attach files (``report.html``, ``metrics.json`` ...) to the run."""
        for path in paths:
            self._client.log_artifact(self.run_id, str(path))

    # --- helpers -----------------------------------------------------------------------
    def _log_epoch(self, record: dict) -> None:
        step = int(record["epoch"])
        self._log_batch(metrics={k: float(record[k]) for k in EPOCH_METRICS if record.get(k) is not None},
                        step=step)

    def _log_batch(self, *, metrics: dict | None = None, params: dict | None = None, tags: dict | None = None,
                   step: int = 0) -> None:
        from mlflow.entities import Metric, Param, RunTag
        import time

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id,
                               metrics=[Metric(k, v, now, step) for k, v in (metrics or {}).items()],
                               params=[Param(k, v) for k, v in (params or {}).items()],
                               tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])

    def _end(self, status: str) -> None:
        if not self._owns_run:
            return
        active = self.mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            self.mlflow.end_run(status)
        else:
            self._client.set_terminated(self.run_id, status)
        self._owns_run = False


def _metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_-./`` and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


# --- the pyfunc model ----------------------------------------------------------------

#: the file beside model.json and weights.npy in the MLflow model's data folder
PYFUNC_CONFIG = "pyfunc.json"


class DFNetPyfunc:
    """A dfnet model as MLflow's ``python_function`` flavour loads it (``loader_module`` dfnet.tracking,
    no pickle): ``predict(pandas_df)`` scores ``pandas_df[features_col]``, see :func:`score_pandas`."""

    def __init__(self, model: "TrainedModel", features_col: str = "image"):
        from .evaluate import ClassScorer

        self.model = model
        self.features_col = features_col
        self.scorer = ClassScorer(model.network)

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return score_pandas(self.model, model_input, self.features_col, self.scorer)


def _load_pyfunc(data_path: str) -> DFNetPyfunc:
    """MLflow's entry point for ``loader_module="dfnet.tracking"``: the saved model folder."""
    from .model import TrainedModel

    folder = Path(data_path)
    config = json.loads((folder / PYFUNC_CONFIG).read_text())
    return DFNetPyfunc(TrainedModel.load(folder), config.get("features_col", "image"))


def load_trained_model(model_uri: str) -> "TrainedModel":
    """The :class:`~dfnet.model.TrainedModel` of an MLflow model that :func:`log_pyfunc_model` logged
    (``runs:/<id>/model``, ``models:/<name>/<version>`` ...), read through the model codec, where
    ``mlflow.pyfunc.load_model`` gives only its ``predict``."""
    mlflow = require_mlflow()
    from mlflow.models import Model

    from .errors import ModelFormatError
    from .model import TrainedModel

    with tempfile.TemporaryDirectory(prefix="dfnet-mlflow-") as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        flavor = Model.load(str(local)).flavors.get("python_function", {})
        if flavor.get("loader_module") != __name__ or "data" not in flavor:
            raise ModelFormatError(f"{model_uri}: not a dfnet MLflow model (its pyfunc loader is "
                                   f"{flavor.get('loader_module')!r}, not {__name__!r})")
        return TrainedModel.load(local / flavor["data"])


def score_pandas(model: "TrainedModel", frame: pd.DataFrame, features_col: str = "image",
                 scorer=None) -> pd.DataFrame:
    """``prediction`` and ``probability`` of ``frame[features_col]`` (rows of ``num_features`` values)."""
    from .errors import DataValidationError
    from .evaluate import ClassScorer

    if features_col not in frame.columns:
        raise DataValidationError(f"column {features_col!r} not found; the input has columns {list(frame.columns)}")
    values = frame[features_col].to_numpy()
    want = model.network.num_features
    if len(values) == 0:
        return pd.DataFrame({"prediction": pd.Series([], dtype="int64"), "probability": pd.Series([], dtype=object)})
    X = np.stack([np.asarray(v, dtype=model.network.dtype).reshape(-1) for v in values])
    if X.shape[1] != want:
        raise DataValidationError(f"column {features_col!r} holds {X.shape[1]} values a row; the model takes {want}")
    _, probability, prediction = (scorer or ClassScorer(model.network))(model.params, X)
    return pd.DataFrame({"prediction": prediction.astype(np.int64), "probability": list(probability)})


def model_signature(features_col: str = "image"):
    """Input: the features column, an array of floats; output: prediction (long) and probability (array<double>)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    # double, whatever the network computes in: pandas hands lists of Python floats (float64), which
    # MLflow would refuse to narrow to float; the model casts to its own dtype anyway.
    inputs = Schema([ColSpec(Array(DataType.double), features_col)])
    outputs = Schema([ColSpec(DataType.long, "prediction"), ColSpec(Array(DataType.double), "probability")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_pyfunc_model(model: "TrainedModel", *, run_id: str, features_col: str = "image",
                     input_example: np.ndarray | None = None, registered_model_name: str | None = None) -> str:
    """Log ``model`` to ``run_id`` as an MLflow pyfunc model named ``model``; returns its URI."""
    mlflow = require_mlflow()
    from mlflow.models import Model

    from . import __version__

    if input_example is None:  # one all-zero image: a valid input of the right width
        input_example = np.zeros(model.network.num_features, dtype=model.network.dtype)
    example = pd.DataFrame({features_col: [np.asarray(input_example, dtype=np.float64).tolist()]})
    with tempfile.TemporaryDirectory(prefix="dfnet-mlflow-") as folder:
        saved = model.save(Path(folder) / "dfnet_model")
        (saved / PYFUNC_CONFIG).write_text(json.dumps({"features_col": features_col}))
        info = Model.log(None, mlflow.pyfunc, name="model", run_id=run_id, loader_module=__name__,
                         data_path=str(saved), signature=model_signature(features_col),
                         input_example=example,
                         pip_requirements=[f"dfnet=={__version__}", f"numpy=={np.__version__}",
                                           f"pandas=={pd.__version__}"],
                         registered_model_name=registered_model_name)
    return info.model_uri

