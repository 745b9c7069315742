"""The one hashed split: a row is held out when a seeded hash of its key columns falls below a fraction.

Used by the training validation split (:func:`dfnet.train.fit`'s ``validation_split``, salt
``"validation"``) and the image folder's test split (:func:`dfnet.images.read_image_folder`,
salt ``"test"``). A row's side depends only on its key values, the seed and the salt, never on
the partitioning, the row order or the run; the salt keeps the two splits independent of each
other for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

__all__ = ["SPLIT_BUCKETS", "VALIDATION_SALT", "hashed_split", "is_held_out"]

#: The hash is reduced to this many buckets; a fraction holds out ``round(fraction * SPLIT_BUCKETS)`` of them.
SPLIT_BUCKETS = 1 << 30

#: The salt of the training validation split.
VALIDATION_SALT = "validation"


def is_held_out(key_cols: Sequence[str | Column], fraction: float, seed, salt: str) -> Column:
    """Boolean column: whether a row's bucket, ``pmod(xxhash64(*key_cols, seed, salt), 2**30)``,
    is below ``round(fraction * 2**30)``.

    ``seed`` goes into the hash as the literal it is (a Python int is an int or a long literal
    by its size): pass the same type every time, as the hash differs between them.
    """
    keys = [F.col(c) if isinstance(c, str) else c for c in key_cols]
    bucket = F.pmod(F.xxhash64(*keys, F.lit(seed), F.lit(salt)), F.lit(SPLIT_BUCKETS))
    return bucket < F.lit(int(round(fraction * SPLIT_BUCKETS)))


def hashed_split(df: DataFrame, fraction: float, seed, key_cols: Sequence[str | Column], *,
                 salt: str = VALIDATION_SALT) -> tuple[DataFrame, DataFrame]:
    """``(kept rows, held-out rows)`` of ``df`` by :func:`is_held_out`: disjoint, together ``df``.

    With the default salt it is the training validation split (``(training rows, validation rows)``).
    """
    held_out = is_held_out(key_cols, fraction, seed, salt)
    return df.filter(~held_out), df.filter(held_out)
