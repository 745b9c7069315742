"""Spark ML persistence of dfnet's Estimator and Model, through Spark's DataFrame readers and writers
only (classic and Connect alike); the layout is described in :mod:`dfnet.ml`."""

from __future__ import annotations

import json
import re
import time
import uuid

import numpy as np
from pyspark.errors import AnalysisException
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter
from pyspark.sql import DataFrame, SparkSession

from ..compat import create_dataframe, ml_context, to_arrow
from ..errors import ModelFormatError, OutputExistsError
from ..files import first_line, live_folders, prune_folder, spark_errors, spark_files
from ..model import FORMAT_VERSION, READABLE_VERSIONS, TrainedModel


def _is_model(instance_or_class) -> bool:
    """A DFNetModel (instance or class), not an estimator: it has a network to save."""
    cls = instance_or_class if isinstance(instance_or_class, type) else type(instance_or_class)
    return hasattr(cls, "trained_model")


def _child(path: str, name: str) -> str:
    return path.rstrip("/") + "/" + name


#: A model's data folder: ``data`` (saved before overwrites were staged) or ``data-<ns>-<hex>``,
#: a fresh name per save, so a save never writes where the model being replaced lives.
_DATA_DIR = re.compile(r"^data(?:-(\d+)-[0-9a-f]+)?$")


def _write_metadata(spark: SparkSession, path: str, metadata_json: str) -> None:
    """``path/metadata``: the one JSON line of pyspark.ml's DefaultParamsWriter, replacing any."""
    spark.createDataFrame([(metadata_json,)], "value string").coalesce(1).write.mode("overwrite") \
        .text(_child(path, "metadata"))


class DFNetWriter(MLWriter):
    """Writes an estimator's or a model's files (see the module docstring) with Spark's writers
    only, on classic and Connect sessions; refuses an existing path unless ``overwrite()``.

    A model's weights go to a data folder of a fresh name, then the metadata that names it
    replaces the old one, then the old data folder is pruned: until the new model is whole the old
    one loads, and from then on the new one (the data row carries the metadata too, so a save
    stopped between the two writes still loads the new model).
    """

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:
        spark = self.sparkSession
        existing = spark_files(spark, path)
        if existing and not self.shouldOverwrite:
            raise OutputExistsError(f"{path} already exists; use write().overwrite().save(path) to replace it")
        self.saveImpl(path)
        if _is_model(self.instance):
            for folder in live_folders(existing):
                if _DATA_DIR.match(folder):
                    prune_folder(spark, _child(path, folder))

    def saveImpl(self, path: str) -> None:
        spark = self.sparkSession
        extra = None
        if _is_model(self.instance):
            data = f"data-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
            extra = {"numFeatures": self.instance.numFeatures, "numClasses": self.instance.numClasses,
                     "dataFormatVersion": FORMAT_VERSION, "dataPath": data}
        metadata = DefaultParamsWriter._get_metadata_to_save(self.instance, ml_context(spark), extra)
        if extra is not None:
            _model_data(spark, self.instance.trained_model, metadata).coalesce(1).write.parquet(_child(path, data))
        _write_metadata(spark, path, metadata)


def _model_data(spark: SparkSession, trained: TrainedModel, metadata_json: str | None = None) -> DataFrame:
    """The one-row DataFrame of a model's data folder (built from Arrow: no Python object per
    weight): the model record as JSON, the weights, and the metadata JSON that names it."""
    import pyarrow as pa

    record, weights = trained.to_record()
    table = pa.table({
        # Kept as a column of its own so that a reader of the version 1 row refuses this one by name.
        "format_version": pa.array([FORMAT_VERSION], pa.int32()),
        "record": pa.array([json.dumps(record)], pa.string()),
        "weights": pa.array([weights.astype(np.float64)], pa.list_(pa.float64())),
        "metadata": pa.array([metadata_json], pa.string()),
    })
    return create_dataframe(spark, table)


class DFNetReader(MLReader):
    """Reads what :class:`DFNetWriter` wrote, checking the saved class; for a model also dfnet's
    own folder of ``model.json`` + ``weights.npy``."""

    def __init__(self, cls: type):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        spark = self.sparkSession
        files = spark_files(spark, path)
        folders = live_folders(files)
        if "metadata" in folders:
            return self._load_spark_ml(path, DefaultParamsReader.loadMetadata(path, ml_context(spark)))
        if _is_model(self.cls):
            if "model.json" in files:
                return self.cls.from_trained(_read_dfnet_folder(spark, path))
            data = sorted((f for f in folders if _DATA_DIR.match(f)), key=_data_order)
            if data:  # a save stopped between its data and its metadata: the data row has both
                return self._load_spark_ml(path, None, data[-1])
        hint = f"; the model of a dfnet run folder is in {_child(path, 'model')}" if "model/model.json" in files else ""
        raise ModelFormatError(f"{path}: not a saved {self.cls.__name__} (no metadata/"
                               f"{' and no model.json' if _is_model(self.cls) else ''}){hint}")

    def _load_spark_ml(self, path: str, metadata: dict | None, data: str | None = None):
        spark = self.sparkSession
        trained = None
        if _is_model(self.cls) and (metadata is None or metadata.get("class") == _class_name(self.cls)):
            data = data or (metadata or {}).get("dataPath", "data")
            trained, saved_metadata = _read_model_data(spark, path, data)
            metadata = metadata or saved_metadata
        if metadata is None or metadata.get("class") != _class_name(self.cls):
            found = None if metadata is None else metadata.get("class")
            raise ModelFormatError(f"{path} holds a {found}, not a {_class_name(self.cls)}")
        instance = self.cls(trained) if trained is not None else self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        return instance


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


def _data_order(folder: str) -> int:
    match = _DATA_DIR.match(folder)
    return int(match.group(1) or 0)


def _read_model_data(spark: SparkSession, path: str, data: str = "data") -> tuple[TrainedModel, dict | None]:
    """The TrainedModel in ``path/<data>`` (Parquet, one row), and the metadata saved with it
    (None for a model saved before the row carried it)."""
    source = _child(path, data)
    try:
        table = to_arrow(spark.read.parquet(source))
    except spark_errors() as e:
        raise ModelFormatError(f"{path}: cannot read the model data in {source} ({first_line(e)})") from e
    if table.num_rows != 1:
        raise ModelFormatError(f"{source}: expected one row, found {table.num_rows}")
    row = {name: table.column(name)[0] for name in table.column_names}
    try:
        version = row["format_version"].as_py()
        if version not in READABLE_VERSIONS:
            raise ModelFormatError(f"{source}: data format version {version!r}, this dfnet reads versions "
                                   f"{', '.join(map(str, READABLE_VERSIONS))}")
        record = row["record"].as_py() if version >= 2 else _version_1_record(row)
        weights = row["weights"].values.to_numpy(zero_copy_only=False)
        metadata_text = row["metadata"].as_py() if "metadata" in row else None
        metadata = json.loads(metadata_text) if metadata_text else None
    except ModelFormatError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ModelFormatError(f"{source}: corrupt model data ({type(e).__name__}: {e})") from e
    return TrainedModel.from_record(record, weights, source=source), metadata


def _version_1_record(row: dict) -> dict:
    """The model record of a version 1 data row, which kept each field in a column of its own
    (JSON text for the network, config and history; no run_id before run ids existed)."""
    config = row["config"].as_py()
    return {"format_version": 1, "network": json.loads(row["network"].as_py()),
            "config": json.loads(config) if config else None, "history": json.loads(row["history"].as_py()),
            "class_names": row["class_names"].as_py(),
            "run_id": row["run_id"].as_py() if "run_id" in row else None}


def _read_dfnet_folder(spark: SparkSession, path: str) -> TrainedModel:
    """dfnet's own model folder, read with Spark: ``model.json`` as whole text, ``weights.npy`` as
    binaryFile bytes."""
    try:
        text = spark.read.text(_child(path, "model.json"), wholetext=True).first()
        weights = spark.read.format("binaryFile").load(_child(path, "weights.npy")).select("content").first()
    except AnalysisException as e:
        raise ModelFormatError(f"{path}: not a dfnet model folder ({first_line(e)})") from e
    if text is None or weights is None:
        raise ModelFormatError(f"{path}: not a dfnet model folder (model.json or weights.npy is missing)")
    return TrainedModel.from_record(text[0], bytes(weights[0]), source=path)
