"""Image data sets for dfnet: IDX files, the registry, downloads, and Spark DataFrames.

The path of the data is ``IDX file -> numpy array -> Spark DataFrame``:

- :func:`read_idx` reads one IDX file (gzip or raw) and checks that its header
  agrees with its length, so a truncated download fails loudly instead of
  training on zeros.
- :data:`DATASETS` describes ``mnist``, ``fashion-mnist`` and ``digits``;
  :func:`resolve_data_dir` finds their files and :func:`download` fetches and
  verifies the official ones.
- :func:`load_arrays` returns ``(images, labels)`` for a split and
  :func:`to_dataframe` turns them into the DataFrame every dfnet engine reads:
  ``(id long, image array<float>, label int)`` with pixels scaled to [0, 1].

Example
-------
>>> from dfnet.datasets import load_dataframe
>>> df = load_dataframe(spark, "mnist", "test", data_dir="../shared/data", classes=[0, 1])  # doctest: +SKIP
>>> df.count()  # doctest: +SKIP
2115
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dfnet.compat import create_dataframe, index_of
from dfnet.errors import DatasetError, IDXFormatError
from dfnet.files import write_atomically

__all__ = [
    "DATASETS", "DEFAULT_DATA_DIR", "DatasetSpec", "download", "get_dataset", "load_arrays",
    "load_dataframe", "read_idx", "resolve_data_dir", "to_dataframe",
]

#: Where downloads land when no folder is named (git-ignored; fine for a source or editable install).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"

#: IDX type code (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}

_SPLITS = ("train", "test")
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, gzip-compressed or raw, and validate it against its header.

    Parameters
    ----------
    path : str or PathLike
        The file. Gzip is recognised by its magic bytes, not by the extension.

    Returns
    -------
    numpy.ndarray
        The array with the shape the header declares (``(n, rows, cols)`` for
        images, ``(n,)`` for labels), in native byte order, writable.

    Raises
    ------
    IDXFormatError
        On a corrupt or truncated gzip stream, a bad magic number, an unknown
        type code, or data shorter or longer than the header declares.
    """
    path = Path(path)

    def fail(problem: str) -> IDXFormatError:
        return IDXFormatError(f"{path}: {problem}")

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not data:
        raise fail("empty file")
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except EOFError as exc:
            raise fail(f"truncated gzip stream ({exc})") from exc
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise fail(f"corrupt gzip stream ({exc})") from exc
    if len(data) < 4:
        raise fail(f"truncated: {len(data)} bytes is shorter than the 4-byte IDX magic number")
    if data[0] != 0 or data[1] != 0:
        raise fail(f"bad magic number 0x{data[:4].hex()}: an IDX file starts with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise fail(f"unknown IDX type code 0x{code:02X} (expected one of {known})")
    if ndim == 0:
        raise fail("header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise fail(f"truncated: header declares {ndim} dimensions ({header_len} header bytes) "
                   f"but the file holds only {len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    found = len(data) - header_len
    declared = "x".join(map(str, shape))
    if dtype.itemsize > 1:
        declared += f" x {dtype.itemsize}-byte {dtype.name}"
    if found < expected:
        raise fail(f"truncated: header declares {declared} = {expected} bytes of data but only {found} found")
    if found > expected:
        raise fail(f"trailing bytes: header declares {declared} = {expected} bytes of data "
                   f"but {found} found ({found - expected} extra)")
    # astype copies, so the result is writable and native-endian rather than a view of `data`.
    return np.frombuffer(data, dtype=dtype, offset=header_len).astype(dtype.newbyteorder("=")).reshape(shape)


@dataclass(frozen=True)
class DatasetSpec:
    """What dfnet knows about one data set.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"mnist"``.
    image_shape : tuple of int
        ``(height, width)`` in pixels.
    num_classes : int
        Labels are ``0 .. num_classes - 1``.
    class_names : tuple of str
        Human-readable name of each label.
    max_value : float
        Largest raw pixel value (255 for IDX sets, 16 for digits); pixels are divided by it.
    files : dict
        ``'train-images' | 'train-labels' | 'test-images' | 'test-labels'`` -> official gz file name.
        Empty for a set that needs no files.
    md5 : dict
        Official gz file name -> its md5 hex digest.
    base_urls : tuple of str
        Official location first, then mirrors, tried in that order.
    """

    name: str
    image_shape: tuple[int, int]
    num_classes: int
    class_names: tuple[str, ...]
    max_value: float
    # dicts are unhashable, so leave them out of the generated __hash__.
    files: dict[str, str] = field(default_factory=dict, hash=False)
    md5: dict[str, str] = field(default_factory=dict, hash=False)
    base_urls: tuple[str, ...] = ()


def _idx_files(prefix: str = "") -> dict[str, str]:
    return {
        "train-images": f"{prefix}train-images-idx3-ubyte.gz",
        "train-labels": f"{prefix}train-labels-idx1-ubyte.gz",
        "test-images": f"{prefix}t10k-images-idx3-ubyte.gz",
        "test-labels": f"{prefix}t10k-labels-idx1-ubyte.gz",
    }


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", image_shape=(28, 28), num_classes=10,
        class_names=tuple(str(d) for d in range(10)), max_value=255.0,
        files=_idx_files(),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        # yann.lecun.com often refuses or rate-limits downloads, so it is the last resort.
        base_urls=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", image_shape=(28, 28), num_classes=10,
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        max_value=255.0,
        files=_idx_files(),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        base_urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    # Packaged with dfnet (DIGITS_FILE): no files to find, no download.
    "digits": DatasetSpec(
        name="digits", image_shape=(8, 8), num_classes=10,
        class_names=tuple(str(d) for d in range(10)), max_value=16.0,
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    """Return the :class:`DatasetSpec` registered as `name`; DatasetError lists the known names."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def _find_file(folder: Path, gz_name: str) -> Path | None:
    """The file `gz_name` in `folder`, or its gunzipped twin (same name without ``.gz``)."""
    for candidate in (folder / gz_name, folder / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _files_of(spec: DatasetSpec) -> dict[str, str]:
    if not spec.files:
        raise DatasetError(f"data set {spec.name!r} is packaged with dfnet and has no files to find or download")
    return spec.files


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None, *,
                     download: bool | None = None) -> Path:
    """Return the folder that holds the four IDX files of data set `name`.

    The folder searched is `data_dir`, else ``$DFNET_DATA_DIR``, else
    :data:`DEFAULT_DATA_DIR`. The files may lie in it directly or in a
    subfolder named after the data set (``<dir>/mnist/``), each as ``.gz`` or
    gunzipped.

    Parameters
    ----------
    name : str
        Registry key of an IDX data set (not ``digits``).
    data_dir : str or PathLike, optional
        A folder named by the user.
    download : bool, optional
        Download missing files into ``<folder>/<name>/``. The default, None,
        downloads only into the default folder: a folder the user named is
        never written to unless they ask.

    Raises
    ------
    DatasetError
        If files are missing and no download was allowed; the message names
        the folder and each missing file.
    """
    spec = get_dataset(name)
    gz_names = list(_files_of(spec).values())
    if data_dir is not None:
        folder, named = Path(data_dir).expanduser(), True
    elif os.environ.get("DFNET_DATA_DIR"):
        folder, named = Path(os.environ["DFNET_DATA_DIR"]).expanduser(), True
    else:
        folder, named = DEFAULT_DATA_DIR, False

    candidates = [folder, folder / name]
    missing = {c: [f for f in gz_names if _find_file(c, f) is None] for c in candidates}
    for candidate in candidates:
        if not missing[candidate]:
            return candidate

    if download or (download is None and not named):
        return _download(name, folder / name)
    # Report the folder that came closest, so a single missing file is named precisely.
    closest = min(candidates, key=lambda c: len(missing[c]))
    hint = "pass download=True to fetch the official files" if named else "downloads were disabled"
    raise DatasetError(
        f"{name}: {closest} is missing {', '.join(missing[closest])} (looked in {folder} and {folder / name}; "
        f"each file may also be gunzipped, without .gz); {hint}"
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_verified(url: str, target: Path, expected_md5: str) -> int:
    """Stream `url` into a temp file beside `target`; rename it into place only if its md5 matches.

    Returns the number of bytes written. Raises DatasetError on an md5
    mismatch and lets OSError / HTTPException from the transfer through; in
    every failure the temp file is removed (:func:`dfnet.files.write_atomically`).
    """
    size = 0

    def fetch(out) -> None:
        nonlocal size
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=60) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
                size += len(block)
        if digest.hexdigest() != expected_md5:
            raise DatasetError(f"{url}: md5 mismatch for {target.name}: expected {expected_md5}, "
                               f"got {digest.hexdigest()} ({size} bytes); file discarded")

    write_atomically(target, fetch)
    return size


def download(name: str, dest: str | os.PathLike, *, base_urls: Sequence[str] | None = None,
             files: Iterable[str] | None = None) -> Path:
    """Download the official gz files of data set `name` into `dest`, verifying each md5.

    Each file is written to a temp file in `dest` and renamed into place only
    after its md5 matches the registry, so `dest` never holds a partial or
    unverified file. Files already present with the right md5 are kept.

    Parameters
    ----------
    name : str
        Registry key of an IDX data set.
    dest : str or PathLike
        Folder to write into (created if needed).
    base_urls : sequence of str, optional
        Locations to try in order (any scheme urllib opens, e.g. ``file://``);
        default: the spec's official location and mirrors.
    files : iterable of str, optional
        Which of ``'train-images', 'train-labels', 'test-images', 'test-labels'``
        to fetch; default all four.

    Returns
    -------
    Path
        `dest`.

    Raises
    ------
    DatasetError
        If a file could not be fetched with the right md5 from any base URL;
        the message lists each attempt (for a mismatch: expected and actual md5).
    """
    spec = get_dataset(name)
    spec_files = _files_of(spec)
    keys = list(spec_files) if files is None else list(files)
    unknown = [k for k in keys if k not in spec_files]
    if unknown:
        raise DatasetError(f"unknown file key(s) {unknown} for {name}; expected some of {list(spec_files)}")
    urls = list(spec.base_urls if base_urls is None else base_urls)
    if not urls:
        raise DatasetError(f"no base URL to download {name} from")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    for key in keys:
        gz_name, expected = spec_files[key], spec.md5[spec_files[key]]
        target = dest / gz_name
        if target.is_file() and _md5(target) == expected:
            print(f"dfnet: {name}/{gz_name} already present, md5 ok", file=sys.stderr)
            continue
        failures = []
        for base in urls:
            url = base if base.endswith("/") else base + "/"
            url += gz_name
            try:
                size = _fetch_verified(url, target, expected)
            except (OSError, http.client.HTTPException, DatasetError) as exc:
                failures.append(f"{url}: {exc}" if not isinstance(exc, DatasetError) else str(exc))
                continue
            print(f"dfnet: downloaded {name}/{gz_name} from {base} ({size / 1e6:.1f} MB, md5 ok)", file=sys.stderr)
            break
        else:
            raise DatasetError(f"could not download {gz_name} for {name} into {dest}: " + "; ".join(failures))
    return dest


# resolve_data_dir's `download` flag shadows the function inside it.
_download = download


#: The 1,797 8x8 digits of UCI's "Optical Recognition of Handwritten Digits" (CC BY 4.0), as
#: scikit-learn's ``load_digits`` gives them, split 80/20 stratified by scikit-learn's
#: ``train_test_split(random_state=0)``, each split in the original row order. Packaged (50 kB)
#: so that the default data set needs no scikit-learn, whose newest release would replace a
#: runtime's numpy; ``tests/test_datasets.py`` checks it against scikit-learn's own copy.
DIGITS_FILE = Path(__file__).with_name("data") / "digits.npz"


def _digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS_FILE) as stored:
        return stored[f"{split}_images"].astype(np.float64), stored[f"{split}_labels"].astype(np.int64)


def load_arrays(name: str, split: str = "train",
                data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a data set as numpy arrays.

    Parameters
    ----------
    name : str
        Registry key: ``mnist``, ``fashion-mnist`` or ``digits``.
    split : {'train', 'test'}
        For digits, a fixed stratified 80/20 split (seed 0) of the 1,797 images.
    data_dir : str or PathLike, optional
        Folder of the IDX files; see :func:`resolve_data_dir`.

    Returns
    -------
    images : numpy.ndarray, shape (n, height, width)
        Raw pixels, 0 .. ``max_value``: uint8 for IDX sets, float64 for digits.
    labels : numpy.ndarray of int64, shape (n,)
    """
    spec = get_dataset(name)
    if split not in _SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {_SPLITS}")
    if not spec.files:
        return _digits_split(split)

    folder = resolve_data_dir(name, data_dir)
    images_path = _find_file(folder, spec.files[f"{split}-images"])
    labels_path = _find_file(folder, spec.files[f"{split}-labels"])
    if images_path is None or labels_path is None:  # removed between resolving and reading
        raise DatasetError(f"{name}: {split} files disappeared from {folder}")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise IDXFormatError(f"{images_path}: an image file needs 3 dimensions (n, rows, cols), "
                             f"header declares shape {images.shape}")
    if labels.ndim != 1:
        raise IDXFormatError(f"{labels_path}: a label file needs 1 dimension (n,), "
                             f"header declares shape {labels.shape}")
    if images.shape[1:] != spec.image_shape:
        raise DatasetError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                           f"{name} expects {spec.image_shape[0]}x{spec.image_shape[1]}")
    if len(images) != len(labels):
        raise DatasetError(f"{name} {split}: {images_path} holds {len(images)} images "
                           f"but {labels_path} holds {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DatasetError(f"{labels_path}: labels span {labels.min()}..{labels.max()}, "
                           f"{name} has classes 0..{spec.num_classes - 1}")
    return images, labels.astype(np.int64)


def _check_classes(classes: Sequence[int]) -> list[int]:
    values = list(classes)
    if not values or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in values):
        raise DatasetError(f"classes must be a non-empty sequence of ints, got {classes!r}")
    values = [int(c) for c in values]
    if len(set(values)) != len(values):
        raise DatasetError(f"classes must be distinct, got {values}")
    return values


def check_classes(name: str, classes: Sequence[int]) -> list[int]:
    """`classes` as distinct ints within data set `name`'s classes, else DatasetError."""
    spec = get_dataset(name)
    values = _check_classes(classes)
    out_of_range = [c for c in values if not 0 <= c < spec.num_classes]
    if out_of_range:
        raise DatasetError(f"classes {out_of_range} are outside {name}'s classes 0..{spec.num_classes - 1}")
    return values


def _list_column(flat: np.ndarray) -> pa.ChunkedArray:
    """Rows of the 2-d float32 `flat` as an Arrow list<float> column, without a Python object per row.

    A ListArray is offsets over one flat values buffer; its int32 offsets cap a
    chunk at 2**31 - 1 values, so very large inputs become several chunks.
    """
    n, width = flat.shape
    rows_per_chunk = max(1, (2**31 - 1) // max(width, 1))
    chunks = []
    # At least one chunk: pyspark cannot convert a column with no chunks (an empty input).
    for start in range(0, max(n, 1), rows_per_chunk):
        block = flat[start:start + rows_per_chunk]
        offsets = np.arange(0, block.size + 1, width, dtype=np.int32)
        chunks.append(pa.ListArray.from_arrays(offsets, pa.array(block.ravel())))
    return pa.chunked_array(chunks, type=pa.list_(pa.float32()))


def to_dataframe(spark: SparkSession, images: np.ndarray, labels: np.ndarray, *, max_value: float = 255.0,
                 num_partitions: int | None = None, classes: Sequence[int] | None = None,
                 id_offset: int = 0) -> DataFrame:
    """Build the DataFrame ``(id long, image array<float>, label int)`` that dfnet trains on.

    Parameters
    ----------
    spark : SparkSession
    images : numpy.ndarray, shape (n, ...)
        Raw pixels; each image is flattened row-major.
    labels : numpy.ndarray of int, shape (n,)
    max_value : float
        Pixels are divided by it and stored as float32, so 0 .. `max_value` becomes 0 .. 1.
    num_partitions : int, optional
        Repartition the result to this many partitions.
    classes : sequence of int, optional
        Keep only these labels and relabel each to its position in `classes`
        (``classes=[3, 5]``: 3 -> 0, 5 -> 1).
    id_offset : int
        ``id`` is ``id_offset + row index`` in `images` (before filtering).
    """
    images, labels = np.asarray(images), np.asarray(labels)
    n = len(images)
    if labels.shape != (n,):
        raise DatasetError(f"labels must have shape ({n},) to match {n} images, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"labels must be integers, got dtype {labels.dtype}")
    if not max_value > 0:
        raise DatasetError(f"max_value must be > 0, got {max_value}")
    if num_partitions is not None and (not isinstance(num_partitions, int) or num_partitions < 1):
        raise DatasetError(f"num_partitions must be a positive int, got {num_partitions!r}")
    class_list = None if classes is None else _check_classes(classes)

    if n and (labels.min() < np.iinfo(np.int32).min or labels.max() > np.iinfo(np.int32).max):
        raise DatasetError(f"labels must fit the int label column, got {labels.min()}..{labels.max()}")
    width = int(np.prod(images.shape[1:]))
    if width == 0:
        raise DatasetError(f"images must have at least one pixel each, got shape {images.shape}")
    flat = np.divide(images.reshape(n, width), max_value, dtype=np.float32)
    table = pa.table({
        "id": pa.array(np.arange(id_offset, id_offset + n, dtype=np.int64)),
        "image": _list_column(flat),
        "label": pa.array(labels.astype(np.int32)),
    })
    df = create_dataframe(spark, table)

    if class_list is not None:
        df = (df.where(F.col("label").isin(class_list))
                .select("id", "image", index_of(class_list, F.col("label")).alias("label")))
    if num_partitions is not None:
        df = df.repartition(num_partitions)
    return df


def load_dataframe(spark: SparkSession, name: str, split: str = "train", *,
                   data_dir: str | os.PathLike | None = None, classes: Sequence[int] | None = None,
                   num_partitions: int | None = None) -> DataFrame:
    """Load one split of data set `name` as ``(id long, image array<float>, label int)``, pixels in [0, 1].

    See :func:`load_arrays` for `name`, `split` and `data_dir`, and
    :func:`to_dataframe` for `classes` and `num_partitions`.
    """
    spec = get_dataset(name)
    if classes is not None:
        check_classes(name, classes)
    images, labels = load_arrays(name, split, data_dir)
    return to_dataframe(spark, images, labels, max_value=spec.max_value,
                        num_partitions=num_partitions, classes=classes)
