"""The validation split, early stopping (and its checkpoints), the auto schedule's plan and the
defaults on real data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from pyspark.sql import functions as F

from cli_helpers import run_cli

from dfnet.checkpoint import checkpoint_name
from dfnet.config import TrainConfig, auto_batch_size
from dfnet.datasets import load_arrays, load_dataframe, to_dataframe
from dfnet.errors import ConfigError
from dfnet.model import TrainedModel
from dfnet.schedules import MIN_ROWS_PER_MODEL, SchedulePlan, averaging_rounds, plan_auto
from dfnet.splits import hashed_split
from dfnet.train import fit


@pytest.fixture(scope="module")
def digits(spark):
    df = load_dataframe(spark, "digits", "train").cache()
    yield df
    df.unpersist()


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in ("seconds", "epochs_in_job")} for record in history]


def ids(df) -> set[int]:
    return {row["id"] for row in df.select("id").collect()}


def test_validation_split_is_disjoint_complete_and_stable_across_layouts(digits):
    train, val = hashed_split(digits, 0.2, seed=3, key_cols=["id"])
    t, v = ids(train), ids(val)
    assert not t & v and t | v == ids(digits)
    assert 0.15 < len(v) / 1437 < 0.25
    # The same rows whatever the partitioning and order, and another seed holds out others.
    shuffled = digits.repartition(5).orderBy(F.rand(1))
    assert ids(hashed_split(shuffled, 0.2, seed=3, key_cols=["id"])[1]) == v
    assert ids(hashed_split(digits, 0.2, seed=4, key_cols=["id"])[1]) != v
    # Without key columns the image and label are the key: stable too.
    by_content = ids(hashed_split(digits, 0.2, seed=3, key_cols=["image", "label"])[1])
    assert by_content == ids(hashed_split(shuffled, 0.2, seed=3, key_cols=["image", "label"])[1])


def test_early_stopping_needs_validation_rows(digits):
    with pytest.raises(ConfigError, match="early_stopping=3 watches the validation loss"):
        fit(digits, TrainConfig(early_stopping=3), verbose=False)
    with pytest.raises(ConfigError, match="validation_split=1.0: must be < 1"):
        fit(digits, TrainConfig(validation_split=1.0), verbose=False)
    with pytest.raises(ConfigError, match="key_cols \\['nope'\\] not found"):
        fit(digits, TrainConfig(validation_split=0.1), key_cols=["nope"], verbose=False)


def test_cli_early_stopping_stops_long_before_its_epochs_and_keeps_the_best_weights(spark, tmp_path):
    """dfnet train --epochs 300 --early-stopping 5 --validation-split 0.1 on the digits."""
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "--dataset", "digits", "--epochs", "300", "--early-stopping", "5",
                                 "--validation-split", "0.1", "--output", str(out), "--no-progress", "--no-report"])
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    best, stopped = metrics["best_epoch"], metrics["stopped_epoch"]
    assert stopped == len(history) < 150 and stopped == best + 5
    assert history[best - 1]["val_loss"] == min(h["val_loss"] for h in history)
    assert all(h["best_epoch"] <= h["epoch"] for h in history) and history[-1]["best_epoch"] == best
    assert "Early stopping: no lower validation loss for 5 epochs" in stdout
    # The saved model's loss on the held-out rows, computed here in numpy, is the best epoch's.
    model = TrainedModel.load(out / "model")
    _, val = hashed_split(load_dataframe(spark, "digits", "train"), 0.1, seed=0, key_cols=["id"])
    pdf = val.toPandas()
    X = np.stack(pdf["image"].to_numpy()).astype(np.float32)
    scored = model.network.loss_and_grad(model.params, X, pdf["label"].to_numpy())
    assert scored.loss_sum / scored.count == pytest.approx(history[best - 1]["val_loss"], rel=1e-5)
    assert metrics["test_accuracy"] > 0.95


def test_resume_with_early_stopping_is_bit_identical(digits, tmp_path):
    config = TrainConfig(hidden=(32,), epochs=60, lr=0.02, lr_schedule="constant", early_stopping=2,
                         validation_split=0.25, seed=2)
    whole = fit(digits, config, checkpoint_dir=str(tmp_path / "all"), checkpoint_keep=None, verbose=False)
    stopped = whole.early_stopping_result["stopped_epoch"]
    assert stopped is not None and stopped < 60
    for cut in (whole.early_stopping_result["best_epoch"], stopped - 1):  # mid-patience, and with the best behind
        folder = tmp_path / f"from{cut}"
        folder.mkdir()
        shutil.copytree(tmp_path / "all" / checkpoint_name(cut), folder / checkpoint_name(cut))
        resumed = fit(digits, config, checkpoint_dir=str(folder), resume=True, verbose=False)
        assert np.array_equal(resumed.params, whole.params)
        assert resumed.early_stopping_result == whole.early_stopping_result
        assert untimed(resumed.history) == untimed(whole.history)
        assert resumed.run_id == whole.run_id  # the checkpoint names the run it continues
    # Resuming a run that has already stopped trains nothing more and gives the same weights.
    again = fit(digits, config, checkpoint_dir=str(tmp_path / "all"), resume=True, verbose=False)
    assert np.array_equal(again.params, whole.params) and len(again.history) == stopped


# --- the auto schedule ----------------------------------------------------------------------

@pytest.mark.parametrize("rows,partitions,slots,models", [
    (1437, 2, 2, 1),  # small data: one model
    (20000, 2, 2, 1),  # under 2 x 16,384 rows: a second model would see too few rows
    (60000, 2, 2, 2),
    (60000, 8, 2, 2),  # more partitions than slots: still one model per slot
    (60000, 16, 2, 2),
    (60000, 8, 8, 3),  # local[8] --partitions 8: 3 models of 20,000 rows, not 7 of 8,571
    (60000, 64, 64, 60000 // MIN_ROWS_PER_MODEL),
    (600000, 32, 32, 32),
    (600000, 64, 64, 600000 // MIN_ROWS_PER_MODEL),  # a big cluster: 36 models of 16,667 rows
])
def test_auto_plans_models_from_slots_and_rows_and_one_average_an_epoch(rows, partitions, slots, models):
    plan = plan_auto(TrainConfig(), rows=rows, partitions=partitions, slots=slots)
    assert plan.schedule == "average" and plan.models == models
    assert MIN_ROWS_PER_MODEL == 16384 and (models == 1 or rows // models >= MIN_ROWS_PER_MODEL)
    per_model = -(-rows // models)
    assert plan.local_steps is None  # one average per epoch, however many models
    assert averaging_rounds(TrainConfig(batch_size=plan.batch_size), per_model, plan.local_steps) == 1
    assert plan.batch_size == auto_batch_size(per_model)
    assert (plan.lr_scale, plan.warmup_epochs) == (1.0, 0.0)  # the configured learning rate, unscaled
    assert str(models) in plan.reason and "one average per epoch" in plan.reason
    assert plan.epochs_per_job == (11 if rows == 1437 else 1)  # below 16,384 rows a model
    assert plan_auto(TrainConfig(), rows=rows, partitions=partitions, slots=slots,
                     whole_epochs_only=True).epochs_per_job == 1
    # a pure function of the configuration, rows, partitions and slots
    assert plan_auto(TrainConfig(), rows=rows, partitions=partitions, slots=slots) == plan


def test_auto_keeps_a_local_steps_override_and_says_so():
    plan = plan_auto(TrainConfig(local_steps=10), rows=600000, partitions=32, slots=32)
    assert plan.models == 32 and plan.local_steps == 10 and "local_steps=10" in plan.reason


def test_the_plan_scales_the_learning_rate_after_a_linear_warm_up():
    plan = SchedulePlan("minibatch", 2048, lr_scale=16.0, warmup_epochs=5.0)
    assert [plan.lr_factor(t) for t in (0.0, 2.5, 5.0, 7.0)] == [1.0, 8.5, 16.0, 16.0]
    assert SchedulePlan("average").lr_factor(0.0) == 1.0
    assert SchedulePlan("average", lr_scale=2.0).lr_factor(0.0) == 2.0  # no warm-up: scaled from the start


def test_small_data_trains_several_epochs_per_job_bit_identically_to_one_job_each(digits, tmp_path):
    """1,437 digits: one job trains 11 epochs; a run that checkpoints every epoch (so one job an
    epoch) gives the same weights and history, bit for bit."""
    config = TrainConfig(hidden=(32,), epochs=13, dropout=0.1, weight_decay=1e-3, seed=5)
    grouped = fit(digits, config, verbose=False)
    assert grouped.schedule_plan["epochs_per_job"] == 11
    # Two jobs, for epochs 1-11 and 12-13: each epoch says so and has its share of its job's time.
    assert [h["epochs_in_job"] for h in grouped.history] == [11] * 11 + [2] * 2
    assert len({h["seconds"] for h in grouped.history[:11]}) == 1 and grouped.history[0]["seconds"] > 0
    assert all(h["batch_size"] == grouped.schedule_plan["batch_size"] for h in grouped.history)
    single = fit(digits, config, checkpoint_dir=str(tmp_path / "ckpt"), verbose=False)
    assert single.schedule_plan["epochs_per_job"] == 1
    assert np.array_equal(grouped.params, single.params)
    assert untimed(grouped.history) == untimed(single.history)


def test_auto_batch_size_grows_with_the_rows_per_model():
    assert [auto_batch_size(n) for n in (100, 1437, 5000, 30000, 300000)] == [32, 32, 32, 128, 128]
    assert auto_batch_size(16000) == 64


def test_auto_averages_a_label_sorted_frame_into_a_classifier(spark, shared_data):
    """The MNIST subset is sorted by digit; two models on two contiguous halves (0-4, 5-9) would
    not average into a classifier. auto spreads the rows over the partitions by a seeded hash."""
    images, labels = load_arrays("mnist", "train", shared_data)
    assert np.all(np.diff(labels) >= 0)
    big = np.concatenate([images] * 8), np.concatenate([labels] * 8)  # 40,000 rows: two models
    df = to_dataframe(spark, *big, num_partitions=2)
    model = fit(df, TrainConfig(epochs=3), verbose=False)
    assert model.schedule_plan["models"] == 2
    test_images, test_labels = load_arrays("mnist", "test", shared_data)
    accuracy = model.evaluate(to_dataframe(spark, test_images[:2000], test_labels[:2000])).accuracy
    assert accuracy > 0.85


# --- defaults on the three data sets ---------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("dataset,rows,floor", [("digits", None, 0.96), ("mnist", None, 0.92),
                                                ("fashion-mnist", 12000, 0.80)])
def test_defaults_learn_each_data_set(spark, shared_data, dataset, rows, floor):
    images, labels = load_arrays(dataset, "train", None if dataset == "digits" else shared_data)
    if rows:
        pick = np.random.default_rng(0).choice(len(labels), rows, replace=False)
        images, labels = images[pick], labels[pick]
    max_value = 16.0 if dataset == "digits" else 255.0
    model = fit(to_dataframe(spark, images, labels, max_value=max_value), verbose=False)
    test_images, test_labels = load_arrays(dataset, "test", None if dataset == "digits" else shared_data)
    accuracy = model.evaluate(to_dataframe(spark, test_images, test_labels, max_value=max_value)).accuracy
    assert accuracy >= floor  # chance is 0.10
    assert len(model.history) == TrainConfig().epochs and model.history[0]["steps"] == 1  # one job an epoch


def test_cli_console_shows_dfnet_lines_not_the_jvm_start_up(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dfnet.cli", "train", "--epochs", "2", "--master", "local[2]",
                           "--hidden", "16", "--output", str(tmp_path / "run"), "--no-progress", "--no-report"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Schedule auto -> model averaging: 1 model" in proc.stdout
    for noise in ("WARN Utils", "NativeCodeLoader", "incubator modules", "log4j", "setLogLevel"):
        assert noise not in proc.stderr and noise not in proc.stdout
