"""How a step's partial sums travel and add up (dfnet.engine.sums): collect, agg and sharded give the
same bits; a sharded sum puts each chunk on a reduce task of its own; float32 partials stay within
float32 rounding of the float64 sum; ``auto`` chooses from the tasks, the values and the cluster."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from jobcount import stage_tasks_of

from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.engine.data import encode_training_data
from dfnet.engine.dataframe import DataFrameEngine
from dfnet.engine.sums import (CLUSTER_COLLECT_LIMIT, COLLECT_LIMIT, SHARD_MIN_VALUES, ClusterShape, PartialLayout,
                               chunk_bounds, resolve_aggregate, shard_keys, shards_for, spark_hash_int)
from dfnet.errors import TrainingDivergedError
from dfnet.nn import build_mlp
from dfnet.train import fit


@pytest.fixture(scope="module")
def mnist_rows(shared_data):
    images, labels = load_arrays("mnist", "train", shared_data)
    pick = np.random.default_rng(3).choice(len(labels), 600, replace=False)
    return images[pick], labels[pick]


def test_spark_hash_int_is_sparks_hash_of_an_int_column(spark):
    values = list(range(-50, 3000)) + [2**31 - 1, -2**31, 123456789, -987654321]
    df = spark.createDataFrame([(v,) for v in values], "v int")
    theirs = {r["v"]: r["h"] for r in df.select("v", F.hash("v").alias("h")).collect()}
    assert {v: spark_hash_int(v) for v in values} == theirs


@pytest.mark.parametrize("shards", [1, 2, 3, 5, 8, 16, 64])
def test_each_shard_key_lands_on_a_reduce_task_of_its_own(spark, shards):
    keys = shard_keys(shards)
    assert len(set(keys)) == shards
    df = spark.createDataFrame([(k, i) for i, k in enumerate(keys)], "chunk int, i int")
    placed = df.repartition(shards, "chunk").select("i", F.spark_partition_id().alias("p")).collect()
    assert sorted((r["i"], r["p"]) for r in placed) == [(i, i) for i in range(shards)]


def test_chunks_cover_the_vector_in_order_and_shards_follow_slots_and_size():
    for n, k in [(10, 3), (8195, 2), (50_893, 7), (5, 5)]:
        bounds = chunk_bounds(n, k)
        assert bounds[0] == 0 and bounds[-1] == n and np.all(np.diff(bounds) >= n // k)
    assert shards_for(SHARD_MIN_VALUES, 8) == 1
    assert shards_for(SHARD_MIN_VALUES + 1, 8) == 2
    assert shards_for(4_000_003, 8) == 8
    assert shards_for(4_000_003, 1) == 1
    assert shards_for(4_000_003, 8, tasks=3) == 3  # no more chunks than map tasks


def _encoded(spark, rows, partitions):
    images, labels = rows
    return encode_training_data(to_dataframe(spark, images, labels), features_col="image", label_col="label",
                                num_features=784, dtype="float64", num_partitions=partitions)


@pytest.mark.parametrize("partitions", [1, 3, 32])
def test_sharded_agg_and_collect_give_the_same_bits_and_the_numpy_gradient(spark, mnist_rows, partitions):
    net = build_mlp(784, [64], 10, activation="tanh", dtype="float64")  # 50,890 weights: up to 7 shards
    params = net.init_params(2, "xavier")
    data = _encoded(spark, mnist_rows, partitions)
    results = {}
    try:
        for how, slots in [("collect", 2), ("agg", 2), ("sharded", 2), ("sharded", 5), ("sharded", 64)]:
            engine = DataFrameEngine(net, how)
            engine.cluster = ClusterShape(slots=slots)
            results[how, slots] = engine.gradient(params, data.frame)
        engine = DataFrameEngine(net, "sharded")
        engine.cluster = ClusterShape(slots=5)
        tasks = stage_tasks_of(spark, lambda: engine.gradient(params, data.frame))
    finally:
        data.release()
    # The step's map stage, then one reduce task a shard (a cached frame's upstream stages are listed, skipped).
    assert engine.layout().shards == 5 and tasks[-2:] == [partitions, 5]
    reference = results["agg", 2]
    for key, result in results.items():
        assert np.array_equal(result.grad_sum, reference.grad_sum), key
        assert (result.loss_sum, result.correct, result.count) == \
            (reference.loss_sum, reference.correct, reference.count), key
    images, labels = mnist_rows
    X = (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32).astype(np.float64)
    numpy = net.loss_and_grad(params, X, labels)
    assert reference.count == 600 and reference.correct == numpy.correct
    assert np.abs(reference.grad_sum - numpy.grad_sum).max() <= 1e-10 * np.abs(numpy.grad_sum).max()


def test_float32_partials_are_float32_roundings_of_each_task_sum_and_the_same_bits_every_way(spark, mnist_rows):
    net = build_mlp(784, [64], 10, activation="tanh", dtype="float64")
    params = net.init_params(4, "xavier")
    data = _encoded(spark, mnist_rows, 3)
    try:
        exact = DataFrameEngine(net, "agg").gradient(params, data.frame)
        per_task = data.frame.rdd.glom().map(len).collect()
        rounded = {}
        for how in ("collect", "agg", "sharded"):
            engine = DataFrameEngine(net, how, partial_dtype="float32")
            engine.cluster = ClusterShape(slots=4)
            rounded[how] = engine.gradient(params, data.frame)
    finally:
        data.release()
    assert all(per_task)  # every task emits one rounded partial
    for how, result in rounded.items():
        assert np.array_equal(result.grad_sum, rounded["agg"].grad_sum), how
        assert result.count == 600 and result.correct == exact.correct
    # Each of the 3 partial sums is rounded once to float32: at most 3 half-ulps of its size apart.
    error = np.abs(rounded["agg"].grad_sum - exact.grad_sum)
    assert 0 < error.max() <= 3 * 2.0**-24 * np.abs(exact.grad_sum).max()
    assert rounded["agg"].loss_sum == pytest.approx(exact.loss_sum, rel=1e-6)


@pytest.mark.parametrize("schedule", ["classic", "minibatch", "average", "auto"])
def test_every_schedule_trains_the_same_bits_with_sharded_sums(spark, mnist_rows, schedule):
    images, labels = mnist_rows
    df = to_dataframe(spark, images, labels, num_partitions=3)
    runs = {}
    for aggregate in ("agg", "sharded"):
        config = TrainConfig(hidden=(32,), epochs=2, schedule=schedule, aggregate=aggregate, dtype="float64",
                             batch_size=200 if schedule == "minibatch" else None, seed=6, dropout=0.1)
        runs[aggregate] = fit(df, config, verbose=False)
    assert runs["sharded"].schedule_plan["aggregate"] == "sharded"
    assert np.array_equal(runs["sharded"].params, runs["agg"].params)
    assert [r["loss"] for r in runs["sharded"].history] == [r["loss"] for r in runs["agg"].history]


def test_a_diverged_sharded_step_is_stopped_by_name(spark, mnist_rows):
    images, labels = mnist_rows
    df = to_dataframe(spark, images, labels, num_partitions=2)
    config = TrainConfig(hidden=(32,), schedule="classic", aggregate="sharded", optimizer="sgd", lr=1e30,
                         lr_schedule="constant", epochs=3)
    with pytest.raises(TrainingDivergedError, match=r"diverged at epoch 2, step 1: the loss or gradient is NaN"):
        fit(df, config, verbose=False)


def test_the_first_line_says_how_the_sums_are_added_and_why(spark, mnist_rows, capsys):
    images, labels = mnist_rows
    fit(to_dataframe(spark, images[:200], labels[:200], num_partitions=2),
        TrainConfig(hidden=(8,), epochs=1, aggregate="sharded", partial_dtype="float32"), verbose=True)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("Schedule auto") and "sums: sharded over 1 reduce task, float32 partials (as asked)" in first


def test_auto_collects_small_steps_and_shards_large_ones_across_executors():
    one_machine, cluster = ClusterShape(slots=8, single_machine=True), ClusterShape(slots=128, single_machine=False)
    small, large = 50_893, 4_000_013
    assert resolve_aggregate("auto", 4, small, one_machine)[0] == PartialLayout("collect")
    assert resolve_aggregate("auto", 8, large, one_machine)[0] == PartialLayout("collect")  # 32M <= COLLECT_LIMIT
    assert resolve_aggregate("auto", 9, large, one_machine)[0] == PartialLayout("sharded", 8)
    assert resolve_aggregate("auto", 4, small, cluster)[0] == PartialLayout("collect")
    layout, why = resolve_aggregate("auto", 128, 235_149, cluster)
    assert layout == PartialLayout("sharded", shards_for(235_149, 128)) and layout.shards == 115
    assert "across executors" in why
    assert resolve_aggregate("auto", 1, large, cluster)[0].how == "collect"  # one task: nothing to add
    assert resolve_aggregate("auto", 4, large, cluster)[0] == PartialLayout("collect")  # 16M values
    assert resolve_aggregate("auto", 32, 235_149, cluster)[0] == PartialLayout("collect")
    assert resolve_aggregate("auto", 5_000, 5_000, cluster)[0] == PartialLayout("sharded", 3)
    one_slot = ClusterShape(slots=1, single_machine=False)
    assert resolve_aggregate("auto", 5_000, 5_000, one_slot)[0] == PartialLayout("agg")  # one shard: one reduce task
    assert resolve_aggregate("agg", 128, large, cluster)[0] == PartialLayout("agg")
    assert resolve_aggregate("sharded", 2, small, cluster, "float32")[0] == PartialLayout("sharded", 2, "float32")
    assert CLUSTER_COLLECT_LIMIT < COLLECT_LIMIT


def test_rdd_engines_refuse_sharded_and_float32_partials():
    from dfnet.errors import ConfigError
    with pytest.raises(ConfigError, match="aggregate='sharded' applies to the dataframe engine"):
        TrainConfig(engine="rdd", aggregate="sharded").validate()
    with pytest.raises(ConfigError, match="partial_dtype='float32' applies to the dataframe engine"):
        TrainConfig(engine="rdd-batched", partial_dtype="float32").validate()
    with pytest.raises(ConfigError, match="partial_dtype='float16'"):
        TrainConfig(partial_dtype="float16").validate()


@pytest.mark.parametrize("patches", ["inline", "explode"])
def test_a_cnn_trains_the_same_bits_with_every_aggregation(spark, patches):
    images, labels = load_arrays("digits", "train")
    df = to_dataframe(spark, images[:400], labels[:400], max_value=16.0, num_partitions=4)
    params = {}
    for aggregate in ("collect", "agg", "sharded"):
        # 36 x 256 dense weights after one 4-filter block: 12,086 values, two shards
        config = TrainConfig(model="cnn", kernels=(4,), hidden=(256,), epochs=2, schedule="minibatch",
                             batch_size=200, patches=patches, aggregate=aggregate, dtype="float64", seed=8)
        model = fit(df, config, verbose=False)
        assert model.schedule_plan["aggregate"] == aggregate
        params[aggregate] = model.params
    assert np.array_equal(params["sharded"], params["agg"]) and np.array_equal(params["collect"], params["agg"])
