"""End-to-end training on the real data sets in ../shared/data, evaluated on the official test splits."""

from __future__ import annotations

import numpy as np
import pytest

from dfnet.config import PRESETS, TrainConfig
from dfnet.datasets import load_arrays, load_dataframe
from dfnet.errors import TrainingDivergedError
from dfnet.train import fit


@pytest.fixture(scope="module")
def mnist01(spark, shared_data):
    train = load_dataframe(spark, "mnist", "train", data_dir=shared_data, classes=[0, 1]).cache()
    test = load_dataframe(spark, "mnist", "test", data_dir=shared_data, classes=[0, 1]).cache()
    yield train, test
    train.unpersist()
    test.unpersist()


def test_defaults_learn_mnist_0_vs_1_to_99_8_percent_in_5_epochs(mnist01):
    train, test = mnist01
    model = fit(train, TrainConfig(epochs=5), verbose=False)
    evaluation = model.evaluate(test)
    assert evaluation.count == 2115
    assert evaluation.accuracy >= 0.998, evaluation.report()
    # The training loss falls epoch over epoch on the whole.
    losses = [h["loss"] for h in model.history]
    assert losses[-1] < losses[0] / 5


def test_classic_preset_does_not_learn_and_a_centred_init_does(mnist01, shared_data):
    """The classic configuration, reproduced honestly: all-positive initial weights saturate
    every hidden sigmoid, gradients vanish and the test accuracy stays at chance."""
    train, test = mnist01
    classic = fit(train, TrainConfig(**PRESETS["classic"]), num_classes=2, verbose=False)
    images, _ = load_arrays("mnist", "test", shared_data)
    X = images[:200].reshape(200, -1) / 255.0
    W, b = classic.network.unflatten(classic.params)[0]
    hidden = 1 / (1 + np.exp(-(X @ W + b)))
    assert hidden.mean() > 0.99  # saturated
    assert classic.evaluate(test).accuracy < 0.6  # chance is 1135/2115 = 0.537

    centred = fit(train, TrainConfig(**{**PRESETS["classic"], "init": "uniform"}), num_classes=2, verbose=False)
    assert centred.evaluate(test).accuracy > 0.95
    assert len(centred.history) == 50 and all(h["steps"] == 1 for h in centred.history)
    # one full-batch update per epoch on a 0.7 sample of the 1,000 images
    assert 600 < np.mean([h["rows"] for h in centred.history]) < 800


def test_ten_class_mnist_mlp_learns_far_above_chance(spark, shared_data):
    train = load_dataframe(spark, "mnist", "train", data_dir=shared_data)
    test = load_dataframe(spark, "mnist", "test", data_dir=shared_data)
    config = TrainConfig(hidden=(128,), epochs=3, batch_size=128, lr=0.003)
    model = fit(train, config, validation_df=test, verbose=False)
    evaluation = model.evaluate(test)
    assert evaluation.accuracy >= 0.88, evaluation.report()
    # the per-epoch validation score is the same computation as the final evaluation
    assert model.history[-1]["val_accuracy"] == pytest.approx(evaluation.accuracy, abs=1e-12)
    assert min(c["recall"] for c in evaluation.as_dict()["per_class"]) > 0.6


def test_a_huge_learning_rate_stops_with_a_clear_error(mnist01):
    train, _ = mnist01
    config = TrainConfig(optimizer="sgd", lr=1e9, epochs=3, schedule="classic", dtype="float32")
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        fit(train, config, verbose=False)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the overflow under test
def test_weights_that_overflow_in_the_last_update_are_not_returned(mnist01):
    """One full-batch step whose gradient is finite but whose update overflows float32: the run
    stops at that step instead of handing back infinite weights."""
    train, _ = mnist01
    recorder = []
    config = TrainConfig(optimizer="sgd", lr=1e300, epochs=1, schedule="classic", hidden=(8,), dtype="float32")
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 1: the updated weights are NaN or infinite "
                                                    r"\(lr=1e\+300\); lower the learning rate"):
        fit(train, config, callbacks=[StepRecorder(recorder)], verbose=False)
    assert recorder == []  # the diverged step is never reported as done


@pytest.mark.parametrize("local_steps", [None, 2])
def test_the_averaging_schedule_stops_on_divergence_too(mnist01, local_steps):
    train, _ = mnist01
    config = TrainConfig(optimizer="sgd", lr=1e30, epochs=2, schedule="average", batch_size=100,
                         local_steps=local_steps, partitions=2, hidden=(8,))
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 1: the loss or the partitions' locally "
                                                    r"trained weights is NaN or infinite .*lower the learning rate"):
        fit(train, config, verbose=False)


class StepRecorder:
    def __init__(self, steps):
        self.steps = steps

    def on_step(self, epoch, step, steps):
        self.steps.append((epoch, step))

    def on_epoch_end(self, record, total_epochs):
        pass


def test_same_seed_same_weights(mnist01):
    train, _ = mnist01
    config = TrainConfig(hidden=(8,), epochs=1, batch_size=250)
    a = fit(train, config, verbose=False)
    b = fit(train, config, verbose=False)
    np.testing.assert_array_equal(a.params, b.params)
