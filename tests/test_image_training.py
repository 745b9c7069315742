"""Training and scoring on folders of image files, end to end through the command line.

The folder is real Fashion-MNIST written out as PNG and JPEG files, some
grayscale and some RGB, of two sizes, in ``train/<class>/`` and
``test/<class>/``. Trained with ``--image-folder``, the model reaches the
accuracy of the same images read from IDX within one point; ``dfnet predict
--image-folder`` scores the test folder to the same predictions; a colour
folder trains the CNN on 3 channels; a bad file is named, or skipped and
reported with ``--skip-bad-images``; frames of Spark's ``image`` and
``binaryFile`` sources go straight into ``fit`` and ``predict``.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import functions as F

from cli_helpers import run_cli

from dfnet import TrainedModel
from dfnet.config import TrainConfig
from dfnet.datasets import get_dataset, read_idx, to_dataframe
from dfnet.train import fit

TRAIN, TEST = 6000, 2000
EPOCHS = ["--epochs", "5", "--no-progress"]


def _safe(name: str) -> str:
    return name.replace("/", "-")


def _write(image: np.ndarray, path, index: int) -> None:
    """Image ``index`` of the set in one of six forms: PNG or JPEG, gray or tinted RGB, 28 or 32 pixels."""
    picture = Image.fromarray(image)
    if index % 3 == 1:  # RGB, slightly tinted: gray stays the main signal
        rgb = np.stack([image, (image * 0.95).astype(np.uint8), (image * 0.9).astype(np.uint8)], axis=2)
        picture = Image.fromarray(rgb)
    if index % 4 == 3:
        picture = picture.resize((32, 32), Image.Resampling.BILINEAR)
    if index % 2:
        picture.save(path.with_suffix(".jpg"), quality=95)
    else:
        picture.save(path.with_suffix(".png"))


@pytest.fixture(scope="module")
def fashion(shared_data):
    folder = shared_data / "fashion-mnist"
    return {"train": (read_idx(folder / "train-images-idx3-ubyte.gz")[:TRAIN],
                      read_idx(folder / "train-labels-idx1-ubyte.gz")[:TRAIN]),
            "test": (read_idx(folder / "t10k-images-idx3-ubyte.gz")[:TEST],
                     read_idx(folder / "t10k-labels-idx1-ubyte.gz")[:TEST])}


@pytest.fixture(scope="module")
def image_folder(fashion, tmp_path_factory):
    root = tmp_path_factory.mktemp("clothes") / "clothes"
    names = get_dataset("fashion-mnist").class_names
    for split, (images, labels) in fashion.items():
        for name in names:
            (root / split / _safe(name)).mkdir(parents=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            _write(image, root / split / _safe(names[label]) / f"{split}-{i:05d}", i)
    return root


def _listing(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folder_run(spark, image_folder, tmp_path_factory):
    before = _listing(image_folder)
    output = tmp_path_factory.mktemp("image-run") / "run"
    code, out, err = run_cli(["train", "--image-folder", str(image_folder), "--image-size", "28,28", "--channels", "1",
                              "--output", str(output), *EPOCHS])
    assert code == 0, err
    assert _listing(image_folder) == before  # nothing of the user's folder changed
    return out, output


def test_image_folder_trains_to_the_accuracy_of_the_same_images_from_idx(spark, fashion, folder_run):
    out, output = folder_run
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["dataset"] == "image-folder"
    assert metrics["images"]["train"] == TRAIN and metrics["images"]["test"] == TEST
    assert metrics["image_shape"] == [28, 28, 1]
    names = sorted(_safe(n) for n in get_dataset("fashion-mnist").class_names)
    assert metrics["class_names"] == names
    assert f"Images: {TRAIN} train, {TEST} test (train/ and test/ folders), 10 classes" in out
    assert "28x28 grayscale" in out

    train = to_dataframe(spark, *fashion["train"])
    test = to_dataframe(spark, *fashion["test"])
    from_idx = fit(train, TrainConfig(epochs=5, image_shape=(28, 28, 1)), verbose=False, key_cols=["id"])
    idx_accuracy = from_idx.evaluate(test).accuracy
    print(f"test accuracy: image folder {metrics['test_accuracy']:.4f}, same images from IDX {idx_accuracy:.4f}")
    assert abs(metrics["test_accuracy"] - idx_accuracy) <= 0.01, (metrics["test_accuracy"], idx_accuracy)
    assert metrics["test_accuracy"] > 0.8

    model = TrainedModel.load(output / "model")
    assert model.class_names == names
    report = (output / "report.html").read_text()
    assert names[0] in report  # class names reach the report's figures


def test_predict_scores_an_image_folder_into_a_table(spark, image_folder, folder_run, tmp_path):
    _, output = folder_run
    metrics = json.loads((output / "metrics.json").read_text())
    code, out, err = run_cli(["predict", "--model", str(output), "--image-folder", str(image_folder / "test"),
                              "--table", "clothes_predictions", "--no-image"])
    assert code == 0, err
    assert f"{TEST} images in {image_folder / 'test'} ({TEST} labelled by their class folder)" in out
    accuracy = float(re.search(r"accuracy (\d\.\d+)", out).group(1))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    table = spark.table("clothes_predictions").toPandas()
    assert len(table) == TEST and table["label"].notna().all()
    assert table["path"].str.endswith((".png", ".jpg")).all()  # the file of each prediction

    # images straight in a folder, with no class folders, are scored unlabelled
    loose = tmp_path / "new-photos"
    loose.mkdir()
    for path in sorted((image_folder / "test").rglob("*.png"))[:7]:
        (loose / path.name).write_bytes(path.read_bytes())
    code, out, err = run_cli(["predict", "--model", str(output), "--image-folder", str(loose),
                              "--table", "loose_predictions"])
    assert code == 0, err
    assert "7 images" in out and "unlabelled" in out
    assert spark.table("loose_predictions").where(F.col("label").isNull()).count() == 7

    # one class folder on its own: its name is the label
    bag = image_folder / "test" / "Bag"
    code, out, err = run_cli(["predict", "--model", str(output), "--image-folder", str(bag), "--table", "bags"])
    assert code == 0, err
    bags = len(list(bag.iterdir()))
    assert f"{bags} images in {bag} ({bags} labelled by their class folder)" in out
    assert {r["label"] for r in spark.table("bags").select("label").distinct().collect()} == {metrics["class_names"].index("Bag")}


def _colour_folder(root, fashion, per_class: int = 60):
    """Classes told apart by colour as much as by shape: coat-like shapes in red, trousers in blue."""
    images, labels = fashion["train"]
    for cls, tint in ((0, (1.0, 0.2, 0.2)), (1, (0.2, 0.3, 1.0))):
        folder = root / f"class-{cls}"
        folder.mkdir(parents=True)
        for i, image in enumerate(images[labels == cls][:per_class]):
            rgb = np.stack([(image * t).astype(np.uint8) for t in tint], axis=2)
            Image.fromarray(rgb).save(folder / f"{i:03d}.png")
    return root


def test_colour_images_train_the_cnn_on_three_channels(spark, fashion, tmp_path):
    root = _colour_folder(tmp_path / "colours", fashion)
    output = tmp_path / "cnn-run"
    code, out, err = run_cli(["train", "--image-folder", str(root), "--model", "cnn", "--kernels", "4",
                              "--hidden", "16", "--epochs", "2", "--output", str(output), "--no-progress"])
    assert code == 0, err
    assert "28x28 RGB" in out and "seeded split" in out
    model = TrainedModel.load(output / "model")
    assert tuple(model.network.input_shape) == (28, 28, 3)
    assert model.network.layers[0].in_channels == 3
    report = (output / "report.html").read_text()
    assert '"type":"image"' in report  # the samples are drawn in colour


def test_bad_files_are_named_or_skipped_and_reported(spark, fashion, tmp_path):
    root = _colour_folder(tmp_path / "with-bad", fashion, per_class=20)
    bad = root / "class-1" / "broken.png"
    good = next((root / "class-0").glob("*.png")).read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a truncated PNG
    output = tmp_path / "bad-run"
    code, out, err = run_cli(["train", "--image-folder", str(root), "--epochs", "1", "--output", str(output),
                              "--no-progress", "--no-report"])
    assert code == 2 and "broken.png" in err and "truncated" in err
    assert not output.exists()  # refused before training: no run folder

    code, out, err = run_cli(["train", "--image-folder", str(root), "--epochs", "1", "--output", str(output),
                              "--no-progress", "--no-report", "--skip-bad-images"])
    assert code == 0, err
    assert "Skipped 1 unreadable file(s)" in out and "broken.png" in out
    skipped = json.loads((output / "metrics.json").read_text())["skipped_images"]
    assert skipped["count"] == 1 and skipped["first"][0]["path"].endswith("class-1/broken.png")
    assert bad.read_bytes() == good[: len(good) // 2]  # the user's file is left as it was


def test_image_options_are_checked_before_spark_starts(tmp_path):
    code, _, err = run_cli(["train", "--image-size", "28,28"])
    assert code == 2 and "--image-size" in err and "--image-folder" in err
    code, _, err = run_cli(["train", "--image-folder", "x", "--dataset", "mnist"])
    assert code == 2 and "--dataset" in err
    code, _, err = run_cli(["train", "--image-folder", "x", "--image-shape", "28,28,1"])
    assert code == 2 and "--image-size" in err
    photos = tmp_path / "photos"
    (photos / "cats").mkdir(parents=True)
    (photos / "cats" / "1.png").write_bytes(b"kept")
    for output in (photos, photos / "run", tmp_path):  # the folder itself, inside it, around it
        code, _, err = run_cli(["train", "--image-folder", str(photos), "--output", str(output), "--overwrite"])
        assert code == 2 and "overlap" in err, output
    assert (photos / "cats" / "1.png").read_bytes() == b"kept"


def test_an_image_folder_run_is_scored_only_on_images(folder_run):
    _, output = folder_run
    code, _, err = run_cli(["predict", "--model", str(output), "--table", "nothing"])
    assert code == 2 and "--image-folder" in err


@pytest.mark.journey
def test_fit_and_predict_take_image_source_and_binary_file_frames(spark, fashion, tmp_path):
    root = _colour_folder(tmp_path / "sources", fashion, per_class=40)
    def label(path):
        return F.when(path.contains("/class-1/"), 1).otherwise(0).cast("int")

    images = spark.read.format("image").load(str(root / "*")).withColumn("label", label(F.col("image.origin")))
    model = fit(images, TrainConfig(epochs=2, hidden=(16,)), verbose=False)
    assert model.config.image_shape == (28, 28, 3) and model.network.num_features == 28 * 28 * 3
    files = spark.read.format("binaryFile").load(str(root / "*")).withColumn("label", label(F.col("path")))
    by_files = model.predict(files.withColumnRenamed("content", "image")).select("path", "prediction")
    by_source = model.predict(images).select("path", "prediction")
    a = {"/".join(r["path"].split("/")[-2:]): r["prediction"] for r in by_files.collect()}
    b = {"/".join(r["path"].split("/")[-2:]): r["prediction"] for r in by_source.collect()}
    assert len(a) == 80 and a == b
