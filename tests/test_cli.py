"""`dfnet train` in-process: the run folder, printed progress, refusals, presets and option checks."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from cli_helpers import FAST, run_cli

from dfnet.cli import build_parser, config_from_args, main
from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, load_dataframe
from dfnet.errors import ConfigError
from dfnet.model import TrainedModel

EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+) \| Loss (\d+\.\d{4}) \| Acc (\d\.\d{4}) \| Batchsize (\d+) \| "
                        r"(\d+\.\d{2}) s(?: \| Val loss (\d+\.\d{4}) \| Val acc (\d\.\d{4}))?$", flags=re.M)


@pytest.fixture(scope="module")
def digits_arrays():
    return load_arrays("digits", "train"), load_arrays("digits", "test")


def read_json(path):
    return json.loads(path.read_text())


@pytest.mark.journey
def test_train_writes_the_run_folder(digits_run):
    code, _, err, output = digits_run
    assert code == 0, err
    assert sorted(p.name for p in output.iterdir()) == ["history.json", "metrics.json", "model", "report.html"]
    assert sorted(p.name for p in (output / "model").iterdir()) == ["model.json", "weights.npy"]
    # assembled under a temporary name beside it; nothing of that is left
    assert [p.name for p in output.parent.iterdir()] == ["run"]


def test_history_has_one_record_per_epoch_over_all_training_rows(digits_run, digits_arrays):
    (_, train_labels), _ = digits_arrays
    history = read_json(digits_run[3] / "history.json")
    assert isinstance(history, list) and [h["epoch"] for h in history] == [1, 2]
    for record in history:
        assert {"epoch", "loss", "accuracy", "rows", "seconds"} <= set(record)
        # --validation-split 0.2: the other rows, every one once per epoch (sample 1.0)
        assert 0.7 * len(train_labels) < record["rows"] < 0.9 * len(train_labels)
        assert 0 <= record["accuracy"] <= 1 and record["loss"] > 0 and record["seconds"] > 0
        assert 0 <= record["val_accuracy"] <= 1 and record["val_loss"] > 0  # the held-out rows, each epoch
        assert record["steps"] == 1  # auto: one model, one Spark job per epoch
    assert history[1]["loss"] < history[0]["loss"]
    metrics = read_json(digits_run[3] / "metrics.json")
    assert metrics["schedule_plan"]["schedule"] == "average" and metrics["schedule_plan"]["models"] == 1


def test_printed_epoch_lines_match_the_history(digits_run):
    _, stdout, _, output = digits_run
    history = read_json(output / "history.json")
    lines = EPOCH_LINE.findall(stdout)
    assert len(lines) == 2, stdout
    for (epoch, total, loss, acc, batch, seconds, val_loss, val_acc), record in zip(lines, history):
        assert (int(epoch), int(total)) == (record["epoch"], 2)
        assert float(loss) == pytest.approx(record["loss"], abs=5e-5)
        assert float(acc) == pytest.approx(record["accuracy"], abs=5e-5)
        assert int(batch) == round(record["batch_size"]) == 128  # averaging: the local batch, --batch-size
        assert float(seconds) == pytest.approx(record["seconds"], abs=5e-3)
        assert float(val_loss) == pytest.approx(record["val_loss"], abs=5e-5)
        assert float(val_acc) == pytest.approx(record["val_accuracy"], abs=5e-5)


def test_metrics_are_consistent_with_their_confusion_matrix(digits_run, digits_arrays):
    _, (_, test_labels) = digits_arrays
    metrics = read_json(digits_run[3] / "metrics.json")
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (10, 10)
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(test_labels, minlength=10))
    assert metrics["count"] == len(test_labels) == confusion.sum()
    assert metrics["test_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert metrics["test_accuracy"] > 0.5  # two epochs do learn the digits
    assert metrics["dataset"] == "digits" and metrics["class_names"] == [str(i) for i in range(10)]
    for i, c in enumerate(metrics["per_class"]):
        tp, fp, fn = confusion[i, i], confusion[:, i].sum() - confusion[i, i], confusion[i].sum() - confusion[i, i]
        assert (c["class"], c["tp"], c["fp"], c["fn"], c["tn"]) == (i, tp, fp, fn, confusion.sum() - tp - fp - fn)
        assert c["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert c["recall"] == pytest.approx(tp / (tp + fn))
    assert metrics["final_train_accuracy"] == read_json(digits_run[3] / "history.json")[-1]["accuracy"]
    assert TrainConfig.from_dict(metrics["config"]) == TrainConfig(epochs=2, hidden=(32,), batch_size=128, validation_split=0.2)


def test_printed_report_is_the_evaluation(digits_run):
    _, stdout, _, output = digits_run
    metrics = read_json(output / "metrics.json")
    assert f"Test accuracy {metrics['test_accuracy']:.4f} on {metrics['count']} rows" in stdout
    assert len(re.findall(r"^Class \d+ \(\d\)$", stdout, flags=re.M)) == 10
    assert f"Saved model, history.json, metrics.json and report.html to {output}" in stdout


def test_report_has_the_run_figures(digits_run):
    text = (digits_run[3] / "report.html").read_text(encoding="utf-8")
    headings = re.findall(r"<h2>(.*?)</h2>", text)
    assert headings == ["Training history", "Confusion matrix", "Per-class metrics", "Test samples"]
    assert text.count('class="plotly-graph-div"') == len(headings)
    assert "<script src=" not in text  # plotly.js embedded: opens offline


@pytest.mark.journey
def test_saved_model_reproduces_the_test_accuracy(spark, digits_run, digits_arrays):
    output = digits_run[3]
    metrics = read_json(output / "metrics.json")
    model = TrainedModel.load(output / "model")
    assert model.config == TrainConfig.from_dict(metrics["config"])
    assert model.history == read_json(output / "history.json")
    assert list(model.class_names) == metrics["class_names"]
    # in Spark, through the public API
    evaluation = model.evaluate(load_dataframe(spark, "digits", "test"))
    assert evaluation.accuracy == metrics["test_accuracy"]
    np.testing.assert_array_equal(evaluation.confusion, metrics["confusion_matrix"])
    # and independently, in numpy on the raw 0..16 pixels
    _, (images, labels) = digits_arrays
    X = (images.reshape(len(images), -1) / np.float32(16)).astype(np.float32)
    predicted = np.argmax(model.network.forward(model.params, X), axis=1)
    assert np.mean(predicted == labels) == pytest.approx(metrics["test_accuracy"], abs=1 / len(labels) + 1e-12)


# --- the output folder ---------------------------------------------------------------------

def test_existing_output_is_refused_and_left_untouched(tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("my results")
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--output", str(output), *FAST])
    captured = capsys.readouterr()
    assert code == 2
    assert str(output) in captured.err and "already exists" in captured.err and "--overwrite" in captured.err
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
    assert (output / "notes.txt").read_text() == "my results"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert "Epoch" not in captured.out


def test_existing_output_file_is_refused(tmp_path, capsys):
    output = tmp_path / "run"
    output.write_text("not a folder")
    assert main(["train", "--dataset", "digits", "--output", str(output), *FAST]) == 2
    assert "already exists" in capsys.readouterr().err
    assert output.read_text() == "not a folder"


def test_overwrite_replaces_an_existing_output(tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("old run")
    code = main(["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "720", "--hidden", "8",
                 "--output", str(output), "--overwrite", "--no-progress", "--no-report"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in output.iterdir()) == ["history.json", "metrics.json", "model"]
    assert f"Saved model, history.json and metrics.json to {output}" in captured.out
    history = read_json(output / "history.json")
    assert len(history) == 1 and "val_loss" not in history[0] and "Val loss" not in captured.out
    assert TrainedModel.load(output / "model").network.to_config()["layers"][0] == {"type": "dense", "n_in": 64,
                                                                                    "n_out": 8}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # neither the old folder nor the staging one


@pytest.mark.parametrize("missing", ["t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz"])
def test_data_dir_missing_a_file_fails_naming_it(shared_data, tmp_path, capsys, missing):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for f in (shared_data / "mnist").iterdir():
        if f.name.endswith(".gz") and f.name != missing:
            shutil.copy(f, data_dir / f.name)
    output = tmp_path / "run"
    code = main(["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--classes", "0,1",
                 "--output", str(output), *FAST])
    captured = capsys.readouterr()
    assert code == 2
    assert missing in captured.err and str(data_dir) in captured.err
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert "Epoch" not in captured.out


@pytest.mark.parametrize("option, value, words", [
    ("--lr", "-1", ["lr=-1.0", "must be > 0"]),
    ("--lr", "0", ["lr=0.0", "must be > 0"]),
    ("--sample", "1.5", ["sample=1.5", "must be <= 1"]),
    ("--sample", "0", ["sample=0.0", "must be > 0"]),
    ("--epochs", "0", ["epochs=0", "must be >= 1"]),
    ("--batch-size", "0", ["batch_size=0", "must be >= 1"]),
    ("--partitions", "0", ["partitions=0", "must be >= 1"]),
    ("--hidden", "64,0", ["hidden=(64, 0)", "positive layer sizes"]),
    ("--classes", "0,12", ["classes", "12"]),
])
def test_invalid_values_exit_2_naming_the_parameter(tmp_path, capsys, option, value, words):
    output = tmp_path / "run"
    code = main(["train", "--dataset", "digits", option, value, "--output", str(output), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("dfnet: error: ")
    for word in words:
        assert word in captured.err
    assert not output.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, words", [
    (["--activation", "softplus"], ["--activation", "softplus"]),
    (["--epochs", "two"], ["--epochs", "two"]),
    (["--hidden", "a,b"], ["--hidden", "comma-separated integers"]),
    (["--dataset", "cifar"], ["--dataset", "cifar"]),
    (["--preset", "modern"], ["--preset", "modern"]),
])
def test_malformed_options_are_argparse_errors(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


# --- presets --------------------------------------------------------------------------------

def parse(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_classic_preset_resolves_to_the_classic_configuration():
    config, data = parse("--preset", "classic")
    assert config.hidden == (64,)
    assert (config.activation, config.loss, config.init_scheme) == ("sigmoid", "mse", "classic")
    assert (config.optimizer, config.learning_rate) == ("sgd", 0.1)
    assert (config.epochs, config.sample, config.schedule) == (50, 0.7, "classic")
    assert data["dataset"] == "mnist" and tuple(data["classes"]) == (0, 1)


def test_explicit_options_override_the_preset():
    config, data = parse("--preset", "classic", "--epochs", "3", "--lr", "0.5", "--hidden", "32,16",
                         "--activation", "tanh", "--dataset", "fashion-mnist", "--classes", "3,5")
    classic, _ = parse("--preset", "classic")
    assert (config.epochs, config.lr, config.hidden, config.activation) == (3, 0.5, (32, 16), "tanh")
    assert (data["dataset"], tuple(data["classes"])) == ("fashion-mnist", (3, 5))
    # what was not said still comes from the preset
    assert (config.loss, config.init, config.optimizer, config.sample, config.schedule, config.dtype) == \
        (classic.loss, classic.init, classic.optimizer, classic.sample, classic.schedule, classic.dtype)


def test_without_preset_the_defaults_are_dfnets_own():
    config, data = parse()
    assert config == TrainConfig()
    assert data == {"dataset": "digits", "classes": None}


def test_invalid_override_of_a_preset_is_refused():
    with pytest.raises(ConfigError, match=r"sample=1\.5"):
        parse("--preset", "classic", "--sample", "1.5")


def test_engine_schedule_and_learning_rate_options_reach_the_config():
    config, _ = parse("--engine", "rdd-batched", "--schedule", "minibatch", "--lr-schedule", "cosine")
    assert (config.engine, config.schedule, config.lr_schedule) == ("rdd-batched", "minibatch", "cosine")
    config, _ = parse("--schedule", "average", "--local-steps", "20")
    assert (config.engine, config.schedule, config.local_steps) == ("dataframe", "average", 20)
    config, _ = parse("--aggregate", "collect")
    assert (config.engine, config.aggregate) == ("dataframe", "collect")


def test_average_schedule_on_an_rdd_engine_is_refused_before_training(tmp_path, capsys):
    code = main(["train", "--engine", "rdd", "--schedule", "average", "--output", str(tmp_path / "run")])
    assert code == 2
    assert "schedule='average' runs on the dataframe engine" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bench_lists_the_benchmark_scripts(capsys):
    assert main(["bench"]) == 0
    listed = capsys.readouterr().out
    for name in ("engines", "partitions", "clusters", "datasize", "projection", "time_to_accuracy", "aggregation"):
        assert name in listed


def test_bench_unknown_name_exits_2_listing_the_known_ones(capsys):
    assert main(["bench", "no-such-benchmark"]) == 2
    err = capsys.readouterr().err
    assert "no-such-benchmark" in err and "engines" in err


def test_bench_runs_a_benchmark_with_its_arguments():
    """A real (tiny) run of the aggregation benchmark in its own process: exit 0, results saved,
    and every variant's sum checked against numpy inside the script."""
    import json

    from dfnet.cli import BENCHMARKS_DIR

    result = BENCHMARKS_DIR / "results" / "aggregation-smoke.json"
    result.unlink(missing_ok=True)
    assert main(["bench", "aggregation", "--sizes", "1000", "--partitions", "2", "--repeats", "1",
                 "--name", "aggregation-smoke"]) == 0
    saved = json.loads(result.read_text())
    assert [(r["size"], r["partitions"]) for r in saved["results"]] == [(1000, 2)]


# --- convolutional networks -----------------------------------------------------------------

def test_digits_cnn_preset_resolves_to_the_classic_digits_cnn():
    config, data = parse("--preset", "digits-cnn")
    assert (config.model, config.kernels, config.kernel_size, config.pool) == ("cnn", (10,), 3, 2)
    assert (config.conv_activation, config.activation, config.hidden) == ("sigmoid", "relu", (128,))
    assert (config.patches, config.schedule) == ("inline", "average")
    assert data == {"dataset": "digits", "classes": None}


def test_cnn_options_reach_the_config():
    config, _ = parse("--model", "cnn", "--kernels", "16,32", "--kernel-size", "5", "--pool", "none",
                      "--conv-activation", "tanh", "--padding", "same", "--image-shape", "8,8,1",
                      "--patches", "explode", "--patch-rows", "position", "--hidden", "64")
    assert (config.model, config.kernels, config.kernel_size, config.pool) == ("cnn", (16, 32), 5, None)
    assert (config.conv_activation, config.padding, config.image_shape) == ("tanh", "same", (8, 8, 1))
    assert (config.patches, config.patch_rows, config.hidden) == ("explode", "position", (64,))
    assert parse("--model", "cnn", "--pool", "3")[0].pool == 3


@pytest.mark.parametrize("argv, words", [
    (["--pool", "big"], ["--pool", "'none'"]),
    (["--padding", "full"], ["--padding", "full"]),
    (["--patches", "udf"], ["--patches", "udf"]),
    (["--kernels", "a"], ["--kernels", "comma-separated integers"]),
])
def test_malformed_cnn_options_are_argparse_errors(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "cnn", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


@pytest.mark.parametrize("argv, words", [
    (["--model", "cnn", "--patches", "explode", "--engine", "rdd"], ["patches='explode'", "dataframe engine"]),
    (["--patches", "explode"], ["patches='explode'", "needs model='cnn'"]),
    (["--model", "cnn", "--kernels", "8,0"], ["kernels=(8, 0)", "positive filter counts"]),
    (["--model", "cnn", "--image-shape", "8,8,2"], ["image_shape=(8, 8, 2)", "images have 64"]),
    (["--model", "cnn", "--kernel-size", "9"], ["does not fit (8, 8, 1)"]),
])
def test_invalid_cnn_configurations_exit_2_before_training(spark, tmp_path, capsys, argv, words):
    code = main(["train", *argv, "--output", str(tmp_path / "run"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    for word in words:
        assert word in captured.err
    assert "Epoch" not in captured.out and not (tmp_path / "run").exists()


@pytest.mark.journey
def test_train_a_cnn_from_exploded_patches_and_reload_it(spark, tmp_path, digits_arrays):
    output = tmp_path / "cnn"
    code, stdout, err = run_cli(["train", "--model", "cnn", "--kernels", "6", "--kernel-size", "3", "--pool", "2",
                                 "--conv-activation", "relu", "--padding", "valid", "--patches", "explode",
                                 "--hidden", "32", "--schedule", "average", "--batch-size", "16", "--partitions",
                                 "2", "--epochs", "3", "--output", str(output), "--no-progress"])
    assert code == 0, err
    assert "cnn kernels [6] 3x3 relu pool 2 patches explode, hidden [32] relu/cross-entropy" in stdout
    assert len(EPOCH_LINE.findall(stdout)) == 3
    layers = read_json(output / "model" / "model.json")["network"]["layers"]
    assert layers[0] == {"type": "conv2d", "in_channels": 1, "filters": 6, "kernel_size": [3, 3], "padding": "valid"}
    assert [layer["type"] for layer in layers] == ["conv2d", "relu", "maxpool2d", "flatten", "dense", "relu",
                                                   "dense", "softmax"]
    metrics = read_json(output / "metrics.json")
    assert metrics["config"]["patches"] == "explode" and metrics["config"]["kernels"] == [6]
    assert sorted(p.name for p in output.iterdir()) == ["history.json", "metrics.json", "model", "report.html"]
    report = (output / "report.html").read_text(encoding="utf-8")
    assert re.findall(r"<h2>(.*?)</h2>", report) == ["Training history", "Confusion matrix", "Per-class metrics",
                                                     "Test samples", "Kernels", "Activation maps"]
    assert report.count('class="plotly-graph-div"') == 6
    assert metrics["test_accuracy"] > 0.8  # three epochs of a ReLU CNN do learn the digits
    model = TrainedModel.load(output / "model")
    _, (images, labels) = digits_arrays
    X = (images.reshape(len(images), -1) / np.float32(16)).astype(np.float32)
    predicted = np.argmax(model.network.forward(model.params, X), axis=1)
    assert np.mean(predicted == labels) == pytest.approx(metrics["test_accuracy"], abs=1 / len(labels) + 1e-12)
