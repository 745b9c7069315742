"""A trained network: architecture, flat weights, the config and history it came from.

Saved as a folder: ``model.json`` (architecture, config, class names, history)
and ``weights.npy`` (the flat parameter vector), each written to a temporary
name and renamed into place, so a failure never leaves a half-written model.
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

FORMAT_VERSION = 1


@dataclass
class TrainedModel:
    network: Sequential
    params: np.ndarray
    config: TrainConfig | None = None
    history: list[dict] = field(default_factory=list)
    class_names: Sequence[str] | None = None
    #: names this training run in the history, metrics and prediction tables (set by ``fit``)
    run_id: str | None = None
    #: early stopping's outcome: best_epoch (whose weights these are), best_val_loss,
    #: stopped_epoch (None when it did not trigger), patience, min_delta; None without it
    early_stopping: dict | None = None
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
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "network": self.network.to_config(),
                "config": self.config.to_dict() if self.config else None,
                "class_names": list(self.class_names) if self.class_names else None,
                "history": self.history, "run_id": self.run_id, "early_stopping": self.early_stopping,
                "schedule_plan": self.schedule_plan}
        # Serialise everything first, then rename both files into place, so a
        # failure never pairs new weights with an old architecture.
        text = json.dumps(meta, indent=2).encode()
        staged = [(stage_file(path / "weights.npy", lambda f: np.save(f, self.params)), path / "weights.npy"),
                  (stage_file(path / "model.json", lambda f: f.write(text)), path / "model.json")]
        for tmp, target in staged:
            os.replace(tmp, target)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect: Sequential | None = None) -> "TrainedModel":
        """Load a saved model; with ``expect``, refuse one of a different architecture."""
        path = Path(path)
        try:
            meta_text = (path / "model.json").read_bytes()
            weights = (path / "weights.npy").read_bytes()
        except FileNotFoundError as e:
            raise ModelFormatError(f"{path}: not a dfnet model folder (missing {Path(e.filename).name})") from e
        except OSError as e:
            raise ModelFormatError(f"{path}: cannot read the model files ({type(e).__name__}: {e})") from e
        return cls.from_saved(meta_text, weights, source=str(path), expect=expect)

    @classmethod
    def from_saved(cls, meta_text: str | bytes, weights_npy: bytes, *, source: str,
                   expect: Sequential | None = None) -> "TrainedModel":
        """A model from the contents of a saved folder's ``model.json`` and ``weights.npy``, however
        they were read (the local file system, or Spark's readers for any Hadoop path).
        ``source`` names the folder in errors."""
        try:
            meta = json.loads(meta_text.decode("utf-8") if isinstance(meta_text, bytes) else meta_text)
            if meta.get("format_version") != FORMAT_VERSION:
                raise ModelFormatError(f"{source}: model format version {meta.get('format_version')!r}, "
                                       f"this dfnet reads version {FORMAT_VERSION}")
            params = np.load(io.BytesIO(weights_npy), allow_pickle=False)
            network = Sequential.from_config(meta["network"])
            config = TrainConfig.from_dict(meta["config"]) if meta.get("config") else None
        except ModelFormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, EOFError, OSError) as e:
            # ConfigError and JSONDecodeError are ValueErrors too.
            raise ModelFormatError(f"{source}: corrupt model files ({type(e).__name__}: {e})") from e
        if params.shape != (network.num_params,):
            raise ModelFormatError(f"{source}: weights.npy holds {params.size} values, the architecture "
                                   f"needs {network.num_params}")
        if expect is not None and expect.to_config() != network.to_config():
            raise ModelFormatError(f"{source}: saved architecture {network.to_config()['layers']} differs from the "
                                   f"expected {expect.to_config()['layers']}")
        return cls(network, params.astype(network.dtype), config, meta.get("history", []), meta.get("class_names"),
                   meta.get("run_id"), meta.get("early_stopping"), meta.get("schedule_plan"))
