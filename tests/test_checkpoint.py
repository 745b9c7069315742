"""Checkpoints and resume: atomic writes, integrity checks, refusals, and bit-identical resumed runs.

In-process tests use the session's local[2] Spark and the digits training split (1,437 rows, no
files). The run whose driver is SIGKILLed and resumed with `dfnet train --resume` is in
tests/test_cluster.py, on a standalone cluster.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from dfnet.checkpoint import (Checkpoint, CheckpointStore, CheckpointWarning, checkpoint_name, decode,
                              encode)
from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.errors import CheckpointError, ConfigError
from dfnet.train import fit

# Adam (optimizer state), 4 steps per epoch, 2 partitions.
CONFIG = TrainConfig(hidden=(16,), schedule="minibatch", lr_schedule="constant", epochs=4, batch_size=360,
                     partitions=2, seed=1)


class Recorder:
    def __init__(self):
        self.steps, self.messages, self.plans = [], [], []

    def on_step(self, epoch, step, steps):
        self.steps.append((epoch, step))

    def on_epoch_end(self, record, total_epochs):
        pass

    def on_message(self, text):
        if text.startswith("Schedule "):  # the plan line every run starts with (test_train checks it)
            self.plans.append(text)
        else:
            self.messages.append(text)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def checkpoint_files(folder: Path) -> list[str]:
    """The checkpoint folders in ``folder`` that retention has not pruned."""
    return sorted(p.name for p in folder.iterdir() if not (p / "pruned=true").exists())


def data_file(folder: Path, epoch: int) -> Path:
    """The one Parquet file that holds epoch ``epoch``'s checkpoint row."""
    (part,) = (folder / checkpoint_name(epoch)).glob("part-*.parquet")
    return part


def read_blob(folder: Path, epoch: int) -> bytes:
    """The checkpoint bytes of ``epoch``, read without Spark."""
    import pyarrow.parquet as pq

    table = pq.read_table(data_file(folder, epoch))
    assert table.num_rows == 1
    return table.column(0)[0].as_py()


@pytest.fixture(scope="module")
def digits(spark):
    df = load_dataframe(spark, "digits", "train").cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def reference(digits):
    """The uninterrupted run, no checkpoints."""
    return fit(digits, CONFIG, verbose=False)


@pytest.fixture(scope="module")
def checkpointed(digits, tmp_path_factory):
    """The same run with a checkpoint after every epoch, all kept, started with resume=True on an
    empty folder (which must say so and start from scratch)."""
    folder = tmp_path_factory.mktemp("checkpointed") / "ckpt"
    recorder = Recorder()
    model = fit(digits, CONFIG, checkpoint_dir=str(folder), checkpoint_keep=None, resume=True,
                callbacks=[recorder], verbose=False)
    return model, folder, recorder


def copy_with(folder: Path, tmp_path: Path, epochs) -> Path:
    target = tmp_path / "ckpt"
    target.mkdir()
    for epoch in epochs:
        shutil.copytree(folder / checkpoint_name(epoch), target / checkpoint_name(epoch))
    return target


def test_checkpointing_does_not_change_the_run(spark, reference, checkpointed):
    model, folder, recorder = checkpointed
    assert np.array_equal(model.params, reference.params)
    assert recorder.messages == [f"No checkpoint in file:{folder}: starting from scratch"]
    assert sorted(p.name for p in folder.iterdir()) == [checkpoint_name(e) for e in (1, 2, 3, 4)]
    for epoch in (1, 2, 3, 4):  # one committed row each, nothing left under _temporary
        assert decode(read_blob(folder, epoch)).epoch == epoch
        assert not (folder / checkpoint_name(epoch) / "_temporary").exists()
    last = CheckpointStore(spark, str(folder)).latest()
    assert last.epoch == 4 and np.array_equal(last.params, reference.params)
    assert last.optimizer == "adam" and last.optimizer_state["steps"] == 16
    assert last.config == CONFIG.to_dict() and last.network == reference.network.to_config()
    assert last.data == {"rows": 1437, "partitions": 2}
    assert [h["epoch"] for h in last.history] == [1, 2, 3, 4]


@pytest.mark.journey
@pytest.mark.parametrize("from_epoch", [1, 3])
def test_resuming_gives_the_uninterrupted_weights_bit_for_bit(digits, reference, checkpointed, tmp_path, from_epoch):
    _, folder, _ = checkpointed
    target = copy_with(folder, tmp_path, range(1, from_epoch + 1))
    recorder = Recorder()
    model = fit(digits, CONFIG, checkpoint_dir=str(target), resume=True, callbacks=[recorder], verbose=False)
    assert np.array_equal(model.params, reference.params)
    assert recorder.messages == [f"Resuming from file:{target}/{checkpoint_name(from_epoch)} "
                                 f"(epoch {from_epoch} of 4 done)"]
    assert recorder.steps[0] == (from_epoch + 1, 1) and len(recorder.steps) == 4 * (4 - from_epoch)
    assert [h["epoch"] for h in model.history] == [1, 2, 3, 4]
    assert [h["rows"] for h in model.history] == [1437] * 4
    for resumed, original in zip(model.history, reference.history):
        assert (resumed["loss"], resumed["accuracy"]) == (original["loss"], original["accuracy"])
    assert checkpoint_files(target) == [checkpoint_name(e) for e in (2, 3, 4)]  # the default keeps three


def test_a_corrupt_and_a_truncated_newest_checkpoint_are_skipped_with_a_warning(
        spark, digits, reference, checkpointed, tmp_path):
    _, folder, _ = checkpointed
    target = copy_with(folder, tmp_path, (1, 2, 3, 4))
    newest, truncated = target / checkpoint_name(4), target / checkpoint_name(3)
    part = data_file(target, 4)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flipped bits in the payload (uncompressed: the checkpoint's own bytes)
    part.write_bytes(bytes(data))
    # ... on a store without the local file system's .crc side files, so the SHA-256 is what catches it
    (part.parent / f".{part.name}.crc").unlink()
    part = data_file(target, 3)
    part.write_bytes(part.read_bytes()[:-1000])
    recorder = Recorder()
    with pytest.warns(CheckpointWarning) as caught:
        model = fit(digits, CONFIG, checkpoint_dir=str(target), resume=True, callbacks=[recorder], verbose=False)
    # only dfnet's warnings (pyspark 3.5 adds its own: distutils, unclosed sockets)
    messages = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert len(messages) == 2
    assert f"skipping checkpoint file:{newest}" in messages[0] and "corrupt" in messages[0] and "SHA-256" in messages[0]
    assert f"skipping checkpoint file:{truncated}" in messages[1] and "truncated" in messages[1], messages[1]
    assert recorder.messages == [f"Resuming from file:{target}/{checkpoint_name(2)} (epoch 2 of 4 done)"]
    assert np.array_equal(model.params, reference.params)
    # the bad files were replaced by good ones of the resumed run
    store = CheckpointStore(spark, str(target))
    assert store.epochs() == [2, 3, 4] and np.array_equal(store.read(4).params, reference.params)


@pytest.mark.parametrize("change, words", [
    (dict(hidden=(8,)), ["network", "[64]-16-relu-10-softmax", "[64]-8-relu-10-softmax"]),
    (dict(lr=0.01), ["lr=None there, 0.01 here"]),
    (dict(partitions=3), ["partitions=2 there, 3 here"]),
    (dict(schedule="average"), ["schedule='minibatch' there, 'average' here"]),
    (dict(dtype="float64"), ["dtype='float32' there, 'float64' here", "float64"]),
    (dict(lr_schedule="cosine", epochs=5), ["lr_schedule='constant' there, 'cosine' here", "epochs=4 there, 5"]),
    (dict(epochs=2), ["epoch 4, beyond epochs=2"]),
], ids=["architecture", "learning-rate", "partitions", "schedule", "dtype", "cosine-epochs", "fewer-epochs"])
def test_resuming_a_different_run_is_refused_and_leaves_the_checkpoints_untouched(
        digits, checkpointed, tmp_path, change, words):
    _, folder, _ = checkpointed
    target = copy_with(folder, tmp_path, (3, 4))
    before = snapshot(target)
    recorder = Recorder()
    with pytest.raises(CheckpointError) as info:
        fit(digits, CONFIG.replace(**change), checkpoint_dir=str(target), resume=True, callbacks=[recorder],
            verbose=False)
    message = str(info.value)
    assert f"cannot resume from file:{target}/{checkpoint_name(4)}" in message
    for word in words:
        assert word in message, message
    assert recorder.steps == []
    assert snapshot(target) == before


def test_more_epochs_extend_a_finished_run(digits, checkpointed, tmp_path):
    """epochs may grow on resume (constant learning rate): the run continues from its last checkpoint
    and equals a 5-epoch run from scratch."""
    _, folder, _ = checkpointed
    target = copy_with(folder, tmp_path, (4,))
    recorder = Recorder()
    resumed = fit(digits, CONFIG.replace(epochs=5), checkpoint_dir=str(target), resume=True,
                  callbacks=[recorder], verbose=False)
    assert recorder.steps[0] == (5, 1) and len(recorder.steps) == 4
    assert np.array_equal(resumed.params, fit(digits, CONFIG.replace(epochs=5), verbose=False).params)


def test_existing_checkpoints_without_resume_are_refused(digits, checkpointed, tmp_path):
    _, folder, _ = checkpointed
    target = copy_with(folder, tmp_path, (4,))
    before = snapshot(target)
    with pytest.raises(ConfigError, match=r"already holds checkpoints \(epochs \[4\]\); pass resume=True"):
        fit(digits, CONFIG, checkpoint_dir=str(target), verbose=False)
    assert snapshot(target) == before


def test_resume_needs_a_directory_and_every_must_be_positive(digits):
    with pytest.raises(ConfigError, match="resume=True needs a checkpoint_dir"):
        fit(digits, CONFIG, resume=True, verbose=False)
    with pytest.raises(ConfigError, match="checkpoint_every=0"):
        fit(digits, CONFIG, checkpoint_dir="/nonexistent", checkpoint_every=0, verbose=False)


def test_averaging_schedule_resumes_bit_for_bit_and_retention_keeps_the_newest(digits, tmp_path):
    config = TrainConfig(hidden=(16,), lr_schedule="constant", epochs=5, schedule="average", batch_size=100, partitions=2, seed=4)
    reference = fit(digits, config, verbose=False)
    folder = tmp_path / "avg"
    first = fit(digits, config, checkpoint_dir=str(folder), checkpoint_every=2, checkpoint_keep=2, verbose=False)
    assert np.array_equal(first.params, reference.params)
    # every 2 epochs and after the last: 2, 4, 5; the newest two are kept
    assert checkpoint_files(folder) == [checkpoint_name(4), checkpoint_name(5)]
    shutil.rmtree(folder / checkpoint_name(5))
    resumed = fit(digits, config, checkpoint_dir=str(folder), resume=True, verbose=False)
    assert np.array_equal(resumed.params, reference.params)


# --- the file format ----------------------------------------------------------------------

def sample_checkpoint() -> Checkpoint:
    rng = np.random.default_rng(0)
    return Checkpoint(7, rng.random(50).astype(np.float32), "adam",
                      {"steps": 21, "m": rng.random(50), "v": rng.random(50)}, [{"epoch": 1, "loss": 0.5}],
                      {"layers": []}, {"seed": 3, "epochs": 9}, {"rows": 10, "partitions": 2})


def test_encode_decode_round_trips_exactly():
    original = sample_checkpoint()
    copy = decode(encode(original), "x")
    assert copy.params.dtype == np.float32 and np.array_equal(copy.params, original.params)
    assert copy.optimizer_state["steps"] == 21
    for key in ("m", "v"):
        assert np.array_equal(copy.optimizer_state[key], original.optimizer_state[key])
    assert (copy.epoch, copy.history, copy.network, copy.config, copy.data) == \
        (7, original.history, original.network, original.config, original.data)
    assert decode(encode(Checkpoint(1, np.zeros(3), "sgd", {"steps": 0}, [], {}, {}, {}))).optimizer_state == \
        {"steps": 0}


def test_any_flipped_byte_or_truncation_is_detected():
    blob = encode(sample_checkpoint())
    for i in range(0, len(blob), max(1, len(blob) // 97)):
        damaged = bytearray(blob)
        damaged[i] ^= 0x01
        with pytest.raises(CheckpointError):
            decode(bytes(damaged), "f")
    for length in (0, 5, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CheckpointError, match="f: "):
            decode(blob[:length], "f")


# --- the command line -----------------------------------------------------------------

# The run killed with SIGKILL and resumed by `dfnet train --resume`, and the CLI's runs in other
# processes equal to this process's `fit`: tests/test_cluster.py, on a standalone cluster.


@pytest.mark.parametrize("argv, words", [
    (["--resume"], ["--resume needs --checkpoint-dir"]),
    (["--checkpoint-dir", "{out}/ckpt"], ["lies inside --output"]),
    (["--checkpoint-dir", "{tmp}/ckpt", "--checkpoint-every", "0"], ["--checkpoint-every=0", ">= 1"]),
])
def test_checkpoint_options_are_checked_before_anything_runs(tmp_path, capsys, argv, words):
    from dfnet.cli import main

    output = tmp_path / "run"
    argv = [a.format(out=output, tmp=tmp_path) for a in argv]
    assert main(["train", "--dataset", "digits", "--output", str(output), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err
    assert list(tmp_path.iterdir()) == []
