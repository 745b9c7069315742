"""dfnet.compat: each newer API and its fallback give the same values, on the Spark this run has.

The fallbacks are what Spark 3.5 (and pyarrow < 19) run; here they are forced on the newest Spark
too, and checked against the native path on the same data. The pinned 3.5 environment of
``.ci/run`` runs this file with the fallbacks chosen for real.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dfnet import compat

pytestmark = pytest.mark.journey


@pytest.fixture
def old_spark(monkeypatch):
    """Every version check answers Spark 3.5 (the fallbacks), whatever pyspark this is."""
    monkeypatch.setattr(compat, "client_version", lambda: (3, 5))
    monkeypatch.setattr(compat, "spark_version", lambda spark: (3, 5))


def sample_table(n: int = 7) -> pa.Table:
    rng = np.random.default_rng(3)
    images = rng.random((n, 5), dtype=np.float32)
    return pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "image": pa.ListArray.from_arrays(pa.array(np.arange(0, 5 * n + 1, 5, dtype=np.int32)),
                                          pa.array(images.reshape(-1))),
        "blob": pa.array([bytes([i, 255 - i]) for i in range(n)], pa.binary()),
        "label": pa.array(np.arange(n, dtype=np.int32) % 3),
    })


@pytest.mark.parametrize("path", ["native", "fallback"])
def test_arrow_tables_go_in_and_come_out_unchanged(spark, request, path):
    if path == "fallback":
        request.getfixturevalue("old_spark")
    table = sample_table()
    df = compat.create_dataframe(spark, table)
    assert [f.dataType for f in df.schema.fields] == [T.LongType(), T.ArrayType(T.FloatType()), T.BinaryType(),
                                                      T.IntegerType()]
    back = compat.to_arrow(df.orderBy("id"))
    assert back.column_names == table.column_names
    for name in table.column_names:
        assert back.column(name).to_pylist() == table.column(name).to_pylist(), name


def test_the_fallback_leaves_the_users_arrow_setting_as_it_was(spark, old_spark):
    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key)
    spark.conf.set(key, "false")
    try:
        compat.to_arrow(compat.create_dataframe(spark, sample_table()))
        assert spark.conf.get(key) == "false"
    finally:
        spark.conf.set(key, before)


@pytest.mark.parametrize("path", ["native", "fallback"])
def test_arrow_udfs_give_the_same_structs_lists_and_scalars(spark, request, path):
    if path == "fallback":
        request.getfixturevalue("old_spark")
    # Defined here, not at module level: cloudpickle ships them by value to Python workers that
    # cannot import this test module.
    def double_and_describe(values: pa.Array, blobs: pa.Array) -> pa.Array:
        flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32) * 2
        doubled = pa.ListArray.from_arrays(values.offsets, pa.array(flat))
        sizes = pa.array([None if b is None else len(b) for b in blobs.to_pylist()], pa.int32())
        return pa.StructArray.from_arrays([doubled, sizes], names=["doubled", "size"])

    def first_value(values: pa.Array) -> pa.Array:
        return pa.array([v[0] if v else None for v in values.to_pylist()], pa.float64())

    df = compat.create_dataframe(spark, sample_table())
    struct_type = T.StructType([T.StructField("doubled", T.ArrayType(T.FloatType())),
                                T.StructField("size", T.IntegerType())])
    describe = compat.arrow_udf(double_and_describe, struct_type, spark)
    first = compat.arrow_udf(first_value, T.DoubleType(), spark)
    rows = df.select("id", "image", describe("image", "blob").alias("out"), first("image").alias("first")) \
        .orderBy("id").collect()
    for row in rows:
        np.testing.assert_array_equal(np.asarray(row["out"]["doubled"], np.float32),
                                      np.asarray(row["image"], np.float32) * 2)
        assert row["out"]["size"] == 2 and row["first"] == pytest.approx(row["image"][0])


@pytest.mark.parametrize("path", ["native", "fallback"])
def test_url_decoding_matches_spark_and_is_null_where_it_fails(spark, request, path):
    if path == "fallback":
        request.getfixturevalue("old_spark")
    df = spark.createDataFrame([("file:/a%20b/%C3%A9.png",), ("plus%2Bsign+space",), ("bad%zz",), ("%FFx",),
                                (None,)], "s string")
    got = [r["d"] for r in df.select(compat.try_url_decode(F.col("s"), spark).alias("d")).collect()]
    assert got == ["file:/a b/é.png", "plus+sign space", None, "\ufffdx", None]


def test_concat_batches_fallback_equals_pyarrow(monkeypatch):
    table = sample_table(9)
    a, b = table.slice(0, 4).to_batches()[0], table.slice(4).to_batches()[0]
    native = compat.concat_batches([a, b])
    monkeypatch.delattr(pa, "concat_batches", raising=False)
    fallback = compat.concat_batches([a, b])
    assert fallback.equals(native) and fallback.num_rows == 9


def test_versions_are_read_from_pyspark_and_the_session(spark):
    import pyspark

    assert compat.client_version() == tuple(int(v) for v in pyspark.__version__.split(".")[:2])
    assert compat.spark_version(spark) == compat.client_version() >= compat.MIN_SPARK


def test_without_pyspark_the_import_error_says_what_to_install():
    code = "import sys; sys.modules['pyspark'] = None; import dfnet"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "pip install 'dfnet[spark]'" in result.stderr and "pyspark-client" in result.stderr


def test_a_spark_older_than_3_5_is_refused_naming_the_versions(spark, monkeypatch):
    from dfnet.config import TrainConfig
    from dfnet.datasets import load_dataframe
    from dfnet.errors import ConfigError
    from dfnet.train import fit

    monkeypatch.setattr(compat, "spark_version", lambda session: (3, 4))
    with pytest.raises(ConfigError, match=r"dfnet needs Spark 3\.5 or later; this session runs Spark \d"):
        fit(load_dataframe(spark, "digits", "test"), TrainConfig(epochs=1))
