"""Tests of dfnet.datasets on the real reference data, real IDX bytes and a real local Spark session.

Downloads are exercised through ``file://`` URLs in tmp_path: no test reaches the network.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from dfnet import datasets
from dfnet.datasets import (DATASETS, download, get_dataset, load_arrays, load_dataframe, read_idx,
                            resolve_data_dir, to_dataframe)
from dfnet.errors import DatasetError, IDXFormatError

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
T10K = ("test-images", "test-labels")
SCHEMA = "struct<id:bigint,image:array<float>,label:int>"


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An independent IDX writer: magic, big-endian dimension sizes, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def no_env_data_dir(monkeypatch):
    """A DFNET_DATA_DIR set in the developer's shell must not steer these tests."""
    monkeypatch.delenv("DFNET_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def t10k(shared_data):
    mnist = shared_data / "mnist"
    return read_idx(mnist / "t10k-images-idx3-ubyte.gz"), read_idx(mnist / "t10k-labels-idx1-ubyte.gz")


# --- read_idx on the real files ------------------------------------------------------------------

def test_read_idx_mnist_train_subset(shared_data):
    images = read_idx(shared_data / "mnist" / "train-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz")
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.min() == 0


def test_read_idx_mnist_t10k(t10k):
    images, labels = t10k
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels)[:2].tolist() == [980, 1135]
    # a writable array of its own, not a read-only view of the decompressed bytes
    assert images.flags.writeable


def test_read_idx_fashion_train(shared_data):
    images = read_idx(shared_data / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "fashion-mnist" / "train-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10


def test_gunzipped_file_reads_identically(shared_data, tmp_path, t10k):
    raw = tmp_path / "data.gz"  # misleading extension: gzip is detected by magic bytes, not by name
    raw.write_bytes(gzip.decompress((shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()))
    np.testing.assert_array_equal(read_idx(raw), t10k[0])


@pytest.mark.parametrize("code, values", [
    (0x09, np.array([-128, 0, 127], dtype=np.int8)),
    (0x0B, np.array([[-300, 2], [3, 32000]], dtype=np.int16)),
    (0x0C, np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 10**6),
    (0x0D, np.array([0.5, -1.25, 3e38], dtype=np.float32)),
    (0x0E, np.array([[np.pi, -1e300]], dtype=np.float64)),
])
def test_read_idx_all_type_codes(tmp_path, code, values):
    path = tmp_path / "values.idx"
    path.write_bytes(idx_bytes(values, code))
    result = read_idx(path)
    assert result.dtype == values.dtype and result.dtype.isnative
    np.testing.assert_array_equal(result, values)


def _labels_raw(shared_data) -> bytes:
    return gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())


CORRUPTIONS = {
    # name: (make bytes from the raw and the gz label file, expected words in the message)
    "truncated data": (lambda raw, gz: raw[:-10], "truncated: header declares 10000 = 10000 bytes of data but only 9990"),
    "trailing bytes": (lambda raw, gz: raw + b"\0\0\0", "trailing bytes"),
    "bad magic": (lambda raw, gz: b"\x08\x01" + raw[2:], "bad magic number"),
    "unknown type code": (lambda raw, gz: raw[:2] + b"\x0a" + raw[3:], "unknown IDX type code 0x0A"),
    # a label file whose header claims 3 dimensions: the first label bytes become absurd sizes
    "wrong ndim for labels": (lambda raw, gz: raw[:3] + b"\x03" + raw[4:], "truncated"),
    "zero ndim": (lambda raw, gz: raw[:3] + b"\x00" + raw[4:], "0 dimensions"),
    "truncated header": (lambda raw, gz: raw[:6], "truncated"),
    "shorter than magic": (lambda raw, gz: b"\0\0", "truncated"),
    "truncated gzip stream": (lambda raw, gz: gz[: len(gz) // 2], "truncated gzip stream"),
    "corrupt gzip stream": (lambda raw, gz: gz[:20] + bytes(b ^ 0xFF for b in gz[20:200]) + gz[200:], "gzip"),
    "empty file": (lambda raw, gz: b"", "empty file"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_files_raise_idx_format_error_naming_the_file(shared_data, tmp_path, corruption):
    make, words = CORRUPTIONS[corruption]
    gz = (shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(make(gzip.decompress(gz), gz))
    with pytest.raises(IDXFormatError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_truncated_images_message_states_declared_and_found_sizes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((5000, 28, 28), np.uint8))[: 16 + 1200])
    with pytest.raises(IDXFormatError, match=r"train-images-idx3-ubyte: truncated: header declares "
                                             r"5000x28x28 = 3920000 bytes of data but only 1200 found"):
        read_idx(path)


# --- registry --------------------------------------------------------------------------------------

def test_registry():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "digits"}
    for spec in DATASETS.values():
        assert sorted(spec.md5) == sorted(spec.files.values())
        assert len(spec.class_names) == spec.num_classes == 10
    assert get_dataset("mnist").md5["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"
    assert get_dataset("mnist").base_urls[0] == "https://storage.googleapis.com/cvdf-datasets/mnist/"
    assert get_dataset("fashion-mnist").class_names[0] == "T-shirt/top"
    assert get_dataset("fashion-mnist").class_names[9] == "Ankle boot"
    digits = get_dataset("digits")
    assert (digits.image_shape, digits.max_value, digits.files) == ((8, 8), 16.0, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits.max_value = 1.0  # type: ignore[misc]
    with pytest.raises(DatasetError, match="known: digits, fashion-mnist, mnist"):
        get_dataset("cifar")


# --- resolve_data_dir --------------------------------------------------------------------------------

def test_resolve_parent_and_dataset_folder(shared_data):
    assert resolve_data_dir("mnist", shared_data) == shared_data / "mnist"
    assert resolve_data_dir("mnist", shared_data / "mnist") == shared_data / "mnist"
    assert resolve_data_dir("fashion-mnist", str(shared_data)) == shared_data / "fashion-mnist"


def test_resolve_honours_env_var(shared_data, monkeypatch):
    monkeypatch.setenv("DFNET_DATA_DIR", str(shared_data))
    assert resolve_data_dir("mnist") == shared_data / "mnist"


def test_resolve_accepts_gunzipped_files(shared_data, tmp_path):
    for name in MNIST_FILES:
        source = shared_data / "mnist" / name
        if name.startswith("t10k"):
            (tmp_path / name.removesuffix(".gz")).write_bytes(gzip.decompress(source.read_bytes()))
        else:
            shutil.copy(source, tmp_path / name)
    assert resolve_data_dir("mnist", tmp_path) == tmp_path
    images, labels = load_arrays("mnist", "test", tmp_path)
    assert images.shape == (10000, 28, 28) and labels.dtype == np.int64


def test_resolve_named_folder_missing_a_file_raises_and_downloads_nothing(shared_data, tmp_path):
    for name in MNIST_FILES[:-1]:
        shutil.copy(shared_data / "mnist" / name, tmp_path / name)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DatasetError) as info:
        resolve_data_dir("mnist", tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "t10k-images" not in message
    assert sorted(tmp_path.rglob("*")) == before


def test_resolve_digits_has_no_files():
    with pytest.raises(DatasetError, match="packaged with dfnet"):
        resolve_data_dir("digits")


def _mirror(shared_data: Path, folder: Path, names=MNIST_FILES) -> str:
    """Copy shared MNIST files into `folder` and return its file:// base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(shared_data / "mnist" / name, folder / name)
        (folder / name).chmod(0o644)
    return folder.as_uri() + "/"


def test_default_folder_downloads_missing_files(shared_data, tmp_path, monkeypatch, capsys):
    base = _mirror(shared_data, tmp_path / "mirror")
    # The shared train files are a subset, not the official ones: trust their md5 for this test.
    spec = dataclasses.replace(get_dataset("mnist"), base_urls=(base,),
                               md5={n: md5_of(tmp_path / "mirror" / n) for n in MNIST_FILES})
    monkeypatch.setitem(DATASETS, "mnist", spec)
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIR", tmp_path / "data")
    with pytest.raises(DatasetError, match="downloads were disabled"):
        resolve_data_dir("mnist", download=False)
    assert resolve_data_dir("mnist") == tmp_path / "data" / "mnist"
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(MNIST_FILES)
    assert capsys.readouterr().err.count("downloaded mnist/") == 4


# --- download ---------------------------------------------------------------------------------------

def test_download_t10k_from_file_url_verifies_official_md5(shared_data, tmp_path, capsys):
    base = _mirror(shared_data, tmp_path / "mirror", MNIST_FILES[2:])
    dest = tmp_path / "dest"
    # the first location does not exist: download falls through to the next
    assert download("mnist", dest, base_urls=[(tmp_path / "nowhere").as_uri(), base], files=T10K) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(MNIST_FILES[2:])  # no temp files left
    assert md5_of(dest / "t10k-labels-idx1-ubyte.gz") == "ec29112dd5afa0611ce80d1b7f02629c"
    err = capsys.readouterr().err
    assert err.count("downloaded") == 2 and len(err.strip().splitlines()) == 2

    download("mnist", dest, base_urls=[(tmp_path / "nowhere").as_uri()], files=T10K)
    assert capsys.readouterr().err.count("already present") == 2


def test_download_md5_mismatch_leaves_no_file(shared_data, tmp_path):
    base = _mirror(shared_data, tmp_path / "mirror", MNIST_FILES[3:])
    corrupted = tmp_path / "mirror" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(corrupted.read_bytes())
    data[100] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError) as info:
        download("mnist", dest, base_urls=[base], files=["test-labels"])
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert "ec29112dd5afa0611ce80d1b7f02629c" in message and md5_of(corrupted) in message
    assert list(dest.iterdir()) == []


def test_download_replaces_a_corrupt_existing_file(shared_data, tmp_path):
    base = _mirror(shared_data, tmp_path / "mirror", MNIST_FILES[3:])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"half a download")
    download("mnist", dest, base_urls=[base], files=["test-labels"])
    assert md5_of(dest / "t10k-labels-idx1-ubyte.gz") == "ec29112dd5afa0611ce80d1b7f02629c"


def test_download_rejects_unknown_file_key(tmp_path):
    with pytest.raises(DatasetError, match="test-images"):
        download("mnist", tmp_path, files=["t10k"])


# --- load_arrays --------------------------------------------------------------------------------------

def test_load_arrays_digits_split():
    train_x, train_y = load_arrays("digits", "train")
    test_x, test_y = load_arrays("digits", "test")
    assert train_x.shape == (1437, 8, 8) and test_x.shape == (360, 8, 8)
    assert train_y.dtype == test_y.dtype == np.int64
    assert train_x.max() == 16.0
    # the 1,797 digit images are pairwise distinct, so comparing images checks the split
    train_rows = {row.tobytes() for row in train_x}
    test_rows = {row.tobytes() for row in test_x}
    assert not train_rows & test_rows and len(train_rows | test_rows) == 1797
    assert np.all(np.abs(np.bincount(test_y) - 36) <= 1)  # stratified
    again_x, again_y = load_arrays("digits", "train")
    np.testing.assert_array_equal(again_x, train_x)
    np.testing.assert_array_equal(again_y, train_y)


def test_packaged_digits_equal_scikit_learns_split():
    """The packaged digits are scikit-learn's load_digits, split as train_test_split(test_size=0.2,
    random_state=0, stratify) splits them, each split in its original row order."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split

    digits = sklearn_datasets.load_digits()
    train_idx, test_idx = train_test_split(np.arange(len(digits.target)), test_size=0.2, random_state=0,
                                           stratify=digits.target)
    for split, idx in (("train", np.sort(train_idx)), ("test", np.sort(test_idx))):
        images, labels = load_arrays("digits", split)
        np.testing.assert_array_equal(images, digits.images[idx])
        np.testing.assert_array_equal(labels, digits.target[idx])


def test_load_arrays_mnist(shared_data):
    images, labels = load_arrays("mnist", "train", shared_data)
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.shape == (5000,)
    with pytest.raises(DatasetError, match="unknown split 'valid'"):
        load_arrays("mnist", "valid", shared_data)


def _write_split(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(exist_ok=True)
    for name in MNIST_FILES[:2]:  # train files only need to exist for resolve_data_dir
        (folder / name.removesuffix(".gz")).write_bytes(idx_bytes(np.zeros((1,) * (3 if "images" in name else 1))))
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


def test_load_arrays_count_mismatch_names_both_files(tmp_path):
    _write_split(tmp_path, np.zeros((10, 28, 28), np.uint8), np.zeros(9, np.uint8))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte holds 10 images but .*t10k-labels-idx1-ubyte holds 9"):
        load_arrays("mnist", "test", tmp_path)


def test_load_arrays_labels_with_two_dimensions(tmp_path):
    _write_split(tmp_path, np.zeros((10, 28, 28), np.uint8), np.zeros((10, 1), np.uint8))
    with pytest.raises(IDXFormatError, match=r"t10k-labels-idx1-ubyte: a label file needs 1 dimension"):
        load_arrays("mnist", "test", tmp_path)


def test_load_arrays_wrong_image_shape(tmp_path):
    _write_split(tmp_path, np.zeros((10, 8, 8), np.uint8), np.zeros(10, np.uint8))
    with pytest.raises(DatasetError, match="images are 8x8, mnist expects 28x28"):
        load_arrays("mnist", "test", tmp_path)


# --- to_dataframe / load_dataframe --------------------------------------------------------------------

def test_to_dataframe_schema_and_values(spark, t10k):
    images, labels = t10k[0][:300], t10k[1][:300]
    df = to_dataframe(spark, images, labels, id_offset=1000)
    assert df.schema.simpleString() == SCHEMA
    rows = df.orderBy("id").toPandas()
    assert rows["id"].tolist() == list(range(1000, 1300))
    assert rows["label"].tolist() == labels.tolist()
    pixels = np.stack(rows["image"].to_numpy())
    assert pixels.shape == (300, 784) and pixels.min() >= 0.0 and pixels.max() <= 1.0
    np.testing.assert_array_equal(pixels, (images.reshape(300, 784) / 255.0).astype(np.float32))


def test_to_dataframe_class_filter_and_relabel(spark, t10k):
    df = to_dataframe(spark, *t10k, classes=[1, 0], num_partitions=3)
    assert df.schema.simpleString() == SCHEMA
    assert df.rdd.getNumPartitions() == 3
    counts = {row["label"]: row["count"] for row in df.groupBy("label").count().collect()}
    assert counts == {0: 1135, 1: 980}  # label 0 is digit 1
    ids = np.array([row["id"] for row in df.where("label = 0").select("id").collect()])
    assert np.all(t10k[1][ids] == 1)


@pytest.mark.parametrize("kwargs, words", [
    ({"labels": np.zeros(4, np.int64)}, "labels must have shape (3,)"),
    ({"classes": [1, 1]}, "distinct"),
    ({"classes": [0.5]}, "ints"),
    ({"classes": []}, "non-empty"),
    ({"num_partitions": 0}, "num_partitions"),
    ({"max_value": 0}, "max_value"),
])
def test_to_dataframe_validation(spark, kwargs, words):
    arguments = {"images": np.zeros((3, 2, 2), np.uint8), "labels": np.zeros(3, np.int64), **kwargs}
    with pytest.raises(DatasetError) as info:
        to_dataframe(spark, **arguments)
    assert words in str(info.value)


def test_load_dataframe_mnist_binary(spark, shared_data):
    df = load_dataframe(spark, "mnist", "train", data_dir=shared_data, classes=[0, 1], num_partitions=2)
    assert df.schema.simpleString() == SCHEMA
    assert df.count() == 1000 and df.rdd.getNumPartitions() == 2
    with pytest.raises(DatasetError, match=r"classes \[10\] are outside mnist's classes 0..9"):
        load_dataframe(spark, "mnist", data_dir=shared_data, classes=[0, 10])


def test_load_dataframe_digits_scales_by_16(spark):
    df = load_dataframe(spark, "digits", "test")
    pixels = np.stack(df.toPandas()["image"].to_numpy())
    assert pixels.shape == (360, 64) and pixels.max() == 1.0 and pixels.min() == 0.0
