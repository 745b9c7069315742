"""The one hashed split (dfnet.splits) on real data: the same rows on each side as the formulas
the validation split and the image folder's test split were written with before they shared it."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from dfnet.datasets import load_dataframe
from dfnet.splits import SPLIT_BUCKETS, VALIDATION_SALT, hashed_split, is_held_out


@pytest.fixture(scope="module")
def mnist(spark, shared_data):
    df = load_dataframe(spark, "mnist", "train", data_dir=shared_data / "mnist").cache()
    yield df
    df.unpersist()


def ids(df) -> set[int]:
    return {row["id"] for row in df.select("id").collect()}


def validation_split_as_written(df, fraction, seed, key_cols):
    """dfnet.train.split_validation before dfnet.splits, copied verbatim."""
    bucket = F.pmod(F.xxhash64(*[F.col(c) for c in key_cols], F.lit(seed), F.lit("validation")), F.lit(1 << 30))
    held_out = bucket < F.lit(int(round(fraction * (1 << 30))))
    return df.filter(~held_out), df.filter(held_out)


def folder_test_split_as_written(rel, test_fraction, seed):
    """dfnet.images.read_image_folder's split column before dfnet.splits, copied verbatim."""
    bucket = F.pmod(F.xxhash64(rel, F.lit(int(seed)), F.lit("test")), F.lit(1 << 30))
    return F.when(bucket < F.lit(int(round(test_fraction * (1 << 30)))), F.lit("test")).otherwise(F.lit("train"))


@pytest.mark.parametrize("fraction, seed, key_cols", [(0.2, 3, ["id"]), (0.1, 0, ["id"]), (0.5, 7, ["image", "label"]),
                                                      (0.2, 2**40, ["id"])])
def test_the_validation_split_holds_out_the_rows_it_did(mnist, fraction, seed, key_cols):
    kept, held = hashed_split(mnist, fraction, seed, key_cols)
    old_kept, old_held = validation_split_as_written(mnist, fraction, seed, key_cols)
    assert ids(held) == ids(old_held) and ids(kept) == ids(old_kept)
    assert not ids(kept) & ids(held) and ids(kept) | ids(held) == ids(mnist)
    assert abs(len(ids(held)) / mnist.count() - fraction) < 0.03


def test_the_image_folders_test_split_holds_out_the_rows_it_did(mnist):
    rel = F.concat_ws("/", F.col("label").cast("string"), F.format_string("%05d.png", F.col("id")))
    files = mnist.select("id", rel.alias("rel"))
    for fraction, seed in ((0.2, 0), (0.35, 11)):
        new = F.when(is_held_out([F.col("rel")], fraction, seed, "test"), F.lit("test")).otherwise(F.lit("train"))
        rows = files.select("id", new.alias("new"), folder_test_split_as_written(F.col("rel"), fraction, seed).alias("old"))
        assert rows.where(F.col("new") != F.col("old")).count() == 0
        assert 0 < rows.where(F.col("new") == "test").count() < mnist.count()


def test_a_rows_side_depends_on_its_keys_seed_and_salt_only(mnist):
    held = ids(hashed_split(mnist, 0.2, 3, ["id"])[1])
    shuffled = mnist.repartition(7).orderBy(F.rand(1))
    assert ids(hashed_split(shuffled, 0.2, 3, ["id"])[1]) == held
    assert ids(hashed_split(mnist, 0.2, 4, ["id"])[1]) != held
    assert ids(hashed_split(mnist, 0.2, 3, ["id"], salt="test")[1]) != held
    assert ids(hashed_split(mnist, 0.2, 3, [F.col("id")], salt=VALIDATION_SALT)[1]) == held  # columns or names


def test_the_fraction_counts_buckets(mnist):
    assert ids(hashed_split(mnist, 0.0, 3, ["id"])[1]) == set()
    assert int(round(0.2 * SPLIT_BUCKETS)) == 214748365
    # A larger fraction holds out a superset: the buckets below it include the smaller one's.
    assert ids(hashed_split(mnist, 0.1, 3, ["id"])[1]) <= ids(hashed_split(mnist, 0.3, 3, ["id"])[1])
