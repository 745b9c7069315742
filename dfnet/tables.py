"""Spark SQL tables that dfnet writes: predictions, training history, per-class metrics.

Every writer takes a table name (checked by :func:`check_table_name` before any
work starts) and a ``mode``:

- ``"error"`` (the default for predictions): refuse a table that exists;
- ``"overwrite"``: replace it, only once the new rows are complete;
- ``"append"`` (the default for history and metrics, whose rows carry a
  ``run_id``): add rows; the table's columns must match.

A table never holds half of a write. New rows are first written in full to a
staging table beside the target (``<name>__dfnet_staging_<hex>``) and only then
renamed into place; if the write fails, the target is as it was and the staging
table is dropped. An overwrite renames the old table aside, renames the new one
in and drops the old one; between the two renames (milliseconds) the name does
not resolve, but it never resolves to partial rows. An append into an existing
table is one Spark insert job: its tasks write into a temporary folder and
the job's commit moves their files into the table only once every task has
succeeded, so a failed append adds nothing (a process killed during those
final file moves can leave part of the new rows: Spark's file committer is not
atomic on every file system). An append is refused when the table already
holds rows of the same ``run_id``. If the process is killed mid-write, a ``__dfnet_staging_`` or
``__dfnet_replaced_`` table may be left behind; the target is whole, or (killed
between the two renames of an overwrite) still whole under the
``__dfnet_replaced_`` name.

Tables go to the session's catalog, as Delta where the session is set up for
Delta Lake (Databricks, or ``delta-spark`` configured), otherwise in the
session's default format (``spark.sql.sources.default``: Parquet unless
configured), or as ``format=``; Delta writes commit atomically by themselves
and skip the staging table. Sessions dfnet starts use Spark's Hive catalog
with its embedded Derby metastore (:mod:`dfnet.session`), so a later session in
another process finds the tables by name.
"""

from __future__ import annotations

import re
import secrets
from typing import Sequence

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .errors import DataValidationError, OutputExistsError
from .metastore import wait_for_catalog

_UNQUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KINDS = {1: "table", 2: "database.table", 3: "catalog.database.table"}

WRITE_MODES = ("error", "overwrite", "append")

#: Columns of the tables dfnet writes.
PREDICTIONS_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType()), T.StructField("id", T.LongType()),
    T.StructField("label", T.IntegerType()), T.StructField("prediction", T.IntegerType()),
    T.StructField("probability", T.ArrayType(T.DoubleType())), T.StructField("image", T.ArrayType(T.FloatType())),
    T.StructField("path", T.StringType())])
HISTORY_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType()), T.StructField("epoch", T.IntegerType()),
    T.StructField("loss", T.DoubleType()), T.StructField("accuracy", T.DoubleType()),
    T.StructField("rows", T.LongType()), T.StructField("seconds", T.DoubleType()),
    T.StructField("val_loss", T.DoubleType()), T.StructField("val_accuracy", T.DoubleType())])
CLASS_METRICS_SCHEMA = T.StructType(
    [T.StructField("run_id", T.StringType()), T.StructField("class", T.IntegerType()),
     T.StructField("class_name", T.StringType())]
    + [T.StructField(name, T.LongType()) for name in ("tp", "fp", "fn", "tn", "support")]
    + [T.StructField(name, T.DoubleType()) for name in ("precision", "recall", "f1")])


def check_table_name(name: str) -> tuple[str, ...]:
    """Check a table name as Spark SQL reads it; return its parts, unquoted.

    Accepted: ``name``, ``db.name`` or ``catalog.db.name``, each part either
    plain (a letter or ``_``, then letters, digits and ``_``) or backquoted
    (`` `my table` ``; any printable characters, a backquote written twice).
    Spark's parser reads all of these as the returned parts.

    Refused with :class:`~dfnet.errors.DataValidationError` naming the name and
    the rule: a non-string or empty name, more than three parts, an empty part
    (``a..b``), spaces, semicolons, quotes, dashes or other characters in a
    plain part, a plain part that starts with a digit (Spark reads ``1abc`` as
    a name but ``1e5`` as a number; backquote it: `` `1abc` ``), whitespace
    around the name or a dot, an unclosed or empty backquoted part, control
    characters anywhere.

    The catalog may be stricter still: Spark's built-in session catalog
    creates only tables and databases whose names are letters, digits and
    ``_``.

    >>> check_table_name("analytics.`mnist predictions`")
    ('analytics', 'mnist predictions')
    """
    if not isinstance(name, str):
        raise DataValidationError(f"table name {name!r} must be a string, got {type(name).__name__}")
    if not name:
        raise DataValidationError("table name is empty; expected table, database.table or catalog.database.table")
    if _CONTROL.search(name):
        raise DataValidationError(f"table name {name!r} contains a control character (newline, tab, ...)")
    parts, i = [], 0
    while True:
        if name.startswith("`", i):
            part, i = _backquoted(name, i)
        else:
            end = name.find(".", i)
            end = len(name) if end < 0 else end
            part = name[i:end]
            _check_plain(name, part)
            i = end
        parts.append(part)
        if i == len(name):
            break
        if name[i] != ".":
            raise DataValidationError(f"table name {name!r}: expected '.' or the end after the backquoted part "
                                      f"`{parts[-1]}`, found {name[i:]!r}")
        i += 1
        if i == len(name):
            raise DataValidationError(f"table name {name!r} ends with '.': a part is missing")
    if len(parts) > 3:
        raise DataValidationError(f"table name {name!r} has {len(parts)} parts; expected at most 3: "
                                  f"table, database.table or catalog.database.table")
    return tuple(parts)


def _backquoted(name: str, start: int) -> tuple[str, int]:
    """The part backquoted at ``name[start]``, and the index just after its closing backquote."""
    chars, i = [], start + 1
    while i < len(name):
        if name[i] == "`":
            if name.startswith("``", i):
                chars.append("`")
                i += 2
                continue
            if not chars:
                raise DataValidationError(f"table name {name!r} has an empty backquoted part ``")
            return "".join(chars), i + 1
        chars.append(name[i])
        i += 1
    raise DataValidationError(f"table name {name!r}: the backquote at position {start} is never closed")


def _check_plain(name: str, part: str) -> None:
    if not part:
        raise DataValidationError(f"table name {name!r} has an empty part ('..' or a leading '.')")
    if _UNQUOTED.fullmatch(part):
        return
    if part[0].isdigit() and re.fullmatch(r"[A-Za-z0-9_]+", part):
        raise DataValidationError(f"table name {name!r}: part {part!r} starts with a digit; a name starts with a "
                                  f"letter or _ (or backquote it: `{part}`)")
    bad = sorted({c for c in part if not (c.isascii() and (c.isalnum() or c == "_"))})
    shown = ", ".join("space" if c == " " else repr(c) for c in bad)
    raise DataValidationError(f"table name {name!r}: part {part!r} may hold only letters, digits and _ (found "
                              f"{shown}); backquote a part that needs other characters: `{part}`")


def table_identity(spark: SparkSession, name: str) -> tuple[str, str, str]:
    """``(catalog, database, table)`` that ``name`` refers to in ``spark``, lower-cased as Spark compares them."""
    wait_for_catalog(spark)
    parts = check_table_name(name)
    full = (spark.catalog.currentCatalog(), spark.catalog.currentDatabase())[:3 - len(parts)] + parts
    return tuple(part.lower() for part in full)


def quote_table_name(parts: Sequence[str]) -> str:
    """The parts of a table name as one SQL identifier, each part backquoted."""
    return ".".join("`" + part.replace("`", "``") + "`" for part in parts)


# --- writing -----------------------------------------------------------------------

def _check_mode(mode: str) -> str:
    if mode == "errorifexists":
        return "error"
    if mode not in WRITE_MODES:
        raise DataValidationError(f"mode={mode!r}: expected one of {', '.join(WRITE_MODES)}")
    return mode


def _columns(schema: T.StructType) -> list[tuple[str, T.DataType]]:
    """(lower-cased name, type with every nullability flag dropped): what an append must match."""
    def bare(kind: T.DataType) -> T.DataType:
        if isinstance(kind, T.ArrayType):
            return T.ArrayType(bare(kind.elementType))
        if isinstance(kind, T.StructType):
            return T.StructType([T.StructField(f.name, bare(f.dataType)) for f in kind.fields])
        if isinstance(kind, T.MapType):
            return T.MapType(bare(kind.keyType), bare(kind.valueType))
        return kind
    return [(f.name.lower(), bare(f.dataType)) for f in schema.fields]


def check_can_write(spark: SparkSession, table: str, mode: str = "error", schema: T.StructType | None = None,
                    *, run_id: str | None = None, format: str | None = None, probe: bool = True) -> bool:
    """Refuse, before any work, a write that would fail or that ``mode`` does not allow; return whether
    ``table`` exists.

    Raises :class:`~dfnet.errors.OutputExistsError` for an existing table in
    mode ``"error"``, and :class:`~dfnet.errors.DataValidationError` for a bad
    name or mode; in mode ``"append"``, for an existing table whose columns
    differ from ``schema`` or that already holds rows of ``run_id`` (appending
    them again would count them twice). With ``probe``, a table that will be
    created is proven creatable first: an empty table of ``schema`` is created
    beside it and dropped, so a missing database, a name the catalog refuses or
    a missing permission shows now rather than after training.
    """
    parts = check_table_name(table)
    mode = _check_mode(mode)
    name = quote_table_name(parts)
    wait_for_catalog(spark)
    exists = _catalog_call(table, lambda: spark.catalog.tableExists(name))
    if exists and mode == "error":
        raise OutputExistsError(f"table {table} already exists; pass mode='overwrite' to replace it or "
                                f"mode='append' to add rows (--mode on the command line)")
    if exists and mode == "append":
        current = spark.table(name)
        if schema is not None:
            have, want = _columns(current.schema), _columns(schema)
            if have != want:
                show = lambda cols: ", ".join(f"{n} {k.simpleString()}" for n, k in cols)  # noqa: E731
                raise DataValidationError(f"cannot append to table {table}: its columns ({show(have)}) differ "
                                          f"from the rows to write ({show(want)}); write to a new table or "
                                          f"overwrite")
        if run_id is not None and current.where(F.col("run_id") == run_id).limit(1).count():
            raise DataValidationError(f"table {table} already holds rows of run_id {run_id!r}; appending them "
                                      f"again would count them twice: pass another run id (--run-id) or "
                                      f"mode='overwrite'")
    if probe and not (exists and mode == "append"):
        probe_parts = _sibling(parts, "probe")
        empty = spark.createDataFrame([], schema or T.StructType([T.StructField("probe", T.IntegerType())]))
        try:
            _catalog_call(table, lambda: empty.write.format(format or table_format(spark.conf.get))
                          .saveAsTable(quote_table_name(probe_parts)))
        finally:
            spark.sql(f"DROP TABLE IF EXISTS {quote_table_name(probe_parts)}")
    return exists


def _catalog_call(table: str, call):
    """``call()``, with the catalog's refusals (no such database, a name it does not allow, no
    permission) raised as :class:`DataValidationError` naming the table."""
    from pyspark.errors import AnalysisException

    try:
        return call()
    except AnalysisException as e:
        reason = str(e).strip().splitlines()[0]
        raise DataValidationError(f"table {table} cannot be written: {reason}") from e


def _sibling(parts: tuple[str, ...], role: str) -> tuple[str, ...]:
    return parts[:-1] + (f"{parts[-1]}__dfnet_{role}_{secrets.token_hex(4)}",)


#: Formats whose writes commit atomically by themselves: written in place, no staging table.
TRANSACTIONAL_FORMATS = ("delta",)


def table_format(conf_get) -> str:
    """The format dfnet writes tables in, from a session's settings (``conf_get`` as ``spark.conf.get``).

    Delta where the session is set up for Delta Lake (its SQL extension or catalog
    configured, as ``configure_spark_with_delta_pip`` and Databricks do), otherwise
    the session's ``spark.sql.sources.default`` (Parquet unless changed).
    """
    delta = ("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension"), \
        ("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    if any(value in (conf_get(key, "") or "") for key, value in delta):
        return "delta"
    return conf_get("spark.sql.sources.default", "parquet") or "parquet"


def save_table(df: DataFrame, table: str, *, mode: str = "error", format: str | None = None,
               run_id: str | None = None) -> DataFrame:
    """Write ``df`` as table ``table``, never leaving it half-written (see the module notes); return the table.

    ``mode``: ``"error"``, ``"overwrite"`` or ``"append"``; ``format``: a Spark
    data source (default: :func:`table_format`). A Delta table is written in
    place: its transaction log makes each write all-or-nothing. ``run_id``: see
    :func:`check_can_write`.
    """
    spark = df.sparkSession
    parts = check_table_name(table)
    format = format or table_format(spark.conf.get)
    # The staging write below fails before the target is touched, so it is the probe.
    exists = check_can_write(spark, table, mode, df.schema, run_id=run_id, format=format, probe=False)
    target = quote_table_name(parts)
    if exists and _check_mode(mode) == "append":
        names = [f.name for f in spark.table(target).schema.fields]
        df.select(*[F.col(f.name).alias(name) for f, name in zip(df.schema.fields, names)]).write.insertInto(target)
        return spark.table(target)
    if format.lower() in TRANSACTIONAL_FORMATS:
        # One commit in the table's own log: readers see the old rows or all of the new ones.
        _catalog_call(table, lambda: df.write.format(format).mode(_check_mode(mode)).saveAsTable(target))
        return spark.table(target)
    staging = _sibling(parts, "staging")
    try:
        _catalog_call(table, lambda: df.write.format(format).saveAsTable(quote_table_name(staging)))
        if not exists:
            _rename(spark, staging, parts)
        else:
            _swap_in(spark, staging, parts)
    except BaseException:
        spark.sql(f"DROP TABLE IF EXISTS {quote_table_name(staging)}")
        raise
    return spark.table(target)


def _swap_in(spark: SparkSession, staging: tuple[str, ...], parts: tuple[str, ...]) -> None:
    """Replace table ``parts`` by the complete table ``staging``: the old one moves aside, then goes."""
    replaced = _sibling(parts, "replaced")
    _rename(spark, parts, replaced)
    try:
        _rename(spark, staging, parts)
    except BaseException as e:
        try:
            _rename(spark, replaced, parts)
        except BaseException:
            raise OutputExistsError(f"table {quote_table_name(parts)} was not replaced ({e}); the previous "
                                    f"table could not be renamed back and is kept as "
                                    f"{quote_table_name(replaced)}") from e
        raise
    spark.sql(f"DROP TABLE IF EXISTS {quote_table_name(replaced)}")


def _rename(spark: SparkSession, source: tuple[str, ...], target: tuple[str, ...]) -> None:
    if spark.catalog.tableExists(quote_table_name(target)):
        raise OutputExistsError(f"table {quote_table_name(target)} appeared while dfnet was writing it "
                                f"(another writer?)")
    # RENAME TO names the table within its catalog: database.table at most.
    spark.sql(f"ALTER TABLE {quote_table_name(source)} RENAME TO {quote_table_name(target[-2:])}")


# --- the three tables ----------------------------------------------------------------

def _run_id(run_id: str | None, model) -> str:
    run_id = run_id if run_id is not None else getattr(model, "run_id", None)
    if not isinstance(run_id, str) or not run_id.strip():
        raise DataValidationError(f"run_id={run_id!r}: pass a non-empty string (run_id=, --run-id on the "
                                  f"command line): the model has no run id")
    return run_id


def prediction_rows(model, df: DataFrame, *, run_id: str | None = None, features_col: str = "image",
                    label_col: str | None = "label", id_col: str | None = "id",
                    keep_image: bool = True, path_col: str = "path") -> DataFrame:
    """The rows of a predictions table (:data:`PREDICTIONS_SCHEMA`), lazy.

    ``id_col=None`` numbers the rows with ``monotonically_increasing_id``;
    ``label_col=None`` leaves ``label`` null (unlabelled data); ``keep_image=False``
    leaves ``image`` null; ``path`` is ``df[path_col]`` where ``df`` has that column (the
    image file of :mod:`dfnet.images` frames), else null. Features may be arrays or Spark
    ML vectors.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    run_id = _run_id(run_id, model)
    for role, name in (("features", features_col), ("label", label_col), ("id", id_col)):
        if name is not None and name not in df.columns:
            raise DataValidationError(f"{role} column {name!r} not found; the DataFrame has {df.columns}")
    features = F.col(features_col)
    if isinstance(df.schema[features_col].dataType, VectorUDT):
        features = vector_to_array(features, "float32")
    null = lambda kind: F.lit(None).cast(kind)  # noqa: E731
    # Only these columns go on, so a vector column elsewhere in df never reaches the pandas UDF.
    frame = df.select((F.col(id_col).cast("long") if id_col else F.monotonically_increasing_id()).alias("id"),
                      (F.col(label_col).cast("int") if label_col else null("int")).alias("label"),
                      features.alias("__dfnet_image"),
                      (F.col(path_col).cast("string") if path_col in df.columns else null("string")).alias("path"))
    predicted = model.predict(frame, features_col="__dfnet_image", prediction_col="__dfnet_prediction",
                              probability_col="__dfnet_probability")
    return predicted.select(
        F.lit(run_id).alias("run_id"), "id", "label",
        F.col("__dfnet_prediction").alias("prediction"),
        F.col("__dfnet_probability").alias("probability"),
        (F.col("__dfnet_image").cast("array<float>") if keep_image else null("array<float>")).alias("image"),
        "path")


def write_predictions(model, df: DataFrame, table: str, *, mode: str = "error", run_id: str | None = None,
                      features_col: str = "image", label_col: str | None = "label", id_col: str | None = "id",
                      keep_image: bool = True, format: str | None = None) -> DataFrame:
    """Predict every row of ``df`` with ``model`` and save the predictions as ``table``; return the table.

    Columns: ``run_id, id, label, prediction, probability, image, path``
    (:func:`prediction_rows`). ``mode`` defaults to ``"error"``: re-running into
    an existing table needs ``"overwrite"`` or ``"append"``. Name, mode,
    columns and the run id (see :func:`check_can_write`) are checked before
    anything is predicted.
    """
    run_id = _run_id(run_id, model)
    check_can_write(df.sparkSession, table, mode, PREDICTIONS_SCHEMA, run_id=run_id, format=format, probe=False)
    rows = prediction_rows(model, df, run_id=run_id, features_col=features_col, label_col=label_col,
                           id_col=id_col, keep_image=keep_image)
    return save_table(rows, table, mode=mode, format=format, run_id=run_id)


def history_rows(spark: SparkSession, model, *, run_id: str | None = None) -> DataFrame:
    """One row per epoch of ``model.history`` (:data:`HISTORY_SCHEMA`); ``val_*`` null without validation."""
    run_id = _run_id(run_id, model)
    rows = [(run_id, int(h["epoch"]), float(h["loss"]), float(h["accuracy"]), int(h["rows"]), float(h["seconds"]),
             _float_or_none(h.get("val_loss")), _float_or_none(h.get("val_accuracy"))) for h in model.history]
    if not rows:
        raise DataValidationError("the model has no training history to write (was it trained by dfnet.fit?)")
    return spark.createDataFrame(rows, HISTORY_SCHEMA)


def write_history(model, table: str, *, mode: str = "append", run_id: str | None = None,
                  spark: SparkSession | None = None, format: str | None = None) -> DataFrame:
    """Save ``model.history`` as rows of ``table`` (appended by default: one table collects every run)."""
    spark = spark or SparkSession.active()
    run_id = _run_id(run_id, model)
    return save_table(history_rows(spark, model, run_id=run_id), table, mode=mode, format=format, run_id=run_id)


def class_metrics_rows(spark: SparkSession, evaluation, *, run_id: str,
                       class_names: Sequence[str] | None = None) -> DataFrame:
    """One row per class of an :class:`~dfnet.evaluate.Evaluation` (:data:`CLASS_METRICS_SCHEMA`)."""
    names = class_names if class_names is not None else evaluation.class_names
    rows = [(run_id, int(c["class"]), str(names[c["class"]]) if names is not None else str(c["class"]),
             *(int(c[k]) for k in ("tp", "fp", "fn", "tn", "support")),
             *(float(c[k]) for k in ("precision", "recall", "f1"))) for c in evaluation.per_class]
    return spark.createDataFrame(rows, CLASS_METRICS_SCHEMA)


def write_class_metrics(evaluation, table: str, *, run_id: str, mode: str = "append",
                        class_names: Sequence[str] | None = None, spark: SparkSession | None = None,
                        format: str | None = None) -> DataFrame:
    """Save per-class TP, FP, FN, TN, support, precision, recall and F1 of ``evaluation`` as rows of ``table``."""
    spark = spark or SparkSession.active()
    run_id = _run_id(run_id, None)
    return save_table(class_metrics_rows(spark, evaluation, run_id=run_id, class_names=class_names), table,
                      mode=mode, format=format, run_id=run_id)


def _float_or_none(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
