# Databricks notebook source
# MAGIC %md
# MAGIC # dfnet on Databricks: train, evaluate, query
# MAGIC
# MAGIC dfnet trains neural networks on Spark DataFrames: every training step is a
# MAGIC DataFrame job (broadcast the weights, per-partition numpy gradients through Arrow, `groupBy().agg` to sum
# MAGIC them). This notebook
# MAGIC
# MAGIC 1. loads images into a DataFrame `(id long, image array<float>, label int)`,
# MAGIC 2. trains a small network with `dfnet.fit`, and another as a Spark ML `Pipeline` stage,
# MAGIC 3. evaluates it and writes three tables: predictions, training history, per-class metrics,
# MAGIC 4. queries them with SQL and shows the plotly figures,
# MAGIC 5. times an epoch on 1 and 2 partitions with `dfnet.bench`, shows the figure and asks SQL for the fastest.
# MAGIC
# MAGIC It uses the notebook's own `spark` session as it is: dfnet neither changes its configuration nor stops it.
# MAGIC With the bundled `digits` data set (1,797 8x8 images that ship with scikit-learn) it runs on any
# MAGIC cluster in about a minute.

# COMMAND ----------

# MAGIC %md
# MAGIC ## Install dfnet
# MAGIC
# MAGIC dfnet is not published on PyPI: install it from its source, in one of two ways.
# MAGIC
# MAGIC - **A wheel you build.** In your checkout of the dfnet source run `pip wheel --no-deps . -w dist`, which
# MAGIC   writes `dist/dfnet-0.1.0-py3-none-any.whl`. Upload that file to a Unity Catalog volume (*Catalog >
# MAGIC   your volume > Upload to this volume*, or `databricks fs cp dist/dfnet-0.1.0-py3-none-any.whl
# MAGIC   dbfs:/Volumes/<catalog>/<schema>/<volume>/`) and put its path in the cell below.
# MAGIC - **A git repository** the cluster can reach, holding the dfnet source: replace the cell below with
# MAGIC   `%pip install "git+https://<your-git-host>/<you>/dfnet.git"` (add `@<tag or commit>` to pin a version).
# MAGIC
# MAGIC `%pip` installs it for this notebook on the driver and the workers, and restarts its Python.

# COMMAND ----------

# DBTITLE 1,Install dfnet
# MAGIC %pip install /Volumes/<catalog>/<schema>/<volume>/dfnet-0.1.0-py3-none-any.whl

# COMMAND ----------

# MAGIC %md
# MAGIC ## Data
# MAGIC
# MAGIC `DATASET = "digits"` needs no files. For MNIST, either
# MAGIC
# MAGIC - put the four IDX files (`train-images-idx3-ubyte.gz`, ... as published, gzipped or not) in a volume
# MAGIC   and set `DATASET = "mnist"`, `DATA_DIR = "/Volumes/<catalog>/<schema>/<volume>/mnist"`; dfnet checks
# MAGIC   each file against its header, or
# MAGIC - read a table you already have, with an `array<float>` column of pixels in [0, 1] and an `int` label:
# MAGIC   `train = spark.table("<catalog>.<schema>.mnist_train")` (an `id` column is used by the predictions
# MAGIC   table; add one with `monotonically_increasing_id()` if missing).
# MAGIC
# MAGIC `CLASSES = [0, 1]` keeps two classes (relabelled 0, 1), as in the classic write-up.

# COMMAND ----------

# DBTITLE 1,Settings and data
import dfnet
from dfnet.datasets import get_dataset

DATASET = "digits"  # or "mnist", "fashion-mnist" (set DATA_DIR)
DATA_DIR = None  # a folder with the four IDX files, e.g. "/Volumes/main/default/mnist"
CLASSES = None  # e.g. [0, 1]
DATABASE = "dfnet_examples"
PREDICTIONS = f"{DATABASE}.predictions"
HISTORY = f"{DATABASE}.history"
CLASS_METRICS = f"{DATABASE}.class_metrics"
BENCH = f"{DATABASE}.bench"

spec = get_dataset(DATASET)
class_names = [spec.class_names[c] for c in CLASSES] if CLASSES else list(spec.class_names)
train = dfnet.load_dataframe(spark, DATASET, "train", data_dir=DATA_DIR, classes=CLASSES, num_partitions=2)
test = dfnet.load_dataframe(spark, DATASET, "test", data_dir=DATA_DIR, classes=CLASSES)
print(f"{train.count()} training rows, {test.count()} test rows, {len(class_names)} classes")
display(train.limit(5))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Train with `dfnet.fit`
# MAGIC
# MAGIC The `average` schedule runs one Spark job per epoch: every partition trains on its own rows from the
# MAGIC broadcast weights and the driver averages the results. `auto` (the default) plans model averaging from
# MAGIC the rows and the cluster's task slots: a few jobs per epoch whatever the data size. `minibatch` makes one
# MAGIC job per batch of `batch_size` rows: slower on a small set, exact single-machine SGD.

# COMMAND ----------

# DBTITLE 1,Train
config = dfnet.TrainConfig(hidden=(64,), epochs=6, schedule="average", batch_size=16, lr=0.005, seed=0)
model = dfnet.fit(train, config, validation_df=test)
print("run", model.run_id)

# COMMAND ----------

# DBTITLE 1,Evaluate
evaluation = model.evaluate(test)
print(evaluation.report())

# COMMAND ----------

# MAGIC %md
# MAGIC ## The same network as a Spark ML Pipeline stage
# MAGIC
# MAGIC `DFNetClassifier` is an Estimator like MLlib's `MultilayerPerceptronClassifier` (`layers`, `maxIter`,
# MAGIC `stepSize`), so it fits in a `Pipeline`, under `CrossValidator`, and MLlib's evaluators read its output.

# COMMAND ----------

# DBTITLE 1,Pipeline
from pyspark.ml import Pipeline
from pyspark.ml.evaluation import MulticlassClassificationEvaluator

num_features = len(train.first()["image"])
classifier = dfnet.DFNetClassifier(featuresCol="image", labelCol="label", layers=[num_features, 32, len(class_names)],
                                   maxIter=6, schedule="average", batchSize=16, stepSize=0.005, seed=1)
pipeline_model = Pipeline(stages=[classifier]).fit(train)
pipeline_accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(pipeline_model.transform(test))
print(f"pipeline test accuracy {pipeline_accuracy:.4f}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Tables
# MAGIC
# MAGIC Predictions are replaced on every run (`mode="overwrite"`); the history and the per-class metrics are
# MAGIC appended, one `run_id` per training run, so they collect every run of this notebook. The tables go to
# MAGIC the database (schema) `dfnet_examples` of the current catalog; to write elsewhere, change `DATABASE` above
# MAGIC and the names in the SQL cells.

# COMMAND ----------

# DBTITLE 1,Database
# MAGIC %sql
# MAGIC CREATE DATABASE IF NOT EXISTS dfnet_examples

# COMMAND ----------

# DBTITLE 1,Write the tables
predictions = dfnet.write_predictions(model, test, PREDICTIONS, mode="overwrite")
dfnet.write_history(model, HISTORY, mode="append")
dfnet.write_history(pipeline_model.stages[-1].trained_model, HISTORY, mode="append")
dfnet.write_class_metrics(evaluation, CLASS_METRICS, run_id=model.run_id, mode="append", class_names=class_names)
display(predictions.drop("image").limit(10))

# COMMAND ----------

# MAGIC %md
# MAGIC ## SQL

# COMMAND ----------

# DBTITLE 1,Test accuracy
# MAGIC %sql
# MAGIC -- test accuracy per run, from the predictions
# MAGIC SELECT run_id, AVG(CAST(label = prediction AS DOUBLE)) AS accuracy, COUNT(*) AS n
# MAGIC FROM dfnet_examples.predictions
# MAGIC GROUP BY run_id
# MAGIC ORDER BY run_id

# COMMAND ----------

# DBTITLE 1,Confusion matrix
# MAGIC %sql
# MAGIC -- confusion matrix of the newest run: rows of true class `label` predicted as `prediction`
# MAGIC SELECT label, prediction, COUNT(*) AS n
# MAGIC FROM dfnet_examples.predictions
# MAGIC WHERE run_id = (SELECT MAX(run_id) FROM dfnet_examples.predictions)
# MAGIC GROUP BY label, prediction
# MAGIC ORDER BY label, prediction

# COMMAND ----------

# DBTITLE 1,Per-class F1
# MAGIC %sql
# MAGIC -- per-class F1 of the newest run, worst class first
# MAGIC SELECT class, class_name, precision, recall, f1, support
# MAGIC FROM dfnet_examples.class_metrics
# MAGIC WHERE run_id = (SELECT MAX(run_id) FROM dfnet_examples.class_metrics)
# MAGIC ORDER BY f1, class

# COMMAND ----------

# DBTITLE 1,Most confident mistakes
# MAGIC %sql
# MAGIC -- the most confident mistakes of the newest run
# MAGIC SELECT id, label, prediction, probability[prediction] AS confidence
# MAGIC FROM dfnet_examples.predictions
# MAGIC WHERE run_id = (SELECT MAX(run_id) FROM dfnet_examples.predictions) AND label <> prediction
# MAGIC ORDER BY confidence DESC, id
# MAGIC LIMIT 10

# COMMAND ----------

# DBTITLE 1,Accuracy per epoch across runs
# MAGIC %sql
# MAGIC -- accuracy per epoch across runs (train, and on the validation rows)
# MAGIC SELECT epoch, run_id, accuracy, val_accuracy
# MAGIC FROM dfnet_examples.history
# MAGIC ORDER BY epoch, run_id

# COMMAND ----------

# MAGIC %md
# MAGIC ## Figures
# MAGIC
# MAGIC `model.report(test, evaluation=evaluation)` returns the run's plotly figures as `{heading: figure}`:
# MAGIC "Training history", "Confusion matrix", "Per-class metrics" and "Test samples" (mistakes first), plus
# MAGIC "Kernels" and "Activation maps" for a network with a `Conv2D`. `displayHTML` shows each one (plotly.js
# MAGIC from its CDN).
# MAGIC
# MAGIC The same figures as one offline HTML page (plotly.js embedded, about 5 MB), e.g. to download or share:
# MAGIC `model.report(test, "/dbfs/.../report.html")` (or a path in a volume, `/Volumes/<catalog>/<schema>/<volume>/report.html`).

# COMMAND ----------

# DBTITLE 1,Figures
figures = model.report(test, evaluation=evaluation)
for fig in figures.values():
    displayHTML(fig.to_html(include_plotlyjs="cdn", full_html=False))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Benchmark: seconds per epoch against partitions
# MAGIC
# MAGIC `dfnet.bench.partitions` trains the network of `config` once per partition count, on this session and
# MAGIC these rows: a one-epoch warm-up, then `epochs` timed epochs. Each count makes one row: the median seconds
# MAGIC per epoch with the fastest and slowest epoch, Spark jobs per epoch, the executors and hosts its tasks ran
# MAGIC on, or the error that stopped it. `table=` appends the rows to `dfnet_examples.bench`, one `run_id` per
# MAGIC sweep, so the table collects every sweep of this notebook; `sweep.figure()` draws them. On a bigger
# MAGIC cluster try `[1, 2, 4, 8, 16]`. `dfnet.bench` also sweeps task slots (`slots`), `engines`, `schedules`
# MAGIC and `aggregations`.

# COMMAND ----------

# DBTITLE 1,Partitions sweep
import dfnet.bench

sweep = dfnet.bench.partitions(train, [1, 2], config=config, epochs=2, table=BENCH)
displayHTML(sweep.figure().to_html(include_plotlyjs="cdn", full_html=False))

# COMMAND ----------

# DBTITLE 1,Fastest partition count per sweep
# MAGIC %sql
# MAGIC -- the fastest partition count of each sweep; failed points left out (min_by: Spark 3.0 and later)
# MAGIC SELECT run_id, min_by(partitions, seconds_per_epoch) AS fastest_partitions,
# MAGIC        MIN(seconds_per_epoch) AS seconds_per_epoch, COUNT(*) AS points
# MAGIC FROM dfnet_examples.bench
# MAGIC WHERE sweep = 'partitions' AND error IS NULL
# MAGIC GROUP BY run_id
# MAGIC ORDER BY run_id
