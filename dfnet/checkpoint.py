"""Training checkpoints: written by Spark to any path it can write, committed whole, verified when read.

A checkpoint holds everything needed to continue a run bit for bit: the flat weights, the
optimizer's state (:meth:`~dfnet.optim.Optimizer.state_dict`), the epoch just
finished, the history so far, the network's and the training run's
configuration and the shape of the data (rows, partitions). Randomness needs
no saved generator state: every random choice of a run is derived from
``(config.seed, epoch)`` (the epoch's sample and mini-batch hash seeds, the
averaging schedule's per-partition permutations) and the initial weights from
``config.seed``, so the seed in the stored configuration and the epoch number
are the random state.

Layout: a checkpoint is a Parquet dataset of one row, ``<dir>/checkpoint-<epoch, 6 digits>.dfnet/``,
whose one binary column holds these bytes::

    DFNETCKPT 1\\n                                      magic and container version
    {"sha256": "<hex of payload>", "bytes": <payload length>}\\n
    <payload: an uncompressed .npz (params, optimizer arrays, early.best_params, meta = JSON as uint8)>

``meta`` (format version 2) is ``{"format": "dfnet.checkpoint", "format_version": 2, "model": <the
model record of dfnet.model, whose weights are the npz's params>, "epoch", "optimizer",
"optimizer_scalars", "data": {"rows", "partitions"}, "stopper_state": <early stopping's state but
its best weights>, "random"}``: the run's network, configuration, history, run id and class names
are stored as every model is. Version 1 meta (network, config and history as keys of their own)
and its ``early_stopping`` key (the stopper's state) still decode, so a run checkpointed by an
older dfnet resumes.

All I/O goes through Spark's DataFrame readers and writers, on a classic session and on Spark
Connect alike (no Hadoop FileSystem through py4j), so the directory may be anything Spark writes:
local (``/tmp/ckpt``, ``file:/...``), ``hdfs://``, ``dbfs:/``, ``s3a://``, a Unity Catalog
volume ... A path without a scheme means Spark's default file system; a relative one is made
absolute here when that file system is the local one. Spark's commit protocol writes the row's
file under a hidden ``_temporary`` folder and moves it into place when the job commits, so no
reader lists a half-written checkpoint; reading checks the magic, the length and the SHA-256 of
the payload besides: a corrupt or truncated checkpoint is skipped with a
:class:`CheckpointWarning` naming it, and the next newest good one is used.

Retention: the newest ``keep`` checkpoints (default 3) are kept. An older one is removed by
overwriting its folder with a marker (``pruned=true/``, a few hundred bytes), as Spark's writers
cannot delete; ``keep=None`` keeps all. Three survive a corrupt newest checkpoint and a truncated
one before it. One run writes to a directory at a time. Each checkpoint costs a few Spark jobs
(the write, the listing, the pruning), so ``checkpoint_every`` spaces them out on small data.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from .compat import create_dataframe, to_arrow
from .config import TrainConfig
from .errors import CheckpointError, ModelFormatError
from .files import first_line, live_folders, prune_folder, spark_errors, spark_files, spark_path
from .model import TrainedModel, check_format, model_record, read_record

#: the container (header and hash); the payload's meta has a format version of its own
MAGIC = b"DFNETCKPT 1\n"
FORMAT = "dfnet.checkpoint"
FORMAT_VERSION = 2
#: meta versions decode reads: 1 kept network, config and history as keys of their own
READABLE_VERSIONS = (1, 2)
DEFAULT_KEEP = 3
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
    stopper_state: dict | None = field(default=None, compare=False)
    #: the rest of the model record, for a checkpoint that is read as a model (:meth:`model`)
    class_names: list[str] | None = None
    run_id: str | None = None
    schedule_plan: dict | None = None
    #: what early stopping did (``TrainedModel.early_stopping_result``), known once the run ends
    early_stopping_result: dict | None = None

    @classmethod
    def from_model(cls, model: TrainedModel, epoch: int, optimizer: str, optimizer_state: dict, data: dict, *,
                   stopper_state: dict | None = None) -> "Checkpoint":
        """The checkpoint of ``model`` after ``epoch`` epochs, with the optimizer's state and the data's shape."""
        record, params = model.to_record()
        return cls(epoch, params.copy(), optimizer, optimizer_state, record["history"], record["network"],
                   record["config"], data, stopper_state=stopper_state, class_names=record["class_names"],
                   run_id=record["run_id"], schedule_plan=record["schedule_plan"],
                   early_stopping_result=record["early_stopping_result"])

    def model_record(self) -> dict:
        """The model record this checkpoint stores (its weights are :attr:`params`)."""
        return model_record(self.network, self.config, self.history, self.class_names, self.run_id,
                            self.early_stopping_result, self.schedule_plan)

    def model(self) -> TrainedModel:
        """The model at this checkpoint (its weights after :attr:`epoch` epochs), built and checked."""
        return TrainedModel.from_record(self.model_record(), self.params, source=self.uri or "checkpoint")


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
    early = dict(checkpoint.stopper_state or {})
    if early.get("best_params") is not None:
        arrays["early.best_params"] = np.asarray(early.pop("best_params"))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": checkpoint.model_record(),
            "epoch": checkpoint.epoch, "optimizer": checkpoint.optimizer, "optimizer_scalars": scalars,
            "data": checkpoint.data, "stopper_state": early or None,
            "random": {"seed": (checkpoint.config or {}).get("seed"), "next_epoch": checkpoint.epoch + 1,
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
        model = _model_fields(meta, uri)
        state = dict(meta["optimizer_scalars"])
        state.update({name.removeprefix("optimizer."): value for name, value in arrays.items()
                      if name.startswith("optimizer.")})
        early = meta.get("stopper_state", meta.get("early_stopping"))  # version 1: early_stopping
        if early is not None:
            early = {**early, "best_params": arrays.get("early.best_params")}
        return Checkpoint(int(meta["epoch"]), arrays["params"], meta["optimizer"], state, model["history"],
                          model["network"], model["config"], meta["data"], uri, early,
                          class_names=model["class_names"], run_id=model["run_id"],
                          schedule_plan=model["schedule_plan"], early_stopping_result=model["early_stopping_result"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as e:  # a valid hash over bytes dfnet did not write
        raise CheckpointError(f"{uri}: unreadable checkpoint payload ({type(e).__name__}: {e})") from None


def _model_fields(meta: dict, uri: str) -> dict:
    """The model record's fields of a checkpoint's meta of any readable version."""
    version = check_format(meta, FORMAT, versions=READABLE_VERSIONS, source=uri, what="checkpoint",
                           error=CheckpointError)
    record = meta["model"] if version >= 2 else {"format_version": 1, "network": meta["network"],
                                                  "config": meta["config"], "history": meta["history"]}
    try:
        return read_record(record, f"{uri} (its model)")
    except ModelFormatError as e:
        raise CheckpointError(str(e)) from None


# --- the store -------------------------------------------------------------------------

BLOB_COL = "checkpoint"
_DIR = re.compile(r"^checkpoint-(\d{6,})\.dfnet$")


class CheckpointStore:
    """The checkpoints of one run in ``directory``, through Spark's DataFrame readers and writers.

    Parameters
    ----------
    spark : the SparkSession (classic or Connect) that reaches the directory.
    directory : any path Spark writes (local, ``file:``, ``hdfs:``, ``dbfs:``, ``s3a:`` ...).
    keep : newest checkpoints kept after each write (None: all).
    """

    def __init__(self, spark, directory: str, keep: int | None = DEFAULT_KEEP):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise CheckpointError(f"keep={keep!r}: must be a positive number of checkpoints, or None for all")
        self.spark = spark
        self.keep = keep
        self.directory = spark_path(spark, directory)

    def __repr__(self) -> str:
        return f"CheckpointStore({self.uri!r}, keep={self.keep})"

    @property
    def uri(self) -> str:
        return self.directory

    def epochs(self) -> list[int]:
        """Epochs of the checkpoints present (by folder, unverified, pruned ones left out), oldest
        first; no Spark job."""
        return sorted(int(m.group(1)) for m in map(_DIR.match, live_folders(spark_files(self.spark, self.directory)))
                      if m)

    def uri_of(self, epoch: int) -> str:
        return f"{self.directory}/{checkpoint_name(epoch)}"

    def save(self, checkpoint: Checkpoint) -> str:
        """Write ``checkpoint`` (one committed Spark write), prune older ones; return its URI."""
        import pyarrow as pa

        blob = encode(checkpoint)
        uri = self.uri_of(checkpoint.epoch)
        frame = create_dataframe(self.spark, pa.table({BLOB_COL: pa.array([blob], pa.binary())}))
        # "overwrite": a folder of this epoch left by an earlier attempt (a corrupt checkpoint that
        # a resume skipped, or one killed before its commit) is replaced.
        frame.coalesce(1).write.mode("overwrite").option("compression", "none").parquet(uri)
        checkpoint.uri = uri
        self._prune()
        return uri

    def _prune(self) -> None:
        if self.keep is not None:
            for epoch in self.epochs()[:-self.keep]:
                prune_folder(self.spark, self.uri_of(epoch))

    def read(self, epoch: int) -> Checkpoint:
        """The verified checkpoint of ``epoch``; :class:`CheckpointError` if it is bad or unreadable."""
        uri = self.uri_of(epoch)
        try:
            table = to_arrow(self.spark.read.parquet(uri).select(BLOB_COL))
        except spark_errors() as e:
            raise CheckpointError(f"{uri}: unreadable or truncated ({first_line(e)})") from None
        if table.num_rows != 1:
            raise CheckpointError(f"{uri}: truncated: holds {table.num_rows} checkpoint rows, not 1")
        return decode(table.column(0)[0].as_py(), uri)

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
    if checkpoint.config is None:
        raise CheckpointError(f"cannot resume from {checkpoint.uri}: it holds no training configuration "
                              f"(a checkpoint of a model without one); start afresh in another checkpoint directory")
    problems = []
    # A field the checkpoint's dfnet did not have yet ran at its default (partial_dtype: float64).
    theirs = {**TrainConfig().to_dict(), **checkpoint.config}
    if checkpoint.network != network:
        problems.append(f"network {_layers(checkpoint.network)} there, {_layers(network)} here")
    allowed = set(RESUMABLE_CHANGES)
    if config.get("lr_schedule") == "cosine":
        allowed.discard("epochs")
    for key in sorted(set(theirs) | set(config)):
        if key not in allowed and theirs.get(key) != config.get(key):
            problems.append(f"{key}={theirs.get(key)!r} there, {config.get(key)!r} here")
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
