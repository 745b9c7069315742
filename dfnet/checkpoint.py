"""Training checkpoints: written atomically to any path Spark can write, verified when read.

A checkpoint is ONE file, ``<dir>/checkpoint-<epoch, 6 digits>.dfnet``, holding
everything needed to continue a run bit for bit: the flat weights, the
optimizer's state (:meth:`~dfnet.optim.Optimizer.state_dict`), the epoch just
finished, the history so far, the network's and the training run's
configuration and the shape of the data (rows, partitions). Randomness needs
no saved generator state: every random choice of a run is derived from
``(config.seed, epoch)`` (the epoch's sample and mini-batch hash seeds, the
averaging schedule's per-partition permutations) and the initial weights from
``config.seed``, so the seed in the stored configuration and the epoch number
are the random state.

File layout::

    DFNETCKPT 1\\n                                        magic and format version
    {"sha256": "<hex of payload>", "bytes": <payload length>}\\n
    <payload: an uncompressed .npz (params, optimizer arrays, meta = JSON as uint8)>

Writing goes through the Hadoop FileSystem API of the session's JVM, so the
directory may be local (``/tmp/ckpt``, ``file:/...``), ``hdfs://``, ``dbfs:/``,
``s3a://`` ...: a path without a scheme means Spark's default file system. The
bytes are written to a hidden temporary name in the same directory
(``.checkpoint-000003.dfnet.<random>.tmp``) and renamed to the final name only
once complete, so a final name never holds a half-written checkpoint (on object
stores, where rename is copy + delete, the final object still appears whole).
Reading checks the magic, the length and the SHA-256 of the payload: a corrupt
or truncated checkpoint is skipped with a :class:`CheckpointWarning` naming the
file, and the next newest good one is used.

Retention: the newest ``keep`` checkpoints (default 3) are kept, older ones are
deleted after each successful write; ``keep=None`` keeps all. Three survive a
corrupt newest file and a truncated one before it. One run writes to a
directory at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import CheckpointError

MAGIC = b"DFNETCKPT 1\n"
FORMAT_VERSION = 1
DEFAULT_KEEP = 3
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_NAME = re.compile(r"^checkpoint-(\d{6,})\.dfnet$")
_TEMP = re.compile(r"^\.checkpoint-\d{6,}\.dfnet\.[0-9a-f]+\.tmp$")
#: Configuration fields a resumed run may change: more (or fewer) epochs. With a cosine
#: learning-rate schedule the epochs are part of every epoch's rate, so they must match too.
RESUMABLE_CHANGES = frozenset({"epochs"})


class CheckpointWarning(UserWarning):
    """A checkpoint file was skipped because it is corrupt, truncated or unreadable."""


@dataclass
class Checkpoint:
    """The state of a run after ``epoch`` complete epochs."""

    epoch: int
    params: np.ndarray
    optimizer: str
    optimizer_state: dict
    history: list[dict]
    network: dict  # Sequential.to_config()
    config: dict  # TrainConfig.to_dict()
    data: dict  # {"rows": ..., "partitions": ...}
    uri: str = field(default="", compare=False)  # where it was read from or written to
    #: early stopping's state (``EarlyStopping.state_dict()``: best epoch, loss and weights,
    #: epochs without improvement), None when the run does not stop early
    early_stopping: dict | None = field(default=None, compare=False)


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint-{epoch:06d}.dfnet"


# --- the bytes -------------------------------------------------------------------------

def encode(checkpoint: Checkpoint) -> bytes:
    """Header + payload bytes of a checkpoint."""
    arrays = {"params": np.asarray(checkpoint.params)}
    scalars = {}
    for key, value in checkpoint.optimizer_state.items():
        if isinstance(value, np.ndarray):
            arrays[f"optimizer.{key}"] = value
        else:
            scalars[key] = value
    early = dict(checkpoint.early_stopping or {})
    if early.get("best_params") is not None:
        arrays["early.best_params"] = np.asarray(early.pop("best_params"))
    meta = {"format_version": FORMAT_VERSION, "epoch": checkpoint.epoch, "optimizer": checkpoint.optimizer,
            "optimizer_scalars": scalars, "history": checkpoint.history, "network": checkpoint.network,
            "config": checkpoint.config, "data": checkpoint.data,
            "early_stopping": early or None,
            "random": {"seed": checkpoint.config.get("seed"), "next_epoch": checkpoint.epoch + 1,
                       "derivation": "every random choice is a function of (seed, epoch)"}}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    header = json.dumps({"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}).encode()
    return MAGIC + header + b"\n" + payload


def decode(blob: bytes, uri: str = "") -> Checkpoint:
    """Parse and verify checkpoint bytes; :class:`CheckpointError` says what is wrong."""
    if not blob.startswith(MAGIC):
        raise CheckpointError(f"{uri}: not a dfnet checkpoint (no {MAGIC[:-1].decode()!r} header)")
    end = blob.find(b"\n", len(MAGIC))
    try:
        header = json.loads(blob[len(MAGIC):end]) if end > 0 else None
        expected_sha, expected_len = header["sha256"], int(header["bytes"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{uri}: unreadable checkpoint header ({e or 'truncated'})") from None
    payload = blob[end + 1:]
    if len(payload) != expected_len:
        raise CheckpointError(f"{uri}: truncated: the header declares {expected_len} bytes of payload, "
                              f"the file holds {len(payload)}")
    if hashlib.sha256(payload).hexdigest() != expected_sha:
        raise CheckpointError(f"{uri}: corrupt: the payload's SHA-256 differs from the one in its header")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{uri}: checkpoint format {meta.get('format_version')!r}, this dfnet reads "
                                  f"{FORMAT_VERSION}")
        state = dict(meta["optimizer_scalars"])
        state.update({name.removeprefix("optimizer."): value for name, value in arrays.items()
                      if name.startswith("optimizer.")})
        early = meta.get("early_stopping")
        if early is not None:
            early = {**early, "best_params": arrays.get("early.best_params")}
        return Checkpoint(int(meta["epoch"]), arrays["params"], meta["optimizer"], state, meta["history"],
                          meta["network"], meta["config"], meta["data"], uri, early)
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as e:  # a valid hash over bytes dfnet did not write
        raise CheckpointError(f"{uri}: unreadable checkpoint payload ({type(e).__name__}: {e})") from None


# --- the store -------------------------------------------------------------------------

class CheckpointStore:
    """The checkpoints of one run in ``directory``, through Hadoop's FileSystem API.

    Parameters
    ----------
    spark : the SparkSession whose JVM and Hadoop configuration reach the directory.
    directory : any Hadoop path (local, ``file:``, ``hdfs:``, ``dbfs:``, ``s3a:`` ...).
    keep : newest checkpoints kept after each write (None: all).
    """

    def __init__(self, spark, directory: str, keep: int | None = DEFAULT_KEEP):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise CheckpointError(f"keep={keep!r}: must be a positive number of checkpoints, or None for all")
        self.keep = keep
        self.directory = str(directory)
        jvm = spark._jvm
        self._jvm = jvm
        self._dir = jvm.org.apache.hadoop.fs.Path(self.directory)
        fs = self._dir.getFileSystem(spark._jsc.hadoopConfiguration())
        if fs.getScheme() == "file" and not _SCHEME.match(self.directory) and not os.path.isabs(self.directory):
            # The JVM resolves a relative path against its own start-up folder; the user means ours.
            self._dir = jvm.org.apache.hadoop.fs.Path(os.path.abspath(self.directory))
        # The local file system is a ChecksumFileSystem that writes a .crc file beside every file;
        # the checkpoint carries its own SHA-256, so write through the raw one (no side files).
        self._fs = fs.getRawFileSystem() if fs.getScheme() == "file" else fs
        self._dir = self._fs.makeQualified(self._dir)

    def __repr__(self) -> str:
        return f"CheckpointStore({self.uri!r}, keep={self.keep})"

    @property
    def uri(self) -> str:
        return self._dir.toString()

    def _path(self, name: str):
        return self._jvm.org.apache.hadoop.fs.Path(self._dir, name)

    def _names(self) -> list[str]:
        if not self._fs.exists(self._dir):
            return []
        return [status.getPath().getName() for status in self._fs.listStatus(self._dir)]

    def epochs(self) -> list[int]:
        """Epochs of the checkpoints present (by file name, unverified), oldest first."""
        return sorted(int(m.group(1)) for m in map(_NAME.match, self._names()) if m)

    def uri_of(self, epoch: int) -> str:
        return self._path(checkpoint_name(epoch)).toString()

    def save(self, checkpoint: Checkpoint) -> str:
        """Write ``checkpoint`` atomically (temporary name, then rename); prune; return its URI."""
        blob = encode(checkpoint)
        self._fs.mkdirs(self._dir)
        final = self._path(checkpoint_name(checkpoint.epoch))
        temp = self._path(f".{checkpoint_name(checkpoint.epoch)}.{uuid.uuid4().hex}.tmp")
        out = self._fs.create(temp, False)
        try:
            chunk = 8 << 20  # py4j copies each bytes object into a Java byte[]
            for start in range(0, len(blob), chunk):
                out.write(bytearray(blob[start:start + chunk]))
            out.hsync()  # on disk before the rename makes it visible
        except BaseException:
            out.close()
            self._fs.delete(temp, False)
            raise
        out.close()
        if not self._fs.rename(temp, final):
            # HDFS and object stores refuse to rename onto an existing file (here: a corrupt
            # checkpoint of this epoch that a resume skipped); replace it.
            self._fs.delete(final, False)
            if not self._fs.rename(temp, final):
                self._fs.delete(temp, False)
                raise CheckpointError(f"could not rename {temp.toString()} to {final.toString()}")
        checkpoint.uri = final.toString()
        self._prune()
        return checkpoint.uri

    def _prune(self) -> None:
        names = self._names()
        for name in names:
            if _TEMP.match(name):  # left by a run killed while writing
                self._fs.delete(self._path(name), False)
        if self.keep is not None:
            for epoch in self.epochs()[:-self.keep]:
                self._fs.delete(self._path(checkpoint_name(epoch)), False)

    def read(self, epoch: int) -> Checkpoint:
        """The verified checkpoint of ``epoch``; :class:`CheckpointError` if it is bad or unreadable."""
        path = self._path(checkpoint_name(epoch))
        uri = path.toString()
        try:
            stream = self._fs.open(path)
            buffer = self._jvm.java.io.ByteArrayOutputStream()
            self._jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buffer, 1 << 16, True)
            blob = bytes(buffer.toByteArray())
        except Exception as e:  # py4j errors carry the Java exception
            raise CheckpointError(f"{uri}: cannot read ({str(e).splitlines()[0][:300]})") from None
        return decode(blob, uri)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that verifies; each bad newer one is skipped with a warning."""
        for epoch in reversed(self.epochs()):
            try:
                return self.read(epoch)
            except CheckpointError as e:
                warnings.warn(f"skipping checkpoint {self.uri_of(epoch)}: {e}", CheckpointWarning, stacklevel=3)
        return None


def check_compatible(checkpoint: Checkpoint, network: dict, config: dict, data: dict) -> None:
    """Refuse to resume ``checkpoint`` in a run whose network, configuration or data differ."""
    problems = []
    if checkpoint.network != network:
        problems.append(f"network {_layers(checkpoint.network)} there, {_layers(network)} here")
    allowed = set(RESUMABLE_CHANGES)
    if config.get("lr_schedule") == "cosine":
        allowed.discard("epochs")
    for key in sorted(set(checkpoint.config) | set(config)):
        if key not in allowed and checkpoint.config.get(key) != config.get(key):
            problems.append(f"{key}={checkpoint.config.get(key)!r} there, {config.get(key)!r} here")
    for key in ("rows", "partitions"):
        if key in data and checkpoint.data.get(key) != data[key]:
            problems.append(f"{checkpoint.data.get(key)} training {key} there, {data[key]} here")
    if problems:
        raise CheckpointError(
            f"cannot resume from {checkpoint.uri}: it belongs to a different run ({'; '.join(problems)}); "
            f"resume with the same settings and data, or start afresh in another checkpoint directory")
    if checkpoint.epoch > config["epochs"]:
        raise CheckpointError(f"cannot resume from {checkpoint.uri}: it is at epoch {checkpoint.epoch}, beyond "
                              f"epochs={config['epochs']}")


def _layers(network: dict) -> str:
    parts = [str(network.get("input_shape"))]
    for layer in network.get("layers", []):
        parts.append(str(layer.get("n_out", layer.get("type"))) if layer.get("type") == "dense" else layer["type"])
    return "-".join(parts) + f" ({network.get('dtype')}, {network.get('loss')})"
