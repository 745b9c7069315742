"""The hostile input table: each row is a bad input a user can hand dfnet, the error it gets, and
the proof that it got it BEFORE any training step, leaving the user's inputs as they were.

Every row runs what a user would run (``fit`` on a DataFrame, ``load_dataframe`` on a data
folder, ``TrainedModel.load``, a resumed ``fit``, ``check_table_name``) and must raise the given
error type with the given words in its message; a recording callback must have seen no step and
no epoch; every file under the test's folder (data, model, checkpoint files the row set up) must
be byte for byte what it was; and no cached data may be left behind in the Spark session.

More variants of the DataFrame rows live in ``test_validation.py`` (whose helpers this table
uses), IDX corruptions in ``test_datasets.py`` and CLI refusals in ``test_cli.py``.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from pyspark.sql import types as T
from test_validation import CONFIG, DOUBLES, GOOD_IMAGES, GOOD_LABELS, INF, NAN, RecordingCallback, frame, with_pixel

from dfnet.checkpoint import Checkpoint, CheckpointStore
from dfnet.datasets import load_dataframe
from dfnet.errors import (CheckpointError, ConfigError, DatasetError, DataValidationError, IDXFormatError,
                          ModelFormatError)
from dfnet.model import TrainedModel
from dfnet.nn import build_mlp
from dfnet.tables import check_table_name
from dfnet.train import fit

NET = build_mlp(4, [3], 2, dtype="float32")  # the network CONFIG builds for 4-pixel images, 2 classes


@dataclass
class Env:
    spark: Any
    tmp: Path
    recorder: RecordingCallback = field(default_factory=RecordingCallback)

    def fit(self, df, **kwargs):
        return fit(df, **{"config": CONFIG, **kwargs}, callbacks=[self.recorder], verbose=False)


@dataclass
class Case:
    id: str
    attempt: Callable[[Env], Any]
    error: type[Exception]
    words: list[str]
    setup: Callable[[Env], None] | None = None


def fit_on(images, labels, **frame_kwargs):
    """A row that fits CONFIG on a DataFrame of these images and labels."""
    return lambda env, **fit_kwargs: env.fit(frame(env.spark, images, labels, **frame_kwargs), **fit_kwargs)


def copy_mnist(env: Env, *, leave_out: str | None = None, truncate: str | None = None) -> None:
    from conftest import SHARED_DATA

    data = env.tmp / "data"
    data.mkdir()
    for f in sorted((SHARED_DATA / "mnist").glob("*.gz")):
        if f.name != leave_out:
            shutil.copy(f, data / f.name)
    if truncate:
        raw = (data / truncate).read_bytes()
        (data / truncate).write_bytes(raw[: len(raw) // 2])


def load_and_fit(env: Env):
    return env.fit(load_dataframe(env.spark, "mnist", "train", data_dir=env.tmp / "data", classes=[0, 1]))


def save_other_model(env: Env) -> None:
    TrainedModel(build_mlp(4, [5], 2, dtype="float32"), np.zeros(4 * 5 + 5 + 5 * 2 + 2, np.float32)).save(
        env.tmp / "model")


def checkpoint_of_another_run(env: Env) -> None:
    other = build_mlp(4, [5], 2, dtype="float32")
    store = CheckpointStore(env.spark, str(env.tmp / "ckpt"))
    store.save(Checkpoint(1, other.init_params(0), "sgd", {"steps": 1}, [], other.to_config(),
                          CONFIG.replace(hidden=(5,)).to_dict(), {"rows": 4, "partitions": 1}))


def resume_from_checkpoints(env: Env):
    return env.fit(frame(env.spark, GOOD_IMAGES, GOOD_LABELS), checkpoint_dir=str(env.tmp / "ckpt"), resume=True)


POINT = T.StructType([T.StructField("x", T.FloatType()), T.StructField("y", T.FloatType())])

CASES = [
    # --- the image column -------------------------------------------------------------
    Case("images-are-strings", fit_on(["0.1,0.2,0.3,0.4"] * 4, GOOD_LABELS, image_type=T.StringType()),
         DataValidationError, ["'image'", "array<float> or array<double>", "got string"]),
    Case("images-are-structs", fit_on([(0.1, 0.2)] * 4, GOOD_LABELS, image_type=POINT),
         DataValidationError, ["'image'", "array of numbers", "got struct<x:float,y:float>"]),
    Case("ragged-images", fit_on([GOOD_IMAGES[0], GOOD_IMAGES[1][:2], GOOD_IMAGES[2], GOOD_IMAGES[3] + [0.0]],
                                 GOOD_LABELS),
         DataValidationError, ["'image'", "lengths from 2 to 5"]),
    Case("images-shorter-than-the-network-input",
         lambda env: fit_on([img[:3] for img in GOOD_IMAGES], GOOD_LABELS)(env, network=NET),
         DataValidationError, ["'image'", "must have 4 values", "from 3 to 3"]),
    Case("nan-pixel", fit_on(with_pixel(NAN), GOOD_LABELS),
         DataValidationError, ["'image'", "1 image(s)", "NaN"]),
    Case("plus-inf-pixel", fit_on(with_pixel(INF), GOOD_LABELS),
         DataValidationError, ["'image'", "1 image(s)", "infinite"]),
    Case("minus-inf-pixel", fit_on(with_pixel(-INF), GOOD_LABELS, image_type=DOUBLES),
         DataValidationError, ["'image'", "1 image(s)", "infinite"]),
    Case("null-image-rows", fit_on([None, GOOD_IMAGES[1], None, GOOD_IMAGES[3]], GOOD_LABELS),
         DataValidationError, ["'image'", "2 null"]),
    # --- the label column -------------------------------------------------------------
    Case("null-labels", fit_on(GOOD_IMAGES, [0, None, 1, None]),
         DataValidationError, ["'label'", "2 null"]),
    Case("negative-label", fit_on(GOOD_IMAGES, [0, -3, 1, 0]),
         DataValidationError, ["'label'", ">= 0", "-3"]),
    Case("label-out-of-range", lambda env: fit_on(GOOD_IMAGES, [0, 1, 7, 0])(env, num_classes=2),
         DataValidationError, ["'label'", "[0, 1]", "2-class", "from 0 to 7"]),
    Case("infinite-label", fit_on(GOOD_IMAGES, [0.0, 1.0, -INF, INF], label_type=T.DoubleType()),
         DataValidationError, ["'label'", "2 non-integer"]),
    Case("fractional-labels", fit_on(GOOD_IMAGES, [0.0, 0.25, 1.0, 0.5], label_type=T.DoubleType()),
         DataValidationError, ["'label'", "2 non-integer"]),
    Case("labels-are-strings", fit_on(GOOD_IMAGES, ["0", "1", "1", "0"], label_type=T.StringType()),
         DataValidationError, ["'label'", "integer class indices", "got string"]),
    # --- the frame as a whole and the run's settings -----------------------------------
    Case("empty-dataframe", fit_on([], []), DataValidationError, ["empty", "no rows"]),
    Case("more-partitions-than-rows",
         lambda env: fit_on(GOOD_IMAGES, GOOD_LABELS)(env, config=CONFIG.replace(partitions=5)),
         ConfigError, ["partitions=5", "4 rows", "at most 4"]),
    Case("initial-weights-of-the-wrong-shape",
         lambda env: fit_on(GOOD_IMAGES, GOOD_LABELS)(env, initial_params=np.zeros(NET.num_params + 1)),
         ConfigError, ["initial_params", f"({NET.num_params + 1},)", f"({NET.num_params},)"]),
    Case("initial-weights-with-nan",
         lambda env: fit_on(GOOD_IMAGES, GOOD_LABELS)(env, initial_params=np.full(NET.num_params, np.nan)),
         ConfigError, ["initial_params", f"{NET.num_params} NaN or infinite"]),
    # --- files ------------------------------------------------------------------------
    Case("model-file-of-another-architecture",
         lambda env: TrainedModel.load(env.tmp / "model", expect=NET),
         ModelFormatError, ["model", "saved architecture", "'n_out': 5", "differs from the expected", "'n_out': 3"],
         setup=save_other_model),
    Case("checkpoint-of-another-run", resume_from_checkpoints,
         CheckpointError, ["cannot resume", "checkpoint-000001.dfnet", "different run", "hidden=[5] there, [3] here"],
         setup=checkpoint_of_another_run),
    Case("truncated-idx-file", load_and_fit,
         IDXFormatError, ["data/train-labels-idx1-ubyte.gz", "truncated gzip stream"],
         setup=lambda env: copy_mnist(env, truncate="train-labels-idx1-ubyte.gz")),
    Case("data-folder-missing-a-file", load_and_fit,
         DatasetError, ["mnist", "data is missing train-images-idx3-ubyte.gz"],
         setup=lambda env: copy_mnist(env, leave_out="train-images-idx3-ubyte.gz")),
    # --- names of the tables dfnet will write ------------------------------------------
    *[Case(f"table-name-{label}", lambda env, name=name: check_table_name(name), DataValidationError, words)
      for label, name, words in [
          ("empty", "", ["empty"]),
          ("with-a-space", "mnist predictions", ["'mnist predictions'", "found space", "`mnist predictions`"]),
          ("with-a-semicolon", "preds; DROP TABLE users", ["';'"]),
          ("with-quotes", "db.'preds'", ["\"'\""]),
          ("leading-digit", "2024_preds", ["starts with a digit", "`2024_preds`"]),
          ("four-parts", "a.b.c.d", ["4 parts", "at most 3"]),
          ("empty-part", "db..preds", ["empty part"]),
          ("unclosed-backquote", "db.`preds", ["never closed"]),
      ]],
]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_before_training_and_leaves_the_inputs_untouched(spark, tmp_path, case):
    env = Env(spark, tmp_path)
    if case.setup:
        case.setup(env)
    files = snapshot(tmp_path)
    cached = spark.sparkContext._jsc.getPersistentRDDs().size()
    with pytest.raises(case.error) as info:
        case.attempt(env)
    message = str(info.value)
    for word in case.words:
        assert word in message, f"{word!r} not in {message!r}"
    assert env.recorder.steps == [] and env.recorder.epochs == [], "a training step ran before the error"
    assert snapshot(tmp_path) == files, "the user's files changed"
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == cached, "a cache was left behind"


def test_the_table_covers_what_the_issue_lists():
    listed = {"images-are-strings", "images-are-structs", "ragged-images", "images-shorter-than-the-network-input",
              "nan-pixel", "plus-inf-pixel", "minus-inf-pixel", "null-image-rows", "null-labels", "negative-label",
              "label-out-of-range", "infinite-label", "fractional-labels", "labels-are-strings", "empty-dataframe",
              "more-partitions-than-rows", "model-file-of-another-architecture",
              "initial-weights-of-the-wrong-shape", "truncated-idx-file", "data-folder-missing-a-file",
              "table-name-with-a-space"}
    assert listed <= {c.id for c in CASES}


@pytest.mark.parametrize("name", ["preds", "_tmp", "db.preds", "spark_catalog.db.preds", "`mnist predictions`",
                                  "db.`2024 preds`", "`a.b`.c", "`with``backquote`", "`1abc`", "select",
                                  "Preds_2024"])
def test_valid_table_names_give_the_parts_spark_reads(spark, name):
    """Spark's own SQL parser is the reference for what the parts of an accepted name are."""
    parser = spark._jsparkSession.sessionState().sqlParser()
    expected = tuple(parser.parseMultipartIdentifier(name).mkString("\x00").split("\x00"))
    assert check_table_name(name) == expected


def test_fit_with_partitions_equal_to_rows_is_accepted(spark):
    """The control for more-partitions-than-rows: as many partitions as rows trains."""
    recorder = RecordingCallback()
    fit(frame(spark, GOOD_IMAGES, GOOD_LABELS), CONFIG.replace(partitions=4), callbacks=[recorder], verbose=False)
    assert recorder.steps == [(1, 1, 1)]
