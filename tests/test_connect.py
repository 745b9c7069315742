"""The user journeys on a real Spark Connect session (a local server of pip's pyspark), beside the
same journeys on the classic session: the same seed gives the same weights on both."""

from __future__ import annotations

import numpy as np
import pytest

from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.errors import ConfigError
from dfnet.train import fit

pytestmark = pytest.mark.slow

RTOL = 1e-9  # float64: only the order of float additions may differ between the two

MLP_RUNS = {
    "auto": dict(epochs=3),
    "average-2-rounds": dict(schedule="average", local_steps=10, epochs=2, batch_size=32),
    "minibatch": dict(schedule="minibatch", batch_size=256, epochs=2, lr_schedule="constant"),
    "classic": dict(schedule="classic", sample=0.5, epochs=3, optimizer="sgd", lr=0.5, lr_schedule="constant"),
    "dropout-decay": dict(epochs=2, dropout=0.2, weight_decay=0.01),
}
CNN_RUNS = {
    "cnn-inline": dict(model="cnn", kernels=(4,), hidden=(16,), epochs=2, schedule="average", batch_size=64),
    "cnn-explode": dict(model="cnn", kernels=(4,), hidden=(16,), epochs=2, schedule="minibatch", batch_size=256,
                        patches="explode", lr_schedule="constant"),
}
RUNS = {**MLP_RUNS, **CNN_RUNS}


def digits(session, split="train"):
    images, labels = load_arrays("digits", split)
    return to_dataframe(session, images, labels, max_value=16.0, num_partitions=2)


def config_of(name: str) -> TrainConfig:
    return TrainConfig(dtype="float64", seed=5, partitions=2, **RUNS[name])


@pytest.fixture(scope="module")
def classic_runs(spark):
    """Each run of RUNS on the classic session: its weights, and its predictions on the test split."""
    test = digits(spark, "test")
    out = {}
    for name in RUNS:
        model = fit(digits(spark), config_of(name), verbose=False)
        predictions = model.predict(test).select("id", "prediction", "probability").toPandas()
        out[name] = (model, predictions.sort_values("id").reset_index(drop=True))
    return out


@pytest.mark.parametrize("name", list(RUNS))
def test_fit_and_predict_on_connect_equal_the_classic_session(connect, classic_runs, name):
    model = fit(digits(connect), config_of(name), verbose=False)
    classic, classic_predictions = classic_runs[name]
    np.testing.assert_allclose(model.params, classic.params, rtol=RTOL, atol=1e-12)
    assert [h["loss"] for h in model.history] == pytest.approx([h["loss"] for h in classic.history], rel=RTOL)
    predictions = model.predict(digits(connect, "test")).select("id", "prediction", "probability").toPandas()
    predictions = predictions.sort_values("id").reset_index(drop=True)
    assert (predictions["prediction"] == classic_predictions["prediction"]).all()
    np.testing.assert_allclose(np.stack(predictions["probability"]), np.stack(classic_predictions["probability"]),
                               rtol=1e-7, atol=1e-12)


def test_a_model_trained_on_connect_scores_far_above_chance(connect):
    model = fit(digits(connect), TrainConfig(epochs=10), verbose=False)
    evaluation = model.evaluate(digits(connect, "test"))
    assert evaluation.accuracy > 0.9  # ten classes: chance is 0.1
    assert evaluation.confusion.sum() == 360


@pytest.mark.parametrize("engine", ["rdd", "rdd-batched"])
def test_the_rdd_engines_refuse_a_connect_session_and_say_what_to_use(connect, engine):
    with pytest.raises(ConfigError, match=r"Spark Connect session.*engine='dataframe'"):
        fit(digits(connect), TrainConfig(engine=engine, schedule="minibatch", epochs=1), verbose=False)
