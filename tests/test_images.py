"""Tests of dfnet.images on folders of REAL Fashion-MNIST images written with Pillow (PNG, JPEG,
BMP, GIF; grey and tinted RGB; 28x28 and 32x32), read by a real local Spark session.

Every expected value is computed independently: the IDX bytes / 255 for lossless files, Pillow
itself on the same file for resized and converted ones.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfnet import images
from dfnet.datasets import DATASETS, read_idx, to_dataframe
from dfnet.errors import DFNetError, ImageFolderError
from dfnet.images import (ImageFolder, as_training_frame, check_decoded, decode_binary, read_image_folder,
                          to_features)
from dfnet.images.layout import class_folder, list_folder, root_path

FASHION = [name.replace("/", "-") for name in DATASETS["fashion-mnist"].class_names]  # "T-shirt/top" is no folder name
SCHEMA = "struct<id:bigint,image:array<float>,label:int,path:string>"


def scaled(u8: np.ndarray) -> np.ndarray:
    """Pixels as dfnet.datasets scales IDX bytes: float32 division by 255."""
    return np.divide(np.asarray(u8).reshape(-1), 255.0, dtype=np.float32)


def tinted(grey: np.ndarray) -> np.ndarray:
    """A colour version of a grey image: each channel a different share of it."""
    g = grey.astype(np.float64)
    return np.stack([g, g * 0.6 + 40, g * 0.3], axis=-1).clip(0, 255).astype(np.uint8)


def bigger(grey: np.ndarray, size: int = 32) -> np.ndarray:
    return np.asarray(Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC))


def save(path: Path, pixels: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def index_of(path: str) -> int:
    """The IDX row a file was written from: its name starts with the five-digit index."""
    return int(re.search(r"/(\d{5})[^/]*$", path).group(1))


def rows_of(df) -> dict[str, dict]:
    return {r["path"]: r.asDict() for r in df.collect()}


def cached_rdds(spark) -> int:
    return spark.sparkContext._jsc.getPersistentRDDs().size()


def snapshot(root: Path) -> list:
    """Every file and folder under root with its size, mtime and sha256."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out.append(("dir", os.path.relpath(os.path.join(dirpath, d), root)))
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out.append(("file", os.path.relpath(p, root), st.st_size, st.st_mtime_ns,
                        hashlib.sha256(Path(p).read_bytes()).hexdigest()))
    return sorted(out)


def pillow_features(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The expected features of one file, straight from Pillow: to the target channels, then resized."""
    H, W, C = shape
    im = Image.open(path.removeprefix("file:"))
    im = im.convert("L" if C == 1 else "RGB")
    if im.size != (W, H):
        im = im.resize((W, H), Image.Resampling.BILINEAR)
    return scaled(np.asarray(im))


@pytest.fixture(scope="module")
def fashion(shared_data):
    folder = shared_data / "fashion-mnist"
    return read_idx(folder / "t10k-images-idx3-ubyte.gz"), read_idx(folder / "t10k-labels-idx1-ubyte.gz")


def first_of_class(labels: np.ndarray, label: int, count: int, skip: int = 0) -> list[int]:
    return [int(i) for i in np.flatnonzero(labels == label)[skip:skip + count]]


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory, fashion):
    """200 grey 28x28 PNGs, 50 in each of four class folders (one with a space in its name)."""
    pixels, labels = fashion
    root = tmp_path_factory.mktemp("grey") / "clothes"
    for label in (0, 1, 8, 9):  # T-shirt-top, Trouser, Bag, Ankle boot: sorted order differs from label order
        for i in first_of_class(labels, label, 50):
            save(root / FASHION[label] / f"{i:05d}.png", pixels[i])
    (root / "README.txt").write_text("not read: a file beside the class folders")
    return root


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, fashion):
    """96 images of three classes: grey and tinted RGB, PNG and JPEG, 28x28 and 32x32."""
    pixels, labels = fashion
    root = tmp_path_factory.mktemp("mixed") / "mixed"
    for label in (3, 4, 7):
        for k, i in enumerate(first_of_class(labels, label, 32)):
            grey = pixels[i]
            variant = k % 8
            target = root / FASHION[label]
            if variant == 0:
                save(target / f"{i:05d}-grey.png", grey)
            elif variant == 1:
                save(target / f"{i:05d}-grey.jpg", grey)
            elif variant == 2:
                save(target / f"{i:05d}-rgb.png", tinted(grey))
            elif variant == 3:
                save(target / f"{i:05d}-rgb.JPEG", tinted(grey), "JPEG")
            elif variant == 4:
                save(target / f"{i:05d}-grey32.png", bigger(grey))
            elif variant == 5:
                save(target / f"{i:05d}-rgb32.png", tinted(bigger(grey)))
            elif variant == 6:
                save(target / f"{i:05d}-grey32.jpeg", bigger(grey), "JPEG")
            else:
                save(target / f"{i:05d}-rgba.png", np.dstack([tinted(grey), np.full((28, 28), 128, np.uint8)]))
    return root


def small_folder(root: Path, fashion, classes=(0, 1), per_class: int = 3) -> Path:
    pixels, labels = fashion
    for label in classes:
        for i in first_of_class(labels, label, per_class):
            save(root / FASHION[label] / f"{i:05d}.png", pixels[i])
    return root


# --- the folder becomes training rows -------------------------------------------------------------

@pytest.fixture(scope="module")
def grey_read(spark, grey_folder):
    """One read_image_folder of the grey folder with the defaults: the folder, its rows by path,
    and the folder's listing and hashes before and after the read."""
    before = snapshot(grey_folder)
    folder = read_image_folder(spark, grey_folder)
    try:
        train, test = rows_of(folder.train), rows_of(folder.test)
        counts = (folder.train.count(), folder.test.count())
    finally:
        folder.unpersist()
    return folder, train, test, counts, before, snapshot(grey_folder)


def test_labels_follow_sorted_class_names_and_png_pixels_are_the_idx_bytes(spark, grey_read, grey_folder, fashion):
    pixels, labels = fashion
    folder, train, test, counts, before, after = grey_read
    assert isinstance(folder, ImageFolder)
    assert folder.class_names == sorted(FASHION[i] for i in (0, 1, 8, 9)) == \
        ["Ankle boot", "Bag", "T-shirt-top", "Trouser"]
    assert folder.image_shape == (28, 28, 1) and not folder.split_folders
    assert folder.train.schema.simpleString() == SCHEMA == folder.test.schema.simpleString()
    assert folder.skipped == [] and folder.skipped_count == 0 and folder.ignored_count == 1  # README.txt
    rows = {**train, **test}
    assert len(rows) == 200 == folder.train_rows + folder.test_rows and counts == (folder.train_rows, folder.test_rows)
    for path, row in rows.items():
        i = index_of(path)
        assert path.startswith(f"file:{grey_folder}/")
        np.testing.assert_array_equal(np.array(row["image"], dtype=np.float32), scaled(pixels[i]))
        assert folder.class_names[row["label"]] == FASHION[labels[i]] == path.split("/")[-2]
    ids = [row["id"] for row in rows.values()]
    assert len(set(ids)) == 200 and min(ids) >= 0
    # the same values as dfnet.datasets gives for the same IDX rows
    order = sorted(index_of(p) for p in rows)
    by_index = {index_of(p): row for p, row in rows.items()}
    for i, row in zip(order, to_dataframe(spark, pixels[order], labels[order]).orderBy("id").collect()):
        np.testing.assert_array_equal(np.array(by_index[i]["image"], np.float32), np.array(row["image"], np.float32))
    assert after == before  # nothing in the user's folder was written or changed


def test_the_split_is_seeded_and_stable(spark, grey_read, grey_folder):
    def ids(rows):
        return {path: row["id"] for path, row in rows.items()}

    def split_of(seed):
        folder = read_image_folder(spark, grey_folder, seed=seed)
        try:
            return ({r["path"]: r["id"] for r in folder.train.select("path", "id").collect()},
                    {r["path"]: r["id"] for r in folder.test.select("path", "id").collect()})
        finally:
            folder.unpersist()

    _, train_rows, test_rows, _, _, _ = grey_read
    train, test = ids(train_rows), ids(test_rows)
    assert split_of(0) == (train, test)  # a second read: the same rows, the same ids
    assert not set(train) & set(test) and len(train) + len(test) == 200
    assert 20 <= len(test) <= 60  # 20% of 200, by a hash
    train_1, test_1 = split_of(1)
    assert set(test_1) != set(test) and {**train_1, **test_1} == {**train, **test}  # ids do not depend on the seed


def test_train_and_test_folders_give_the_split(spark, tmp_path, fashion):
    pixels, labels = fashion
    root = tmp_path / "split"
    for label in (2, 5, 6):
        for k, i in enumerate(first_of_class(labels, label, 12)):
            save(root / ("test" if k < 4 else "train") / FASHION[label] / f"{i:05d}.png", pixels[i])
    (root / "train" / "notes.md").write_text("beside the class folders: ignored")
    folder = read_image_folder(spark, root, test_fraction=0.5, seed=3)
    try:
        assert folder.split_folders and folder.class_names == ["Pullover", "Sandal", "Shirt"]
        assert (folder.train_rows, folder.test_rows) == (24, 12) and folder.ignored_count == 1
        for frame, split in ((folder.train, "train"), (folder.test, "test")):
            for path, row in rows_of(frame).items():
                assert f"/split/{split}/" in path
                assert folder.class_names[row["label"]] == FASHION[labels[index_of(path)]]
                np.testing.assert_array_equal(np.array(row["image"], np.float32), scaled(pixels[index_of(path)]))
    finally:
        folder.unpersist()


@pytest.fixture(scope="module")
def mixed_rgb(spark, mixed_folder):
    """The mixed folder read at 28x28 (3 channels, from its colour images): the folder and its rows."""
    folder = read_image_folder(spark, mixed_folder, image_size=(28, 28), test_fraction=0.0)
    try:
        return folder, rows_of(folder.train)
    finally:
        folder.unpersist()


def test_resize_and_convert_equal_pillow_on_the_same_files(spark, mixed_folder, mixed_rgb):
    folder, rows = mixed_rgb
    assert folder.image_shape == (28, 28, 3)  # colour images present: 3 channels unless asked
    assert folder.check.colour and {(h, w) for h, w, _, _ in folder.check.sizes} == {(28, 28), (32, 32)}
    cases = [((28, 28, 3), rows)]
    for channels, shape in ((1, (28, 28, 1)), (3, (24, 20, 3))):
        other = read_image_folder(spark, mixed_folder, image_size=shape[:2], channels=channels, test_fraction=0.0)
        try:
            assert other.image_shape == shape
            cases.append((shape, rows_of(other.train)))
        finally:
            other.unpersist()
    for shape, got in cases:
        assert len(got) == 96
        for path, row in got.items():
            np.testing.assert_array_equal(np.array(row["image"], np.float32), pillow_features(path, shape),
                                          err_msg=f"{path} at {shape}")


def test_bmp_and_gif_read_losslessly_and_grey_palettes_stay_grey(spark, tmp_path, fashion):
    pixels, labels = fashion
    root = tmp_path / "bmpgif"
    for label in (0, 7):
        for k, i in enumerate(first_of_class(labels, label, 6)):
            save(root / FASHION[label] / f"{i:05d}.{'bmp' if k % 2 else 'gif'}", pixels[i])
    folder = read_image_folder(spark, root, test_fraction=0.0)
    try:
        assert folder.image_shape == (28, 28, 1)  # a grey GIF is a palette image, and still grey
        rows = rows_of(folder.train)
        assert len(rows) == 12 and {p.rsplit(".", 1)[1] for p in rows} == {"bmp", "gif"}
        for path, row in rows.items():
            np.testing.assert_array_equal(np.array(row["image"], np.float32), scaled(pixels[index_of(path)]))
    finally:
        folder.unpersist()
    gifs = read_image_folder(spark, root, extensions=(".GIF",), test_fraction=0.0)  # any case, other files ignored
    try:
        assert gifs.train_rows == 6 and gifs.ignored_count == 6
        assert all(p.endswith(".gif") for p in rows_of(gifs.train))
    finally:
        gifs.unpersist()


def test_image_source_and_binary_file_frames_give_the_same_pixels(spark, mixed_folder, mixed_rgb):
    shape = (28, 28, 3)
    _, expected = mixed_rgb

    binary = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(mixed_folder))
    frame, got_shape, check = as_training_frame(binary, "content", image_shape=shape)
    try:
        assert got_shape == shape and check.rows == 96 and check.bad_count == 0
        assert frame.columns == ["path", "modificationTime", "length", "content"]
        got = {r["path"]: r["content"] for r in frame.collect()}
        assert set(got) == set(expected)
        for path, values in got.items():
            np.testing.assert_array_equal(np.array(values, np.float32), expected[path]["image"], err_msg=path)
    finally:
        check.unpersist()

    source = spark.read.format("image").option("recursiveFileLookup", "true").load(str(mixed_folder))
    frame, got_shape, check = as_training_frame(source, "image", image_shape=shape)
    try:
        assert got_shape == shape and frame.columns == ["image", "path"]
        got = {r["path"]: np.array(r["image"], np.float32) for r in frame.collect()}
        assert set(got) == set(expected)  # origin URIs become the paths binaryFile prints
        for path, values in got.items():  # JPEG too: Java 17's decoder and Pillow's libjpeg agree here
            np.testing.assert_array_equal(values, expected[path]["image"], err_msg=path)
    finally:
        check.unpersist()


def test_an_array_column_passes_unchanged(spark, fashion):
    pixels, labels = fashion
    df = to_dataframe(spark, pixels[:4], labels[:4])
    assert as_training_frame(df, "image") == (df, None, None)


# --- decoding, one row at a time --------------------------------------------------------------------

def test_decode_binary_reports_each_bad_file_and_handles_every_mode(spark, tmp_path, fashion):
    pixels, _ = fashion
    grey, rgb = pixels[0], tinted(pixels[0])
    root = tmp_path / "modes"
    save(root / "grey.png", grey)
    save(root / "rgba.png", np.dstack([rgb, np.full((28, 28), 7, np.uint8)]))
    save(root / "la.png", np.dstack([grey, np.full((28, 28), 7, np.uint8)]))
    save(root / "sixteen.png", grey.astype(np.uint16) * 257)
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.gif")
    Image.fromarray(grey).convert("1").save(root / "bits.bmp")
    (root / "fake.png").write_bytes(b"this is no image at all")
    good_png = (root / "grey.png").read_bytes()
    (root / "cut.png").write_bytes(good_png[:len(good_png) // 2])
    (root / "empty.png").write_bytes(b"")  # Spark's file sources skip empty files: it never shows up
    df = spark.read.format("binaryFile").load(str(root))
    rows = {r["path"].rsplit("/", 1)[1]: r for r in decode_binary(df).collect()}
    assert rows["fake.png"]["error"] == "not an image (cannot identify image file)"
    assert rows["cut.png"]["error"].startswith("truncated or corrupt: ")
    assert "empty.png" not in rows
    assert all(rows[n]["pixels"] is None for n in ("fake.png", "cut.png"))

    def decoded(name):
        r = rows[name]
        assert r["error"] is None, r["error"]
        shape = (r["height"], r["width"]) + ((3,) if r["channels"] == 3 else ())
        return np.frombuffer(r["pixels"], np.uint8).reshape(shape)

    np.testing.assert_array_equal(decoded("grey.png"), grey)
    np.testing.assert_array_equal(decoded("rgba.png"), rgb)  # alpha dropped
    np.testing.assert_array_equal(decoded("la.png"), grey)
    np.testing.assert_array_equal(decoded("sixteen.png"), grey)  # the high byte
    np.testing.assert_array_equal(decoded("cmyk.jpg"), np.asarray(Image.open(root / "cmyk.jpg").convert("RGB")))
    np.testing.assert_array_equal(decoded("palette.gif"), np.asarray(Image.open(root / "palette.gif").convert("RGB")))
    np.testing.assert_array_equal(decoded("bits.bmp"), np.asarray(Image.open(root / "bits.bmp").convert("L")))
    with pytest.raises(ImageFolderError, match=r"/modes/cut\.png: truncated or corrupt: .*\(and 1 more bad file: "
                                               r"\S+/modes/fake\.png: not an image \(cannot identify image file\)\)"):
        check_decoded(decode_binary(df))
    check = check_decoded(decode_binary(df), image_size=(28, 28), skip_bad_images=True)
    assert check.skipped_count == 2 and [p.rsplit("/", 1)[1] for p, _ in check.skipped] == ["cut.png", "fake.png"]
    assert check.image_shape == (28, 28, 3) and check.frame.count() == 7
    features = to_features(check.frame, (28, 28, 1)).collect()
    assert all(len(r["image"]) == 784 for r in features)


def test_pillow_is_asked_for_by_name_when_missing(spark, grey_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'dfnet[images]'")):
        read_image_folder(spark, grey_folder)


def test_listing_the_class_folders_reads_no_file_content(spark, grey_folder):
    spark.conf.set("spark.sql.sources.binaryFile.maxLength", "1")  # any file read would fail
    try:
        uri, root = root_path(spark, str(grey_folder))
        reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
        layout = list_folder(spark, reader, uri, root, str(grey_folder), images.IMAGE_EXTENSIONS)
        assert layout.class_names == ["Ankle boot", "Bag", "T-shirt-top", "Trouser"] and layout.images == 200
        with pytest.raises(Exception, match="exceeds the max length"):
            reader.load(uri).select("content").collect()
    finally:
        spark.conf.unset("spark.sql.sources.binaryFile.maxLength")


def test_one_class_folder_rule_for_the_listing_and_both_readers(spark):
    rels = ["Bag/1.png", "Bag/deep/2.png", "x.png", "train/Bag/3.png", "test/Coat/deep/4.png", "train/5.png"]
    df = spark.createDataFrame([(r,) for r in rels], "rel string")
    rel = df["rel"]
    got = df.select("rel", class_folder(rel, False).alias("flat"), class_folder(rel, True).alias("split"),
                    class_folder(rel, None).alias("unknown")).collect()
    assert {r["rel"]: (r["flat"], r["split"], r["unknown"]) for r in got} == {
        "Bag/1.png": ("Bag", None, "Bag"),
        "Bag/deep/2.png": ("Bag", None, "Bag"),
        "x.png": (None, None, None),  # directly in the root: in no class folder
        "train/Bag/3.png": ("train", "Bag", "Bag"),
        "test/Coat/deep/4.png": ("test", "Coat", "Coat"),
        "train/5.png": ("train", None, "train"),
    }


def test_a_read_runs_two_aggregates_and_the_splits_read_the_persisted_images(spark, grey_folder):
    from jobcount import jobs_run_by

    holder = {}
    jobs = jobs_run_by(spark, lambda: holder.setdefault("f", read_image_folder(spark, grey_folder)))
    folder = holder["f"]
    try:
        # The listing aggregate (a map and a result job) and the checking one (AQE materializes the
        # persisted images as a job of its own, then a map and a result job): one decoding pass.
        assert jobs <= 5
        assert folder.decoded.is_cached
        plan = folder.train._jdf.queryExecution().executedPlan().toString()
        above_the_cache, _, cached = plan.partition("InMemoryTableScan")
        assert "_decode_batch" in cached and "_decode_batch" not in above_the_cache and "features" in above_the_cache
    finally:
        folder.unpersist()


# --- bad input is refused, naming the file or folder -------------------------------------------------

def _not_an_image(root, fashion):
    (root / FASHION[0] / "fake.png").write_bytes(b"GIF89a? no: plain text")
    return r"T-shirt-top/fake\.png: not an image \(cannot identify image file\)"


def _truncated_png(root, fashion):
    data = save(root / "tmp.png", fashion[0][5]).read_bytes()
    (root / "tmp.png").unlink()
    (root / FASHION[1] / "cut.png").write_bytes(data[:len(data) // 2])
    return r"Trouser/cut\.png: truncated or corrupt: "


def _truncated_jpeg(root, fashion):
    data = save(root / "tmp.jpg", tinted(fashion[0][5])).read_bytes()
    (root / "tmp.jpg").unlink()
    (root / FASHION[1] / "cut.jpg").write_bytes(data[:len(data) // 2])
    return r"Trouser/cut\.jpg: truncated or corrupt: "


def _mixed_sizes(root, fashion):
    save(root / FASHION[1] / "00000-big.png", bigger(fashion[0][0]))
    return (r"images differ in size \(height x width\): 6 are 28x28 \(e\.g\. file:\S+\.png\), "
            r"1 is 32x32 \(e\.g\. file:\S+/Trouser/00000-big\.png\); pass image_size=\(H, W\)")


def _empty_class(root, fashion):
    (root / "Coat").mkdir()
    return r"clothes/Coat: class folder holds no images \(no \.png, .*\.gif files\)"


def _class_of_other_files(root, fashion):
    (root / "Coat").mkdir()
    (root / "Coat" / "notes.txt").write_text("no image here")
    return r"clothes/Coat: class folder holds no images"


def _no_class_folders(root, fashion):
    for png in root.rglob("*.png"):
        png.rename(root / png.name)
    for folder in [p for p in root.iterdir() if p.is_dir()]:
        folder.rmdir()
    return r"clothes: no class folders: expected \S+/clothes/<class>/<image> .*found 6 image file\(s\) directly in it"


def _nothing(root, fashion):
    for png in root.rglob("*.png"):
        png.unlink()
    for folder in [p for p in root.iterdir() if p.is_dir()]:
        folder.rmdir()
    return r"clothes: no class folders: .*found nothing"


def _missing(root, fashion):
    for png in root.rglob("*.png"):
        png.unlink()
    for folder in [p for p in root.iterdir() if p.is_dir()]:
        folder.rmdir()
    root.rmdir()
    return r"clothes: no such folder"


def _mismatched_splits(root, fashion):
    pixels, labels = fashion
    for split, classes in (("train", (0, 1)), ("test", (0, 2))):
        for label in classes:
            for i in first_of_class(labels, label, 2):
                save(root / split / FASHION[label] / f"{i:05d}.png", pixels[i])
    for label in (0, 1):
        for png in (root / FASHION[label]).iterdir():
            png.unlink()
        (root / FASHION[label]).rmdir()
    return r"clothes: train/ and test/ must hold the same class folders; only in train/: \['Trouser'\]; " \
           r"only in test/: \['Pullover'\]"


def _splits_and_more(root, fashion):
    pixels, labels = fashion
    for split in ("train", "test"):
        for i in first_of_class(labels, 0, 2):
            save(root / split / FASHION[0] / f"{i:05d}.png", pixels[i])
    return r"clothes: holds train/ and test/, .* also holds T-shirt-top/, Trouser/"


BAD_INPUTS = {
    "not-an-image": _not_an_image, "truncated-png": _truncated_png, "truncated-jpeg": _truncated_jpeg,
    "mixed-sizes": _mixed_sizes, "empty-class-folder": _empty_class, "class-of-other-files": _class_of_other_files,
    "no-class-folders": _no_class_folders, "empty-folder": _nothing, "missing-folder": _missing,
    "mismatched-train-test": _mismatched_splits, "train-test-and-more": _splits_and_more,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_naming_the_file_or_folder(spark, tmp_path, fashion, case):
    root = small_folder(tmp_path / "clothes", fashion)
    pattern = BAD_INPUTS[case](root, fashion)
    cached_before = cached_rdds(spark)
    with pytest.raises(ImageFolderError, match=pattern) as caught:
        read_image_folder(spark, root)
    assert isinstance(caught.value, DFNetError)
    assert cached_rdds(spark) == cached_before  # a refusal leaves nothing persisted


def test_skip_bad_images_leaves_them_out_and_reports_them(spark, tmp_path, fashion):
    root = small_folder(tmp_path / "clothes", fashion, per_class=5)
    _not_an_image(root, fashion)
    _truncated_png(root, fashion)
    _truncated_jpeg(root, fashion)
    before = snapshot(root)
    folder = read_image_folder(spark, root, skip_bad_images=True, test_fraction=0.0)
    try:
        assert folder.skipped_count == 3 and folder.train_rows == 10
        assert sorted(p.rsplit("/", 2)[1] + "/" + p.rsplit("/", 1)[1] for p, _ in folder.skipped) == \
            ["T-shirt-top/fake.png", "Trouser/cut.jpg", "Trouser/cut.png"]
        assert {e.split(":")[0] for _, e in folder.skipped} == {"not an image (cannot identify image file)",
                                                               "truncated or corrupt"}
        paths = [r["path"] for r in folder.train.select("path").collect()]
        assert len(paths) == 10 and not any(p.endswith(("fake.png", "cut.png", "cut.jpg")) for p in paths)
    finally:
        folder.unpersist()
    assert snapshot(root) == before


def test_bad_arguments_are_refused_before_any_job(spark, grey_folder):
    from dfnet.errors import ConfigError

    for kwargs in (dict(image_size=(28,)), dict(image_size=(0, 28)), dict(channels=2), dict(test_fraction=1.0),
                   dict(extensions=("png",))):
        with pytest.raises(ConfigError):
            read_image_folder(spark, grey_folder, **kwargs)


# --- Spark Connect -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_read_image_folder_on_spark_connect_equals_the_classic_session(mixed_rgb, connect, mixed_folder):
    _, expected = mixed_rgb
    started = time.monotonic()
    remote = read_image_folder(connect, mixed_folder, image_size=(28, 28), test_fraction=0.0)
    try:
        assert not remote.split_folders and remote.image_shape == (28, 28, 3) and remote.train_rows == 96
        got = rows_of(remote.train)
    finally:
        remote.unpersist()
    print(f"read_image_folder and collect on Spark Connect: {time.monotonic() - started:.1f} s")
    assert set(got) == set(expected)
    for path, row in got.items():
        assert (row["id"], row["label"]) == (expected[path]["id"], expected[path]["label"])
        np.testing.assert_array_equal(np.array(row["image"], np.float32), np.array(expected[path]["image"], np.float32))
