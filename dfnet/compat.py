"""The one place that knows which Spark and pyarrow dfnet runs on.

dfnet supports Spark 3.5.0 and later, classic and Spark Connect, with the pandas, pyarrow and
numpy the runtime brings (see ``docs/support.md``). A few APIs it uses are newer than 3.5; each
gets one function here that takes the newest API where the running versions have it, and
otherwise an older public equivalent that gives the same values:

================================  ============  ===========================================
need                              newest API    fallback
================================  ============  ===========================================
Arrow table -> DataFrame          4.0 (client)  pandas -> ``createDataFrame`` with Arrow on
DataFrame -> Arrow table          4.0 (client)  classic: ``_collect_as_arrow`` (what 3.5's
                                                ``toPandas`` uses); Connect: ``toPandas``
scalar UDF on Arrow arrays        4.1           a pandas UDF that hands the function Arrow
``try_url_decode``                4.0           a UDF with Python's ``unquote_plus``, as Java's
                                                ``URLDecoder`` decodes
``array_position`` of a column    4.0           ``create_map`` of the literals (:func:`index_of`)
pyspark.ml metadata helpers       4.0 (session) the SparkContext (:func:`ml_context`)
``pa.concat_batches``             pyarrow 19    ``Table.from_batches(...).combine_chunks()``
================================  ============  ===========================================

On Spark Connect the client and the server may differ in version: what the client builds
needs the client's version (:func:`client_version`), what the server runs needs both
(:func:`spark_version`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import pyarrow as pa

try:
    import pyspark
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError as error:  # pragma: no cover - tests/test_compat.py hides pyspark
    raise ImportError(
        "dfnet needs PySpark, which it leaves to the environment: Databricks, EMR, Dataproc, Synapse, Fabric and "
        "Zeppelin bring their own. On a laptop: pip install 'dfnet[spark]' (pyspark >= 3.5); as a thin Spark "
        "Connect client: pip install pyspark-client") from error

#: The oldest Spark dfnet runs on.
MIN_SPARK = (3, 5)


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a Spark version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def client_version() -> tuple[int, int]:
    """(major, minor) of the pyspark in this process (on Connect, the client's)."""
    return _major_minor(pyspark.__version__)


def has_classic_spark() -> bool:
    """Whether this pyspark can start a classic session (it ships Spark's jars); ``pyspark-client``
    and other thin Spark Connect clients do not."""
    return (Path(pyspark.__file__).parent / "jars").is_dir() or bool(os.environ.get("SPARK_HOME"))


def spark_version(spark: SparkSession) -> tuple[int, int]:
    """(major, minor) that both this process and the session's server have: on a classic session the
    two are one; on Spark Connect the older of client and server."""
    return min(client_version(), _major_minor(spark.version))


def check_supported(spark: SparkSession) -> None:
    """Refuse a Spark older than :data:`MIN_SPARK`, naming the version and what dfnet needs."""
    from .errors import ConfigError

    if spark_version(spark) < MIN_SPARK:
        raise ConfigError(f"dfnet needs Spark {'.'.join(map(str, MIN_SPARK))} or later; this session runs Spark "
                          f"{spark.version} with pyspark {pyspark.__version__}")


# --- Arrow tables in and out ---------------------------------------------------------------


def create_dataframe(spark: SparkSession, table: pa.Table) -> DataFrame:
    """A DataFrame of ``table``, column types from its Arrow schema (Spark 4.0 takes the table itself)."""
    if client_version() >= (4, 0):
        return spark.createDataFrame(table)
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = from_arrow_schema(table.schema)
    # pandas keeps each list cell as a numpy array and Spark turns the frame back into Arrow
    # column by column: no row-by-row conversion, as long as Arrow transfer is on.
    with _arrow_transfer(spark):
        return spark.createDataFrame(table.to_pandas(), schema=schema)


def to_arrow(df: DataFrame) -> pa.Table:
    """The rows of ``df`` on the driver as one Arrow table (Spark 4.0: ``DataFrame.toArrow``)."""
    if client_version() >= (4, 0):
        return df.toArrow()
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema)
    if hasattr(df, "_collect_as_arrow"):  # classic 3.5: Arrow batches straight from the JVM
        return pa.Table.from_batches(df._collect_as_arrow(), schema=schema)
    with _arrow_transfer(df.sparkSession):
        return pa.Table.from_pandas(df.toPandas(), schema=schema, preserve_index=False)


_ARROW_CONF = "spark.sql.execution.arrow.pyspark.enabled"


def _arrow_transfer(spark: SparkSession):
    """Arrow transfer between pandas and Spark on for the block (Spark 3.5's default is off, and
    without it ``createDataFrame``/``toPandas`` convert row by row); the user's setting is put back."""
    from .session import session_setting

    return session_setting(spark, _ARROW_CONF, "true")


def concat_batches(batches: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
    """One record batch of ``batches`` (same schema), as pyarrow 19's ``concat_batches``."""
    if hasattr(pa, "concat_batches"):
        return pa.concat_batches(list(batches))
    table = pa.Table.from_batches(list(batches)).combine_chunks()
    combined = table.to_batches()
    return combined[0] if combined else pa.RecordBatch.from_pylist([], schema=table.schema)


def ml_context(spark: SparkSession):
    """What pyspark.ml's ``DefaultParamsReader``/``Writer`` helpers take: the session from 4.0, the
    SparkContext before (3.5 reads the metadata with ``sc.textFile``)."""
    return spark if client_version() >= (4, 0) else spark.sparkContext


# --- Arrow UDFs --------------------------------------------------------------------------


def arrow_udf(function: Callable[..., pa.Array], return_type: T.DataType, spark: SparkSession):
    """A scalar UDF whose ``function`` takes and returns ``pyarrow.Array`` batches (one per argument
    column), for ``spark``'s session.

    Spark 4.1's ``arrow_udf`` passes the Arrow arrays straight through. On older Spark a pandas UDF
    wraps ``function``: Spark's pandas Series become Arrow arrays again (lists arrive as numpy
    arrays, binary as bytes, so each value keeps its type), and the result goes back as a Series,
    or as a pandas frame for a struct. ``function`` gets ``pa.Array`` arguments either way.
    """
    if spark_version(spark) >= (4, 1):
        return F.arrow_udf(_arrow_wrapper(function), return_type)
    return F.pandas_udf(_pandas_wrapper(function, return_type), return_type)


def _arrow_wrapper(function: Callable[..., pa.Array]):
    """``function`` with the type hints from which ``arrow_udf`` reads a scalar Arrow UDF."""
    def scalar(*arrays: pa.Array) -> pa.Array:
        return function(*arrays)
    return _named_after(scalar, function)


def _named_after(wrapper, function):
    """``wrapper`` under ``function``'s name, which query plans and the Spark UI show."""
    wrapper.__name__ = wrapper.__qualname__ = getattr(function, "__name__", wrapper.__name__)
    return wrapper


def _pandas_wrapper(function: Callable[..., pa.Array], return_type: T.DataType):
    """``function`` as a scalar pandas UDF (the kind read from the type hints, as pyspark prefers)."""
    if isinstance(return_type, T.StructType):
        names = return_type.fieldNames()

        def struct_wrapper(*series: pd.Series) -> pd.DataFrame:
            result = function(*[_arrow_of(column) for column in series])
            return pd.DataFrame({name: field.to_pandas() for name, field in zip(names, result.flatten())})
        return _named_after(struct_wrapper, function)

    def wrapper(*series: pd.Series) -> pd.Series:
        return function(*[_arrow_of(column) for column in series]).to_pandas()
    return _named_after(wrapper, function)


def _arrow_of(column) -> pa.Array:
    """A pandas Series from Spark's Arrow-to-pandas conversion back as an Arrow array."""
    if column.dtype == object:
        return pa.array(column.tolist(), from_pandas=True)
    return pa.Array.from_pandas(column)


# --- functions -----------------------------------------------------------------------------


def index_of(values: Sequence, column):
    """The 0-based position of ``column``'s value in ``values`` (distinct literals) as an int column,
    null where it is not among them (``array_position`` takes a column as its value only from 4.0)."""
    pairs = [item for i, value in enumerate(values) for item in (F.lit(value), F.lit(i))]
    return F.create_map(*pairs)[column].cast("int")


def try_url_decode(column, spark: SparkSession):
    """``column`` with %XX escapes decoded as UTF-8, null where an escape is malformed (Spark 4.0's
    ``try_url_decode``; ``+`` becomes a space and bytes that are not UTF-8 become U+FFFD, as there)."""
    if spark_version(spark) >= (4, 0) and hasattr(F, "try_url_decode"):
        return F.try_url_decode(column)
    return arrow_udf(_url_decode_batch, T.StringType(), spark)(column)


#: A ``%`` not followed by two hex digits, which Java's ``URLDecoder`` (behind ``try_url_decode``) refuses.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _url_decode_batch(values: pa.Array) -> pa.Array:
    from urllib.parse import unquote_plus

    # As URLDecoder: "+" is a space, bytes that are not UTF-8 become U+FFFD, a bad escape fails (null).
    return pa.array([None if v is None or _BAD_ESCAPE.search(v) else unquote_plus(v, errors="replace")
                     for v in values.to_pylist()], pa.string())
