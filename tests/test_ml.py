"""The Spark ML API (DFNetClassifier / DFNetModel) on real MNIST digits, in real Spark.

Predictions are checked against independent numpy forward passes and
scikit-learn metrics; persistence round trips go through Spark I/O and are
compared bit for bit. Every fit uses the averaging schedule (one Spark job per
epoch) on 1,000 digits, so the file stays fast.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pydoc
import re

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, ParamGridBuilder
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy.special import log_softmax
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from jobcount import jobs_run_by

from dfnet import DFNetClassifier, DFNetModel, TrainedModel
from dfnet.cli import main as cli_main
from dfnet.config import TrainConfig, field_help
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.evaluate import COLUMNAR_UDF_INPUT
from dfnet.errors import ConfigError, DataValidationError, ModelFormatError, OutputExistsError
from dfnet.ml.params import NOT_PARAMS, PARAM_FIELDS
from dfnet.nn import build_cnn, build_mlp

TRAIN_ROWS, TEST_ROWS = 1000, 500
MLP = [784, 32, 10]


@pytest.fixture(scope="module")
def digits(shared_data):
    """1,000 MNIST training digits (100 of each, shuffled: the shared subset is sorted by digit) and the
    first 500 test digits, as numpy: float32 pixels in [0, 1], int labels."""
    def scaled(images, rows):
        return (images[rows].reshape(len(rows), -1) / np.float32(255)).astype(np.float32)
    images, labels = load_arrays("mnist", "train", shared_data)
    rows = np.random.default_rng(0).permutation(
        np.concatenate([np.flatnonzero(labels == d)[:TRAIN_ROWS // 10] for d in range(10)]))
    test_images, test_labels = load_arrays("mnist", "test", shared_data)
    first = np.arange(TEST_ROWS)
    return (scaled(images, rows), labels[rows]), (scaled(test_images, first), test_labels[first])


def as_frame(spark, X, y):
    """``(id, image array<float>, label int, pixels vector)``, cached; the same pixels three ways."""
    df = to_dataframe(spark, X, y, max_value=1.0)  # X is already scaled
    return df.withColumn("pixels", array_to_vector("image")).cache()


@pytest.fixture(scope="module")
def frames(spark, digits):
    (Xtr, ytr), (Xte, yte) = digits
    train, test = as_frame(spark, Xtr, ytr), as_frame(spark, Xte, yte)
    assert train.count() == TRAIN_ROWS and test.count() == TEST_ROWS  # fill the caches now, not in a test's jobs
    yield train, test
    train.unpersist()
    test.unpersist()


def stage_of(pipeline_model):
    [model] = [s for s in pipeline_model.stages if isinstance(s, DFNetModel)]
    return model


@pytest.fixture(scope="module")
def pipeline_model(frames):
    """SQLTransformer (labels to double) -> VectorAssembler (vector features) -> DFNetClassifier,
    float64 so that comparisons with numpy are exact."""
    train, _ = frames
    pipeline = Pipeline(stages=[
        SQLTransformer(statement="SELECT id, image, pixels, CAST(label AS DOUBLE) AS label FROM __THIS__"),
        VectorAssembler(inputCols=["pixels"], outputCol="features"),
        DFNetClassifier(layers=MLP, maxIter=5, schedule="average", dtype="float64", seed=3),
    ])
    return pipeline.fit(train)


def numpy_scores(model: DFNetModel, X: np.ndarray):
    """Logits and softmax probabilities of a 784-h-10 ReLU MLP, written out in numpy from the weights."""
    (W1, b1), (W2, b2) = [v for v in model.network.unflatten(model.trained_model.params) if v]
    X = X.astype(model.network.dtype)
    logits = (np.maximum(X @ W1 + b1, 0) @ W2 + b2).astype(np.float64)
    probability = np.exp(log_softmax(logits, axis=1))
    return logits, probability


def collect_sorted(df, *cols):
    rows = df.orderBy("id").select(*cols).collect()
    return {c: [r[c] for r in rows] for c in cols}


# --- Pipeline, outputs, evaluators --------------------------------------------------------

@pytest.mark.journey
def test_pipeline_output_matches_numpy_and_survives_save_and_load(pipeline_model, frames, digits, tmp_path):
    _, test = frames
    _, (Xte, _) = digits
    out = pipeline_model.transform(test)
    types = {f.name: f.dataType for f in out.schema.fields}
    assert isinstance(types["rawPrediction"], VectorUDT) and isinstance(types["probability"], VectorUDT)
    assert types["prediction"] == T.DoubleType()
    got = collect_sorted(out, "prediction", "probability", "rawPrediction")

    logits, probability = numpy_scores(stage_of(pipeline_model), Xte)
    np.testing.assert_allclose(np.array([v.toArray() for v in got["probability"]]), probability, rtol=1e-9,
                               atol=1e-15)
    np.testing.assert_array_equal(got["prediction"], np.argmax(logits, axis=1).astype(float))
    # rawPrediction: the log-probabilities (log-softmax of the logits).
    np.testing.assert_allclose(np.array([v.toArray() for v in got["rawPrediction"]]),
                               log_softmax(logits, axis=1), rtol=1e-9, atol=1e-12)

    path = str(tmp_path / "pipeline")
    pipeline_model.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    assert collect_sorted(loaded.transform(test), "prediction", "probability", "rawPrediction") == got
    original, reloaded = stage_of(pipeline_model), stage_of(loaded)
    assert reloaded.uid == original.uid and reloaded.getLayers() == MLP and reloaded.getMaxIter() == 5
    np.testing.assert_array_equal(reloaded.trained_model.params, original.trained_model.params)
    assert reloaded.history == original.history and len(reloaded.history) == 5


def test_saved_model_is_plain_spark_data(pipeline_model, spark, tmp_path):
    """Metadata as one JSON text line and the weights as a Parquet array<double> row: readable by Spark alone."""
    model = stage_of(pipeline_model)
    path = tmp_path / "model"
    model.write().save(str(path))
    data, metadata = sorted(p for p in os.listdir(path) if not p.startswith("."))
    assert metadata == "metadata" and re.fullmatch(r"data-\d+-[0-9a-f]{8}", data)
    [meta] = spark.read.json(str(path / "metadata")).collect()
    assert meta["class"] == "dfnet.ml.DFNetModel" and meta["numFeatures"] == 784 and meta["numClasses"] == 10
    assert meta["dataPath"] == data
    [row] = spark.read.parquet(str(path / data)).collect()
    assert dict(spark.read.parquet(str(path / data)).dtypes)["weights"] == "array<double>"
    assert json.loads(row["metadata"])["uid"] == meta["uid"]  # the row can stand for the metadata
    np.testing.assert_array_equal(np.array(row["weights"]), model.trained_model.params)


def test_multiclass_evaluator_agrees_with_dfnet_and_numpy(pipeline_model, frames, digits):
    _, test = frames
    _, (Xte, yte) = digits
    out = pipeline_model.transform(test).cache()
    model = stage_of(pipeline_model)

    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(out)
    dfnet_accuracy = model.trained_model.evaluate(test, features_col="image").accuracy
    logits, probability = numpy_scores(model, Xte)
    numpy_accuracy = np.sum(np.argmax(logits, axis=1) == yte) / len(yte)
    assert accuracy == dfnet_accuracy == numpy_accuracy
    assert 0.7 < accuracy < 1.0  # a model that learned (chance: 0.1), on digits it never saw

    predicted = np.argmax(logits, axis=1)
    f1 = MulticlassClassificationEvaluator(metricName="f1").evaluate(out)
    assert f1 == pytest.approx(f1_score(yte, predicted, average="weighted"), rel=1e-12)
    loss = MulticlassClassificationEvaluator(metricName="logLoss").evaluate(out)  # reads probabilityCol
    assert loss == pytest.approx(log_loss(yte, probability, labels=range(10)), rel=1e-9)
    out.unpersist()


def test_binary_auc_from_raw_prediction_equals_auc_from_probability(frames):
    """3 vs 5: rawPrediction[1] (a log-probability) ranks rows exactly as probability[1] does."""
    train, test = frames
    pick = lambda df: (df.where(F.col("label").isin(3, 5))  # noqa: E731
                         .withColumn("label", (F.col("label") == 5).cast("double")))
    model = DFNetClassifier(featuresCol="image", layers=[784, 8, 2], maxIter=2, schedule="average",
                            dtype="float64", seed=2).fit(pick(train))
    out = model.transform(pick(test)).cache()
    auc = {col: BinaryClassificationEvaluator(rawPredictionCol=col).evaluate(out)
           for col in ("rawPrediction", "probability")}
    rows = out.select("label", "probability").collect()
    expected = roc_auc_score([r["label"] for r in rows], [r["probability"][1] for r in rows])
    assert auc["rawPrediction"] == auc["probability"] == pytest.approx(expected, rel=1e-12)
    assert 0.7 < expected < 1.0  # a ranking worth comparing (chance: 0.5)
    out.unpersist()


# --- inputs ---------------------------------------------------------------------------------

def test_float_double_and_vector_features_train_to_identical_models(frames):
    train, test = frames
    features = {"array<float>": F.col("image"), "array<double>": F.col("image").cast("array<double>"),
                "vector": F.col("pixels")}
    weights, predictions = {}, {}
    for kind, column in features.items():
        data = train.select("id", column.alias("features"), F.col("label").cast("double").alias("label"))
        assert data.schema["features"].dataType.simpleString() == kind
        model = DFNetClassifier(layers=[784, 16, 10], maxIter=1, schedule="average", seed=5).fit(data)
        weights[kind] = model.trained_model.params
        scored = model.transform(test.select("id", column.alias("features")))
        predictions[kind] = collect_sorted(scored, "prediction", "probability")
    for kind in ("array<double>", "vector"):
        np.testing.assert_array_equal(weights[kind], weights["array<float>"])
        assert predictions[kind] == predictions["array<float>"]


def test_architecture_json_trains_a_cnn(frames, digits):
    train, test = frames
    _, (Xte, _) = digits
    network = build_cnn((28, 28, 1), [(4, 5)], n_out=10, dtype="float32")
    model = DFNetClassifier(featuresCol="image", architecture=network.to_json(), layers=[784, 99, 10],
                            maxIter=1, schedule="average", seed=1).fit(train)
    assert model.network.to_config() == network.to_config()  # architecture wins over layers
    got = collect_sorted(model.transform(test), "prediction", "probability")
    expected = model.network.forward(model.trained_model.params, Xte)
    np.testing.assert_allclose([v.toArray() for v in got["probability"]], expected, rtol=1e-5, atol=1e-7)
    assert np.mean(np.array(got["prediction"]) == np.argmax(expected, axis=1)) > 0.99  # float32 near-ties only


# --- tuning ------------------------------------------------------------------------------------

def test_copy_with_extra_params_leaves_the_original_alone(pipeline_model, frames):
    estimator = DFNetClassifier(layers=MLP, stepSize=0.01)
    copied = estimator.copy({estimator.stepSize: 0.5, estimator.maxIter: 7})
    assert (copied.getStepSize(), copied.getMaxIter()) == (0.5, 7)
    assert (estimator.getStepSize(), estimator.getMaxIter()) == (0.01, 30)
    assert copied.train_config().lr == 0.5 and copied.train_config().epochs == 7

    model = stage_of(pipeline_model)
    _, test = frames
    renamed = model.copy({model.predictionCol: "digit", model.probabilityCol: ""})
    out = renamed.transform(test.withColumnRenamed("pixels", "features"))
    assert "digit" in out.columns and "probability" not in out.columns and "rawPrediction" in out.columns
    assert model.getPredictionCol() == "prediction"


def test_cross_validator_picks_the_step_size_that_learns(frames):
    train, _ = frames
    data = train.select("id", F.col("pixels").alias("features"), F.col("label").cast("double").alias("label"))
    estimator = DFNetClassifier(layers=[784, 16, 10], maxIter=1, schedule="average", seed=4)
    grid = ParamGridBuilder().addGrid(estimator.stepSize, [1e-6, 0.01]).build()
    cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, numFolds=2, seed=7,
                        evaluator=MulticlassClassificationEvaluator(metricName="accuracy"))
    fitted = cv.fit(data)
    assert isinstance(fitted, CrossValidatorModel) and isinstance(fitted.bestModel, DFNetModel)
    low, high = fitted.avgMetrics
    assert high > low + 0.2  # each fold model really got its own step size
    assert fitted.bestModel.getStepSize() == 0.01 and fitted.bestModel.trained_model.config.lr == 0.01


# --- persistence ----------------------------------------------------------------------------------

def test_cli_run_folder_loads_like_trained_model_load(spark, tmp_path):
    run = tmp_path / "run"
    assert cli_main(["train", "--dataset", "digits", "--epochs", "2", "--schedule", "average",
                     "--output", str(run), "--no-progress"]) == 0
    native = TrainedModel.load(run / "model")
    model = DFNetModel.load(str(run / "model"))
    np.testing.assert_array_equal(model.trained_model.params, native.params)
    assert model.network.to_config() == native.network.to_config()
    assert model.trained_model.class_names == native.class_names and model.history == native.history
    assert (model.getMaxIter(), model.getSchedule(), model.getLayers()) == (2, "average", [64, 128, 10])

    images, labels = load_arrays("digits", "test")
    df = to_dataframe(spark, images, labels, max_value=16.0)
    ml_rows = collect_sorted(model.setFeaturesCol("image").transform(df), "prediction", "probability")
    native_rows = collect_sorted(native.predict(df), "prediction", "probability")
    assert ml_rows["prediction"] == [float(p) for p in native_rows["prediction"]]
    assert [list(v) for v in ml_rows["probability"]] == native_rows["probability"]

    with pytest.raises(ModelFormatError, match=r"the model of a dfnet run folder is in .*run/model"):
        DFNetModel.load(str(run))


def test_save_refuses_an_existing_path_and_overwrite_replaces_it(pipeline_model, tmp_path):
    first = stage_of(pipeline_model)
    trained = first.trained_model
    second = DFNetModel.from_trained(TrainedModel(trained.network, trained.params * 0.5, trained.config))
    path = "file://" + str(tmp_path / "model")  # a URI, as on a cluster
    first.write().save(path)

    with pytest.raises(OutputExistsError, match="already exists; use write\\(\\).overwrite\\(\\)"):
        second.write().save(path)
    np.testing.assert_array_equal(DFNetModel.load(path).trained_model.params, trained.params)

    second.write().overwrite().save(path)
    np.testing.assert_array_equal(DFNetModel.load(path).trained_model.params, trained.params * 0.5)
    assert os.listdir(tmp_path) == ["model"]  # no staging folder left behind


def test_a_failed_overwrite_leaves_the_old_model(pipeline_model, tmp_path):
    first = stage_of(pipeline_model)
    path = str(tmp_path / "model")
    first.write().save(path)
    trained = first.trained_model
    unsaveable = DFNetModel.from_trained(TrainedModel(trained.network, trained.params * 0.5, trained.config,
                                                      history=[{"loss": np.float32(0.5)}]))  # not JSON
    with pytest.raises(TypeError, match="not JSON serializable"):
        unsaveable.write().overwrite().save(path)  # fails after its metadata was written
    np.testing.assert_array_equal(DFNetModel.load(path).trained_model.params, trained.params)
    assert os.listdir(tmp_path) == ["model"]


def test_estimator_saves_and_loads_its_params(spark, tmp_path):
    estimator = DFNetClassifier(layers=MLP, stepSize=0.003, schedule="average", featuresCol="pixels",
                                thresholds=[1.0] * 10, beta1=0.8, aggregate="collect", patience=4)
    path = str(tmp_path / "estimator")
    estimator.write().save(path)
    loaded = DFNetClassifier.load(path)
    assert loaded.uid == estimator.uid
    assert {p.name: v for p, v in loaded.extractParamMap().items()} == \
        {p.name: v for p, v in estimator.extractParamMap().items()}
    assert loaded.train_config() == estimator.train_config()
    assert (loaded.getBeta1(), loaded.getAggregate(), loaded.getPatience()) == (0.8, "collect", 4)
    with pytest.raises(OutputExistsError):
        estimator.write().save(path)
    with pytest.raises(ModelFormatError, match="holds a dfnet.ml.DFNetClassifier, not a dfnet.ml.DFNetModel"):
        DFNetModel.load(path)


def test_an_estimator_saved_before_the_params_were_generated_loads(spark, tmp_path):
    """The metadata line an earlier dfnet wrote (hand-written Params, MLlib's HasMaxIter/HasSeed mixins)."""
    defaults = {"featuresCol": "features", "labelCol": "label", "predictionCol": "prediction",
                "probabilityCol": "probability", "rawPredictionCol": "rawPrediction", "maxIter": 30, "seed": 0,
                "optimizer": "adam", "lrSchedule": "cosine", "schedule": "auto", "sampleFraction": 1.0,
                "activation": "relu", "loss": "cross-entropy", "weightInit": "auto", "dtype": "float32",
                "weightDecay": 0.0, "dropout": 0.0, "validationSplit": 0.0, "minDelta": 0.0, "verbose": False,
                "mlflow": False}
    params = {"layers": MLP, "maxIter": 5, "stepSize": 0.01, "batchSize": 64, "weightInit": "he", "patience": 3}
    metadata = {"class": "dfnet.ml.DFNetClassifier", "timestamp": 1, "sparkVersion": "4.0.0",
                "uid": "DFNetClassifier_0123456789ab", "paramMap": params, "defaultParamMap": defaults}
    path = str(tmp_path / "earlier")
    spark.createDataFrame([(json.dumps(metadata),)], "value string").write.text(path + "/metadata")
    loaded = DFNetClassifier.load(path)
    assert {name: loaded.getOrDefault(name) for name in params} == params
    assert loaded.train_config() == TrainConfig(hidden=(32,), epochs=5, lr=0.01, batch_size=64, init="he",
                                                early_stopping=3)


def test_from_trained_and_trained_model_convert_both_ways(pipeline_model, frames):
    original = stage_of(pipeline_model)
    wrapped = DFNetModel.from_trained(original.trained_model, featuresCol="image")
    assert wrapped.trained_model is original.trained_model
    assert (wrapped.getFeaturesCol(), wrapped.getDtype(), wrapped.getSchedule()) == ("image", "float64", "average")
    _, test = frames
    row = test.orderBy("id").first()
    [scored] = wrapped.transform(test.where(F.col("id") == row["id"])).collect()
    assert wrapped.predict(row["pixels"]) == scored["prediction"]
    np.testing.assert_allclose(wrapped.predictProbability(row["pixels"]).toArray(), scored["probability"].toArray(),
                               rtol=1e-12)
    np.testing.assert_allclose(wrapped.predictRaw(row["pixels"]).toArray(), scored["rawPrediction"].toArray(),
                               rtol=1e-12)


def test_thresholds_choose_the_largest_probability_over_threshold(pipeline_model, frames):
    model = stage_of(pipeline_model)
    test = frames[1].withColumnRenamed("pixels", "features")
    thresholds = [1.0] * 10
    thresholds[7] = 1e-6  # class 7 wins wherever its probability is not negligible
    out = collect_sorted(model.copy({model.thresholds: thresholds}).transform(test), "prediction", "probability")
    probability = np.array([v.toArray() for v in out["probability"]])
    np.testing.assert_array_equal(out["prediction"], np.argmax(probability / np.array(thresholds), axis=1))
    with pytest.raises(ConfigError, match="thresholds=.*one value per class \\(10\\)"):
        model.copy({model.thresholds: [0.5, 0.5]}).transform(test)


@pytest.fixture
def vectors_in_parquet(frames, spark, tmp_path):
    """50 test digits as (id, features vector) in Parquet, with Spark 4.3's columnar pandas-UDF input on,
    as in a user's session (it fails on vector columns; dfnet must turn it off); the setting restored after."""
    test = frames[1].select("id", F.col("pixels").alias("features")).where(F.col("id") < 50)
    source = str(tmp_path / "source")
    test.write.parquet(source)
    before = spark.conf.get(COLUMNAR_UDF_INPUT, None)
    spark.conf.set(COLUMNAR_UDF_INPUT, "true")
    yield test, source
    if before is None:  # Spark before 4.3 has no such setting
        spark.conf.unset(COLUMNAR_UDF_INPUT)
    else:
        spark.conf.set(COLUMNAR_UDF_INPUT, before)


def test_vectors_read_from_parquet_are_scored(pipeline_model, vectors_in_parquet, spark):
    model = stage_of(pipeline_model)
    test, source = vectors_in_parquet
    with pytest.warns(UserWarning, match=f"dfnet set {COLUMNAR_UDF_INPUT}=false"):
        scored = model.transform(spark.read.parquet(source)).select("id", "prediction", "probability")
    assert spark.conf.get(COLUMNAR_UDF_INPUT, None) == "false"
    assert collect_sorted(scored, "id", "prediction", "probability") == \
        collect_sorted(model.transform(test), "id", "prediction", "probability")


def test_streaming_dataframes_are_scored_like_batches(pipeline_model, vectors_in_parquet, spark):
    """transform() stays lazy on a stream (no validation job a stream could not run)."""
    model = stage_of(pipeline_model)
    test, source = vectors_in_parquet
    stream = spark.readStream.schema(test.schema).parquet(source)
    with pytest.warns(UserWarning, match=COLUMNAR_UDF_INPUT):
        scored = model.transform(stream).select("id", "prediction", "probability")
    query = (scored.writeStream
             .format("memory").queryName("dfnet_stream_test").trigger(availableNow=True).start())
    try:
        query.awaitTermination()
        streamed = collect_sorted(spark.table("dfnet_stream_test"), "id", "prediction", "probability")
    finally:
        query.stop()
        spark.catalog.dropTempView("dfnet_stream_test")
    assert streamed == collect_sorted(model.transform(test), "id", "prediction", "probability")
    assert len(streamed["id"]) == 50


def test_module_example_runs(spark, tmp_path):
    import doctest

    import dfnet.ml

    result = doctest.testmod(dfnet.ml, extraglobs={"spark": spark, "temp_path": str(tmp_path)},
                             optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0


# --- Params generated from TrainConfig -------------------------------------------------------------

#: A valid value other than the default for each TrainConfig field that has a Param.
NON_DEFAULT = {
    "epochs": 7, "lr": 0.02, "seed": 11, "optimizer": "momentum", "lr_schedule": "constant", "momentum": 0.5,
    "beta1": 0.8, "beta2": 0.99, "schedule": "minibatch", "batch_size": 64, "sample": 0.5, "local_steps": 4,
    "partitions": 3, "aggregate": "sharded", "partial_dtype": "float32", "activation": "tanh", "loss": "mse", "init": "he", "dtype": "float64",
    "weight_decay": 1e-4, "dropout": 0.25, "validation_split": 0.2, "early_stopping": 5, "min_delta": 0.01,
}
#: The Params every earlier dfnet had (saved estimators and users' code name them): Param -> field.
EARLIER_PARAMS = {
    "maxIter": "epochs", "stepSize": "lr", "seed": "seed", "optimizer": "optimizer", "lrSchedule": "lr_schedule",
    "schedule": "schedule", "batchSize": "batch_size", "sampleFraction": "sample", "localSteps": "local_steps",
    "activation": "activation", "loss": "loss", "weightInit": "init", "partitions": "partitions", "dtype": "dtype",
    "weightDecay": "weight_decay", "dropout": "dropout", "validationSplit": "validation_split",
    "patience": "early_stopping", "minDelta": "min_delta",
}


def test_every_train_config_field_has_a_param_or_a_reason():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(PARAM_FIELDS.values()) | set(NOT_PARAMS) == fields
    assert not set(PARAM_FIELDS.values()) & set(NOT_PARAMS)
    assert set(NON_DEFAULT) == set(PARAM_FIELDS.values())  # a new row needs a value here
    assert EARLIER_PARAMS.items() <= PARAM_FIELDS.items()


@pytest.mark.parametrize("name, field", PARAM_FIELDS.items())
def test_each_param_sets_its_train_config_field_and_back(name, field):
    value = NON_DEFAULT[field]
    estimator = DFNetClassifier(**{name: value})
    assert estimator.train_config() == TrainConfig(**{field: value})
    assert DFNetClassifier().setParams(**{name: value}).train_config() == TrainConfig(**{field: value})
    trained = TrainedModel(build_mlp(2, (3,), 2), np.zeros(17), TrainConfig(**{field: value}))
    assert getattr(DFNetModel.from_trained(trained), "get" + name[0].upper() + name[1:])() == value


def test_param_defaults_are_train_config_defaults():
    estimator, config = DFNetClassifier(), TrainConfig()
    assert estimator.train_config() == config
    for name, field in PARAM_FIELDS.items():
        default = getattr(config, field)
        assert estimator.hasDefault(name) == (default is not None), name
        assert estimator._optional(estimator.getParam(name)) == default, name
    assert inspect.signature(DFNetClassifier).parameters["maxIter"].default == config.epochs
    assert inspect.signature(DFNetClassifier).parameters["stepSize"].default is None


SAMPLE_VALUES = {"int": 2, "float": 0.5, "str": "x", "bool": True, "list[int]": [2, 3], "list[float]": [0.5, 0.5]}


def test_every_param_has_a_getter_a_setter_returning_self_and_a_keyword():
    estimator = DFNetClassifier()
    keywords = inspect.signature(DFNetClassifier).parameters
    assert set(keywords) == {p.name for p in estimator.params}
    for param in estimator.params:
        suffix = param.name[0].upper() + param.name[1:]
        kind = str(keywords[param.name].annotation).replace(" | None", "").replace("<class '", "").rstrip("'>")
        value = SAMPLE_VALUES[kind]
        assert getattr(estimator, "set" + suffix)(value) is estimator, param.name
        assert getattr(estimator, "get" + suffix)() == value, param.name
        assert getattr(DFNetModel(), "get" + suffix)


def test_generated_docs_say_what_each_param_is():
    for param in DFNetClassifier().params:
        assert len(param.doc) > 10, param.name
    assert DFNetClassifier.maxIter.doc == "TrainConfig.epochs: " + field_help("epochs")
    assert "an integer >= 1" in DFNetClassifier.maxIter.doc and "'sgd', 'momentum', 'adam'" in \
        DFNetClassifier.optimizer.doc
    assert DFNetClassifier.getMaxIter.__doc__.startswith("The value of maxIter")
    text = pydoc.render_doc(DFNetClassifier, renderer=pydoc.plaintext)
    assert "maxIter: int = 30" in text and "stepSize: float | None = None" in text
    assert "setBeta1(self, /, value: float | None) -> 'DFNetClassifier'" in text


def test_unknown_keywords_are_named():
    with pytest.raises(TypeError, match=r"DFNetClassifier has no Param 'maxIters' \(did you mean 'maxIter'\?\); "
                                        r"its Params: activation, .*maxIter"):
        DFNetClassifier(maxIters=3)
    estimator = DFNetClassifier(maxIter=4)
    with pytest.raises(TypeError, match="no Param 'epochs'"):
        estimator.setParams(stepSize=0.5, epochs=3)
    assert (estimator.getMaxIter(), estimator.getStepSize()) == (4, None)  # nothing set before the error
    with pytest.raises(TypeError, match="forces keyword arguments"):
        DFNetClassifier(MLP)


@pytest.mark.parametrize("params, words", [
    ({"maxIter": 0}, "maxIter=0: must be >= 1"),
    ({"beta1": 1.5}, "beta1=1.5: must be < 1"),
    ({"aggregate": "reduce"}, "aggregate='reduce': must be one of ['auto', 'agg', 'collect', 'sharded']"),
    ({"weightInit": "zeros"}, "weightInit='zeros': must be one of"),
])
def test_train_config_errors_name_the_param(params, words):
    with pytest.raises(ConfigError) as info:
        DFNetClassifier(**params).train_config()
    assert words in str(info.value)


def test_none_clears_a_param():
    estimator = DFNetClassifier(stepSize=0.1, maxIter=3)
    assert estimator.setStepSize(None).setParams(maxIter=None) is estimator
    assert (estimator.getStepSize(), estimator.isSet(estimator.maxIter), estimator.getMaxIter()) == (None, False, 30)


# --- bad input ------------------------------------------------------------------------------



BAD_INPUT = [
    # A validation aggregation is one job, or two when adaptive execution splits it; a fit that
    # started training would run 4 or more (validation, encoding, partition sizes, an epoch).
    ("missing-features", lambda tr: tr, DataValidationError, ["'features' not found", "'pixels'"], 0),
    ("string-features", lambda tr: tr.withColumn("features", F.lit("x")), DataValidationError,
     ["'features' must hold vectors", "got string"], 0),
    ("short-vectors", lambda tr: tr.withColumn("features", array_to_vector(F.slice(vector_to_array("pixels"), 1, 783))),
     DataValidationError, ["'features'", "every image must have 784 values", "783"], 2),
    ("fractional-labels", lambda tr: tr.withColumn("features", F.col("pixels")).withColumn("label", F.col("label") + 0.5),
     DataValidationError, ["'label'", "non-integer"], 2),
    ("labels-beyond-layers", lambda tr: tr.withColumn("features", F.col("pixels")).withColumn("label", F.col("label") + 5),
     DataValidationError, ["'label'", "[0, 9]", "14"], 2),
]


@pytest.mark.parametrize("case, make, error, words, max_jobs", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_before_training(spark, frames, case, make, error, words, max_jobs):
    train, _ = frames
    data = make(train)
    estimator = DFNetClassifier(layers=MLP, maxIter=1, schedule="average")
    caught = {}

    def attempt():
        with pytest.raises(error) as info:
            estimator.fit(data)
        caught["message"] = str(info.value)

    assert jobs_run_by(spark, attempt) <= max_jobs  # at most the validation: no training started
    for word in words:
        assert word in caught["message"]


def test_bad_params_name_the_param(frames):
    train, _ = frames
    for params, words in [({"stepSize": -1.0}, "stepSize=-1.0: must be > 0"),
                          ({"schedule": "sometimes"}, "schedule='sometimes': must be one of"),
                          ({"layers": [784]}, "layers=[784]: need [input size"),
                          ({"architecture": "{}"}, "architecture='{}': not a dfnet network")]:
        with pytest.raises(ConfigError) as info:
            DFNetClassifier(featuresCol="pixels", **params).fit(train)
        assert words in str(info.value)


def test_transform_refuses_vectors_of_the_wrong_size(pipeline_model, spark):
    model = stage_of(pipeline_model)
    short = spark.createDataFrame([(1, Vectors.dense([0.5] * 783))], ["id", "features"])
    with pytest.raises(DataValidationError, match="'features': every image must have 784 values"):
        model.transform(short)
    with pytest.raises(DataValidationError, match="column 'prediction' already exists"):
        model.transform(short.withColumn("prediction", F.lit(1.0)))  # schema checks come before the job
