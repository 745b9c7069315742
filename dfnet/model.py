"""A trained network and its one codec: every store of a model (the run folder, the Spark ML data
row, a checkpoint, the MLflow model) holds the same self-describing record.

The record is a JSON object; the flat weights travel beside it in the store's own array form
(``weights.npy``, an ``array<double>`` column, an npz member), as JSON would not keep them compact::

    {"format": "dfnet.model", "format_version": 2,
     "network": Sequential.to_config(), "config": TrainConfig.to_dict() or null,
     "history": [{"epoch": 1, "loss": ...}, ...], "class_names": [...] or null, "run_id": ... or null,
     "early_stopping_result": {"best_epoch": ..., ...} or null, "schedule_plan": {"schedule": ..., ...} or null}

:meth:`TrainedModel.from_record` also reads version 1, the layout every store wrote before the one
codec (the same fields, without the ``format`` tag and with ``early_stopping`` for
``early_stopping_result``; the Spark ML row and the checkpoint kept them
in columns and meta keys of their own, which :mod:`dfnet.ml.io` and :mod:`dfnet.checkpoint` turn
into a version 1 record).

Saved as a folder: ``model.json`` (the record) and ``weights.npy`` (the flat parameter vector),
each written to a temporary name and renamed into place, so a failure never leaves a half-written
model.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from pyspark.sql import DataFrame

from .config import TrainConfig
from .errors import ModelFormatError
from .evaluate import Evaluation, evaluate, predict
from .files import stage_file
from .nn.network import Sequential

#: the ``format`` tag of a model record
FORMAT = "dfnet.model"
FORMAT_VERSION = 2
#: versions :func:`read_record` accepts; 1 is the layout of every store before the one codec
READABLE_VERSIONS = (1, 2)
#: the record's fields besides format and version, with the JSON types each may hold
RECORD_FIELDS = {"network": (dict,), "config": (dict, type(None)), "history": (list,),
                 "class_names": (list, type(None)), "run_id": (str, type(None)),
                 "early_stopping_result": (dict, type(None)), "schedule_plan": (dict, type(None))}
#: fields version 1 named differently: version 1 name -> the current one
VERSION_1_NAMES = {"early_stopping": "early_stopping_result"}


def model_record(network: dict, config: dict | None = None, history: Sequence[dict] = (),
                 class_names: Sequence[str] | None = None, run_id: str | None = None,
                 early_stopping_result: dict | None = None, schedule_plan: dict | None = None) -> dict:
    """The current record of a model given as JSON values, so a store that has no
    :class:`TrainedModel` (a checkpoint mid-run) writes the same record as one that has."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "network": network, "config": config,
            "history": list(history), "class_names": list(class_names) if class_names else None,
            "run_id": run_id, "early_stopping_result": early_stopping_result, "schedule_plan": schedule_plan}


def check_format(document: dict, tag: str, *, versions: tuple[int, ...] = READABLE_VERSIONS, source: str,
                 what: str, error: type[Exception] = ModelFormatError) -> int:
    """The format version of a dfnet JSON ``document`` (a model record, a checkpoint's meta), one
    of ``versions``, whose ``format`` is ``tag`` from version 2 on; ``error`` naming ``source``
    and ``what`` it is otherwise."""
    version = document.get("format_version")
    if version not in versions or isinstance(version, bool):
        raise error(f"{source}: {what} format version {version!r}, this dfnet reads versions "
                    f"{', '.join(map(str, versions))}")
    if version >= 2 and document.get("format") != tag:
        raise error(f"{source}: format {document.get('format')!r}, expected {tag!r}")
    return version


def read_record(record: dict | str | bytes, source: str) -> dict:
    """The fields of a record of any readable version (``RECORD_FIELDS``, as JSON values, missing
    ones as None or ``[]``), its format, version and field types checked but nothing built, so a
    checkpoint can carry a record whose network it does not build; :class:`ModelFormatError`
    naming ``source`` otherwise."""
    try:
        if isinstance(record, (bytes, bytearray)):
            record = bytes(record).decode("utf-8")
        if isinstance(record, str):
            record = json.loads(record)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ModelFormatError(f"{source}: corrupt model record ({type(e).__name__}: {e})") from e
    if not isinstance(record, dict):
        raise ModelFormatError(f"{source}: a model record is a JSON object, this is a {type(record).__name__}")
    version = check_format(record, FORMAT, source=source, what="model")
    if "network" not in record:
        raise ModelFormatError(f"{source}: corrupt model record (no 'network')")
    if version == 1:
        record = {VERSION_1_NAMES.get(name, name): value for name, value in record.items()}
    fields = {name: record.get(name, [] if name == "history" else None) for name in RECORD_FIELDS}
    for name, kinds in RECORD_FIELDS.items():
        if not isinstance(fields[name], kinds):
            raise ModelFormatError(f"{source}: corrupt model record ({name!r} is a {type(fields[name]).__name__}, "
                                   f"not a {' or '.join(k.__name__ for k in kinds)})")
    return fields


@dataclass
class TrainedModel:
    network: Sequential
    params: np.ndarray
    config: TrainConfig | None = None
    history: list[dict] = field(default_factory=list)
    class_names: Sequence[str] | None = None
    #: names this training run in the history, metrics and prediction tables (set by ``fit``)
    run_id: str | None = None
    #: what early stopping did: best_epoch (whose weights these are), best_val_loss,
    #: stopped_epoch (None when it did not trigger), patience, min_delta; None without it
    #: (``TrainConfig.early_stopping`` is the patience that was asked for)
    early_stopping_result: dict | None = None
    #: what the schedule ran: schedule, models, local_steps, jobs_per_epoch, reason
    schedule_plan: dict | None = None

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    def predict(self, df: DataFrame, *, features_col: str = "image", prediction_col: str = "prediction",
                probability_col: str = "probability") -> DataFrame:
        """``df`` plus ``prediction`` and ``probability`` columns (lazy; validates ``df`` first).

        ``features_col`` may also hold the struct of ``spark.read.format("image")`` or file bytes
        (``binaryFile``): they are decoded and resized to the model's image shape; one job checks
        them first (a bad file is named) and nothing is cached, so the scoring decodes them again."""
        df = self._image_features(df, features_col)
        return predict(df, self.network, self.params, features_col=features_col,
                       prediction_col=prediction_col, probability_col=probability_col)

    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images this model takes (a square single-channel image unless configured)."""
        if len(self.network.input_shape) == 3:
            return tuple(self.network.input_shape)
        return (self.config or TrainConfig()).resolve_image_shape(self.network.num_features)

    def _image_features(self, df: DataFrame, features_col: str) -> DataFrame:
        from .images import as_training_frame, is_image_column

        if not is_image_column(df, features_col):
            return df
        return as_training_frame(df, features_col, image_shape=self.image_shape(), persist=False)[0]

    def evaluate(self, df: DataFrame, *, features_col: str = "image", label_col: str = "label") -> Evaluation:
        """Confusion matrix and per-class metrics of this model on a labelled DataFrame."""
        return evaluate(self.predict(df, features_col=features_col), self.num_classes, label_col=label_col,
                        class_names=self.class_names)

    def report(self, test_df: DataFrame, path: str | os.PathLike | None = None, *,
               evaluation: Evaluation | None = None, features_col: str = "image", label_col: str = "label",
               max_images: int = 25, title: str = "dfnet report") -> dict:
        """The run's plotly figures on ``test_df``; with ``path``, also written as one offline HTML file.

        Parameters
        ----------
        test_df : labelled rows to evaluate on and draw samples from.
        path : where to write the report (``write_report``: atomic, plotly.js
            embedded); nothing is written when None.
        evaluation : ``self.evaluate(test_df)`` if already computed.
        max_images : images in the sample grid (mistakes first).
        title : the page's title and heading.

        Returns
        -------
        ``{heading: plotly.graph_objects.Figure}`` as
        :func:`dfnet.report.run_figures` returns it, e.g.
        ``model.report(test_df)["Confusion matrix"].show()`` in a notebook.
        """
        from .report import run_figures, write_report

        figures = run_figures(self, test_df, evaluation, features_col=features_col, label_col=label_col,
                              max_images=max_images)
        if path is not None:
            write_report(path, figures, title=title)
        return figures

    # --- persistence ---------------------------------------------------------------
    def to_record(self) -> tuple[dict, np.ndarray]:
        """The model's record (JSON-able, see the module docstring) and its flat weights."""
        return model_record(self.network.to_config(), self.config.to_dict() if self.config else None,
                            self.history, self.class_names, self.run_id, self.early_stopping_result,
                            self.schedule_plan), self.params

    @classmethod
    def from_record(cls, record: dict | str | bytes, weights: np.ndarray | bytes, *, source: str,
                    expect: Sequential | None = None) -> "TrainedModel":
        """The model of a record of any readable version (a dict, or its JSON text) and its weights
        (an array, or the bytes of a ``.npy`` file); ``source`` names the store in errors; with
        ``expect``, a model of a different architecture is refused."""
        fields = read_record(record, source)
        try:
            if isinstance(weights, (bytes, bytearray, memoryview)):
                weights = np.load(io.BytesIO(weights), allow_pickle=False)
            network = Sequential.from_config(fields["network"])
            config = TrainConfig.from_dict(fields["config"]) if fields["config"] else None
            weights = np.asarray(weights)
        except (ValueError, KeyError, TypeError, AttributeError, EOFError, OSError) as e:
            # ConfigError is a ValueError too.
            raise ModelFormatError(f"{source}: corrupt model ({type(e).__name__}: {e})") from e
        if weights.shape != (network.num_params,):
            raise ModelFormatError(f"{source}: the weight vector holds {weights.size} values, the architecture "
                                   f"needs {network.num_params}")
        if expect is not None and expect.to_config() != network.to_config():
            raise ModelFormatError(f"{source}: saved architecture {network.to_config()['layers']} differs from the "
                                   f"expected {expect.to_config()['layers']}")
        return cls(network, weights.astype(network.dtype), config, fields["history"], fields["class_names"],
                   fields["run_id"], fields["early_stopping_result"], fields["schedule_plan"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model folder (``model.json`` + ``weights.npy``); returns its path."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        record, weights = self.to_record()
        # Serialise everything first, then rename both files into place, so a
        # failure never pairs new weights with an old architecture.
        text = json.dumps(record, indent=2).encode()
        staged = [(stage_file(path / "weights.npy", lambda f: np.save(f, weights)), path / "weights.npy"),
                  (stage_file(path / "model.json", lambda f: f.write(text)), path / "model.json")]
        for tmp, target in staged:
            os.replace(tmp, target)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect: Sequential | None = None) -> "TrainedModel":
        """Load a saved model folder; with ``expect``, refuse one of a different architecture."""
        path = Path(path)
        try:
            record = (path / "model.json").read_bytes()
            weights = (path / "weights.npy").read_bytes()
        except FileNotFoundError as e:
            raise ModelFormatError(f"{path}: not a dfnet model folder (missing {Path(e.filename).name})") from e
        except OSError as e:
            raise ModelFormatError(f"{path}: cannot read the model files ({type(e).__name__}: {e})") from e
        return cls.from_record(record, weights, source=str(path), expect=expect)
