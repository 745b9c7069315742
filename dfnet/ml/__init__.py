"""dfnet as a Spark ML classifier: :class:`DFNetClassifier` (an Estimator) and :class:`DFNetModel`.

They follow pyspark.ml's conventions (``ProbabilisticClassifier`` /
``ProbabilisticClassificationModel``, keyword-only constructors, setters that
return ``self``), so they work in a ``Pipeline``, under ``CrossValidator`` and
with MLlib's evaluators. Training is dfnet's :func:`~dfnet.train.fit`; the
training Params are generated from one table, :data:`PARAM_FIELDS` (Param name ->
:class:`~dfnet.config.TrainConfig` field), which gives each its type, default
and doc (:mod:`dfnet.ml.params`).

Output columns, as MLlib classifiers give them:

- ``rawPredictionCol``: a vector of the class log-probabilities (for a softmax
  network the log-softmax of its logits). Unlike raw logits, element 1 ranks
  rows exactly as the probability of class 1 does, so
  ``BinaryClassificationEvaluator`` on rawPrediction gives the true ROC AUC.
- ``probabilityCol``: a vector of class probabilities (the softmax output; see
  :class:`~dfnet.evaluate.ClassScorer` for other output layers).
- ``predictionCol``: the class index as a double; with ``thresholds`` the
  class of largest ``probability / threshold``.

Any of them set to ``""`` is left out. Features may be ``array<float>``,
``array<double>`` or ``pyspark.ml.linalg`` vectors (dense or sparse; turned
into arrays in the JVM with ``vector_to_array``); labels are class indices
``0..k-1``, integer or whole-number doubles.

Persistence goes through Spark's DataFrame readers and writers only, on classic and Spark Connect
sessions alike, so any path Spark can write works (local, ``hdfs://``, ``s3a://``, ``dbfs:/``, a
volume)::

    path/metadata/          one JSON line: class, uid, Params (pyspark.ml's DefaultParamsWriter
                            format), and ``dataPath``, the model's data folder
    path/data-<ns>-<hex>/   Parquet, one row: format_version (2), record (the model record
                            of dfnet's one codec as JSON, see dfnet.model: network, config,
                            history, class names, run id, early stopping, schedule plan),
                            weights array<double> (the flat vector; float32 weights are
                            exact in double), and the metadata line again

Models saved by earlier dfnet versions still load: their row (format_version 1) held network,
config and history as JSON columns, class_names and run_id, in ``path/data/`` (before the data
folder had a fresh name per save) or ``path/data-<ns>-<hex>/``.
``DFNetModel.load`` also reads dfnet's own model folder (``model.json`` +
``weights.npy``, as ``dfnet train`` writes to ``RUN/model``), with Spark's
``text`` and ``binaryFile`` readers. Saving onto an existing path fails with
:class:`~dfnet.errors.OutputExistsError` unless ``write().overwrite()``; an
overwrite writes the new data folder beside the old one, then the metadata that names it, then
prunes the old folder (:func:`dfnet.files.prune_folder`), so a failed save leaves the old model
loadable and a save stopped after its data loads the new one.

Example
-------
>>> from pyspark.ml.linalg import Vectors
>>> df = spark.createDataFrame([(Vectors.dense([0.0, 0.0]), 0.0), (Vectors.dense([0.0, 1.0]), 1.0),
...                             (Vectors.dense([1.0, 0.0]), 1.0), (Vectors.dense([1.0, 1.0]), 0.0)] * 8,
...                            ["features", "label"])
>>> dfnet = DFNetClassifier(layers=[2, 8, 2], maxIter=2, schedule="average", seed=1)
>>> model = dfnet.fit(df)
>>> model.transform(df).columns
['features', 'label', 'prediction', 'probability', 'rawPrediction']
>>> model.write().overwrite().save(temp_path + "/dfnet-model")
>>> loaded = DFNetModel.load(temp_path + "/dfnet-model")
>>> loaded.getLayers(), loaded.weights == model.weights
([2, 8, 2], True)
"""

from .estimator import DFNetClassifier, DFNetModel
from .params import PARAM_FIELDS

# Saved models and estimators name their class dfnet.ml.<Name> (pyspark's reader imports it by
# that name), wherever in the package the class is defined.
DFNetClassifier.__module__ = DFNetModel.__module__ = __name__

__all__ = ["DFNetClassifier", "DFNetModel", "PARAM_FIELDS"]
