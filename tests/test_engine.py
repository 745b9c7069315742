"""The DataFrame engine against the single-process numpy computation on the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from jobcount import jobs_run_by

from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.engine.data import decode_images, encode_training_data
from dfnet.engine.dataframe import DataFrameEngine
from dfnet.nn import build_mlp
from dfnet.optim import make_optimizer
from dfnet.schedules import gradient_steps
from dfnet.train import fit


@pytest.fixture(scope="module")
def mnist_rows(shared_data):
    """600 real MNIST training digits of all ten classes, scaled as dfnet scales them."""
    images, labels = load_arrays("mnist", "train", shared_data)
    pick = np.random.default_rng(0).choice(len(labels), 600, replace=False)
    return images[pick], labels[pick]


@pytest.mark.parametrize("partitions,aggregate", [(1, "agg"), (2, "agg"), (7, "agg"), (2, "collect"), (7, "collect")])
def test_engine_gradient_equals_numpy_gradient(spark, mnist_rows, partitions, aggregate):
    images, labels = mnist_rows
    df = to_dataframe(spark, images, labels)
    net = build_mlp(784, [32], 10, activation="tanh", dtype="float64")
    params = net.init_params(1, "xavier")
    data = encode_training_data(df, features_col="image", label_col="label", num_features=784,
                                dtype="float64", num_partitions=partitions)
    try:
        assert data.frame.rdd.getNumPartitions() == partitions
        result = DataFrameEngine(net, aggregate).gradient(params, data.frame)
        empty = DataFrameEngine(net, aggregate).gradient(params, data.frame.filter("_label < 0"))
    finally:
        data.release()
    # Independent computation: the same float32 pixels, in one process.
    X = (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32).astype(np.float64)
    reference = net.loss_and_grad(params, X, labels)
    assert result.count == 600
    assert result.correct == reference.correct
    assert result.loss_sum == pytest.approx(reference.loss_sum, rel=1e-10)
    scale = np.abs(reference.grad_sum).max()
    assert np.abs(result.grad_sum - reference.grad_sum).max() <= 1e-10 * scale
    assert empty.count == 0 and empty.loss_sum == 0 and not empty.grad_sum.any()


def test_encoding_round_trips_pixels_exactly(spark, mnist_rows):
    images, labels = mnist_rows
    df = to_dataframe(spark, images[:50], labels[:50])
    data = encode_training_data(df, features_col="image", label_col="label", num_features=784, dtype="float32")
    try:
        pdf = data.frame.toPandas().sort_values("_row")
    finally:
        data.release()
    decoded = decode_images(pdf["_x"], 784, "float32")
    expected = np.stack(df.orderBy("id").toPandas()["image"].to_numpy()).astype(np.float32)
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(pdf["_label"].to_numpy(), labels[:50])


@pytest.mark.parametrize("schedule", ["classic", "minibatch"])
def test_one_epoch_of_fit_equals_numpy_steps_on_the_same_rows(spark, mnist_rows, schedule):
    """fit() on Spark == a numpy loop over the very rows each step selected (float64)."""
    images, labels = mnist_rows
    images, labels = images[:300], labels[:300]
    df = to_dataframe(spark, images, labels, num_partitions=3)
    config = TrainConfig(lr_schedule="constant", hidden=(16,), activation="sigmoid", loss="mse", optimizer="adam", lr=0.01, epochs=2,
                         schedule=schedule, sample=0.7, batch_size=50, dtype="float64", seed=3)
    net = build_mlp(784, [16], 10, activation="sigmoid", loss="mse", dtype="float64")
    start = net.init_params(4, "uniform")
    model = fit(df, config, network=net, initial_params=start, verbose=False)

    # Replay: recover each step's rows from the same schedule, then step in numpy.
    data = encode_training_data(df, features_col="image", label_col="label", num_features=784, dtype="float64")
    try:
        params = start.copy()
        optimizer = make_optimizer("adam", 0.01)
        for epoch in (1, 2):
            for rows in gradient_steps(data, config, epoch):
                pdf = rows.toPandas()
                if len(pdf) == 0:
                    continue
                X = decode_images(pdf["_x"], 784, "float64")
                step = net.loss_and_grad(params, X, pdf["_label"].to_numpy())
                optimizer.step(params, step.grad_sum / step.count)
    finally:
        data.release()
    np.testing.assert_allclose(model.params, params, rtol=1e-9, atol=1e-12)
    assert [h["epoch"] for h in model.history] == [1, 2]
    # A 0.7 sample of 300 rows: Spark's Bernoulli sampling gives about 210 rows.
    assert 150 < model.history[0]["rows"] < 270


@pytest.mark.parametrize("schedule", ["classic", "minibatch"])
def test_all_engines_and_numpy_give_the_same_weights_after_an_epoch(spark, mnist_rows, schedule):
    """DataFrame engine, RDD per-record, RDD mapPartitions and single-process numpy: same start,
    same rows, same weights after an epoch (float64, 1e-9 relative)."""
    images, labels = mnist_rows
    images, labels = images[:120], labels[:120]
    df = to_dataframe(spark, images, labels, num_partitions=2)
    net = build_mlp(784, [12], 10, activation="sigmoid", loss="mse", dtype="float64")
    start = net.init_params(7, "uniform")
    # sample=1.0: every engine's epoch sees all rows (the engines draw samples and batches their
    # own way); the minibatch case still runs several dependent steps.
    config = TrainConfig(lr_schedule="constant", hidden=(12,), activation="sigmoid", loss="mse", optimizer="momentum", lr=0.05,
                         epochs=1, schedule=schedule, batch_size=120 if schedule == "minibatch" else 64,
                         dtype="float64")
    weights = {engine: fit(df, config.replace(engine=engine), network=net, initial_params=start,
                           verbose=False).params
               for engine in ("dataframe", "rdd", "rdd-batched")}
    X = (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32).astype(np.float64)
    reference = start.copy()
    step = net.loss_and_grad(reference, X, labels)
    make_optimizer("momentum", 0.05).step(reference, step.grad_sum / step.count)
    for engine, params in weights.items():
        np.testing.assert_allclose(params, reference, rtol=1e-9, atol=1e-12, err_msg=engine)


@pytest.mark.parametrize("engine", ["rdd", "rdd-batched"])
def test_rdd_engine_gradients_equal_numpy_on_real_digits(spark, mnist_rows, engine):
    from dfnet.engine import make_engine

    images, labels = mnist_rows
    images, labels = images[:90], labels[:90]
    net = build_mlp(784, [16, 8], 10, activation="relu", dtype="float64")
    params = net.init_params(2, "he")
    impl = make_engine(engine, net)
    data = impl.prepare(to_dataframe(spark, images, labels, num_partitions=3), features_col="image",
                        label_col="label")
    try:
        result = impl.gradient(params, data.all_rows())
        empty = impl.gradient(params, data.batch(data.all_rows(), 0, 1, 0).filter(lambda r: False))
    finally:
        data.release()
    X = (images.reshape(90, -1) / np.float32(255)).astype(np.float32).astype(np.float64)
    reference = net.loss_and_grad(params, X, labels)
    assert (result.count, result.correct) == (90, reference.correct)
    assert result.loss_sum == pytest.approx(reference.loss_sum, rel=1e-10)
    np.testing.assert_allclose(result.grad_sum, reference.grad_sum, rtol=1e-9, atol=1e-12)
    assert empty.count == 0 and not empty.grad_sum.any()


def test_model_averaging_epoch_equals_an_independent_numpy_replay(spark, mnist_rows):
    """--schedule average: each partition trains locally from the broadcast weights over its
    own rows; the driver takes the row-weighted mean. Replayed in numpy partition by partition."""
    from pyspark.sql import functions as F

    images, labels = mnist_rows
    images, labels = images[:200], labels[:200]
    df = to_dataframe(spark, images, labels, num_partitions=2)
    net = build_mlp(784, [10], 10, activation="tanh", dtype="float64")
    start = net.init_params(5, "xavier")
    config = TrainConfig(lr_schedule="constant", hidden=(10,), activation="tanh", optimizer="adam", lr=0.01, epochs=2, schedule="average",
                         batch_size=16, local_steps=3, dtype="float64", seed=9)
    model = fit(df, config, network=net, initial_params=start, verbose=False)

    data = encode_training_data(df, features_col="image", label_col="label", num_features=784, dtype="float64")
    try:
        pdf = data.frame.withColumn("p", F.spark_partition_id()).toPandas()
    finally:
        data.release()
    parts = {p: (decode_images(g["_x"], 784, "float64"), g["_label"].to_numpy()) for p, g in pdf.groupby("p")}
    params = start.copy()
    rounds = -(-max(len(y) for _, y in parts.values()) // 16)  # local steps of the largest partition
    rounds = -(-rounds // 3)
    assert model.history[0]["steps"] == rounds
    for epoch in (1, 2):
        for r in range(rounds):
            weighted, used_total = np.zeros_like(params), 0
            for p, (X, y) in parts.items():
                order = np.random.default_rng([9, epoch, p]).permutation(len(y))[r * 48:(r + 1) * 48]
                if len(order) == 0:
                    continue
                local, opt = params.copy(), make_optimizer("adam", 0.01)
                for s in range(0, len(order), 16):
                    rows = order[s:s + 16]
                    step = net.loss_and_grad(local, X[rows], y[rows])
                    opt.step(local, step.grad_sum / step.count)
                weighted += local * len(order)
                used_total += len(order)
            params = weighted / used_total
    np.testing.assert_allclose(model.params, params, rtol=1e-9, atol=1e-12)
    assert model.history[0]["rows"] == 200


def test_model_averaging_learns_mnist_0_vs_1(spark, shared_data):
    from dfnet.datasets import load_dataframe

    train = load_dataframe(spark, "mnist", "train", data_dir=shared_data, classes=[0, 1])
    test = load_dataframe(spark, "mnist", "test", data_dir=shared_data, classes=[0, 1])
    model = fit(train, TrainConfig(schedule="average", epochs=3, partitions=2), verbose=False)
    assert all(h["steps"] == 1 for h in model.history)  # one Spark job per epoch
    assert model.evaluate(test).accuracy >= 0.995


def test_pixels_are_stored_as_bytes_only_when_that_is_exact():
    import pyarrow as pa

    from dfnet.engine.data import decode_arrow_images, pack_pixels

    f32 = np.dtype("float32")
    levels = np.arange(256, dtype=np.uint8)
    eight_bit = np.divide(levels, 255, dtype=np.float32)  # how to_dataframe scales IDX pixels
    assert pack_pixels(eight_bit, f32).dtype == np.uint8
    # one value a single float32 ulp away from a level: must stay float
    nudged = eight_bit.copy()
    nudged[7] = np.nextafter(nudged[7], np.float32(1))
    assert pack_pixels(nudged, f32).dtype == np.float32
    assert pack_pixels(np.array([0.5, 1.5], dtype=np.float32), f32).dtype == np.float32
    # float32 levels seen by a float64 network are not k/255 in float64: stored as float64
    assert pack_pixels(eight_bit.astype(np.float64), np.dtype("float64")).dtype == np.float64

    # A batch mixing both encodings decodes row by row to the exact values.
    rows = [pack_pixels(eight_bit[:4], f32), pack_pixels(nudged[4:8], f32), pack_pixels(eight_bit[8:12], f32)]
    mixed = pa.array([r.tobytes() for r in rows], type=pa.binary())
    decoded = decode_arrow_images(mixed, 4, "float32")
    np.testing.assert_array_equal(decoded, np.stack([eight_bit[:4], nudged[4:8], eight_bit[8:12]]))
    with pytest.raises(ValueError, match="expected 4 \\(uint8\\) or 16"):
        decode_arrow_images(pa.array([b"abc", b"abcd"], type=pa.binary()), 4, "float32")


def test_a_partition_of_byte_and_float_batches_reads_back_exact_pixels():
    """The averaging pass concatenates a partition's batches as stored: a uint8 batch beside a
    float batch must become pixels first, never float levels 0..255."""
    import pyarrow as pa

    from dfnet.engine.data import LABEL_COL, ROW_COL, X_COL, ImageRows, as_pixels, pack_pixels
    from dfnet.engine.dataframe import decode_partition

    f32 = np.dtype("float32")
    eight_bit = np.divide(np.arange(12, dtype=np.uint8), 255, dtype=np.float32).reshape(3, 4)
    floats = np.full((2, 4), 0.3, dtype=np.float32)

    def batch(X):
        packed = pa.array([pack_pixels(x, f32).tobytes() for x in X], type=pa.binary())
        return pa.RecordBatch.from_arrays([pa.array(np.arange(len(X))), packed, pa.array(np.zeros(len(X), np.int32))],
                                          names=[ROW_COL, X_COL, LABEL_COL])

    rows = ImageRows(4, "float32")
    stored, _, _ = decode_partition(rows, iter([batch(eight_bit)]))
    assert stored.dtype == np.uint8  # one encoding: kept as stored, converted per chunk
    np.testing.assert_array_equal(as_pixels(stored, "float32"), eight_bit)
    inputs, labels, keys = decode_partition(rows, iter([batch(eight_bit), batch(floats)]))
    np.testing.assert_array_equal(inputs, np.concatenate([eight_bit, floats]))
    assert len(labels) == 5


def test_engine_on_arbitrary_float_images_equals_numpy(spark):
    """Images that are not 8-bit levels take the float encoding and still match numpy."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((150, 20)).astype(np.float32)
    y = rng.integers(0, 3, 150)
    df = spark.createDataFrame([(i, X[i].tolist(), int(y[i])) for i in range(150)],
                               "id long, image array<float>, label int")
    net = build_mlp(20, [6], 3, dtype="float32")
    params = net.init_params(0)
    data = encode_training_data(df, features_col="image", label_col="label", num_features=20, dtype="float32",
                                num_partitions=2)
    try:
        assert len(data.frame.first()["_x"]) == 80  # 4 bytes a pixel
        result = DataFrameEngine(net).gradient(params, data.frame)
    finally:
        data.release()
    reference = net.loss_and_grad(params, X, y)
    np.testing.assert_allclose(result.grad_sum, reference.grad_sum, rtol=1e-4, atol=1e-5)
    assert result.correct == reference.correct




@pytest.mark.parametrize("user_setting", ["true", "false", None])
def test_a_step_is_one_job_and_leaves_the_sessions_aqe_setting_as_it_was(spark, mnist_rows, user_setting):
    images, labels = mnist_rows
    net = build_mlp(784, [8], 10, dtype="float64")
    data = encode_training_data(to_dataframe(spark, images[:50], labels[:50]), features_col="image",
                                label_col="label", num_features=784, dtype="float64", num_partitions=2)
    key = "spark.sql.adaptive.enabled"
    before = spark.conf.get(key, None)
    try:
        if user_setting is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, user_setting)
        engine = DataFrameEngine(net)
        assert jobs_run_by(spark, lambda: engine.gradient(net.init_params(0), data.frame)) == 1
        expected = spark.conf.get(key, None) if user_setting is None else user_setting
        assert spark.conf.get(key, None) == expected
        if user_setting == "true":
            # The same aggregation under the user's AQE would have been two jobs.
            two = data.frame.groupBy().count()
            assert jobs_run_by(spark, two.collect) == 2
    finally:
        data.release()
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
