"""What a training run tells as it goes: the history record of an epoch, callbacks, the console lines."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Protocol, Sequence


@dataclass
class EpochRecord:
    """One line of training history. ``loss`` and ``accuracy`` are means over the rows the
    epoch's steps saw, each measured before that step's update."""

    epoch: int
    loss: float
    accuracy: float
    rows: int
    steps: int  # updates of the driver's weights: gradient steps, or averages of the models
    batch_size: float  # rows per optimizer step: the (mean) batch of a gradient step, the local batch of averaging
    seconds: float  # training time of the epoch, validation excluded (see epochs_in_job)
    val_loss: float | None = None  # on the validation rows, after the epoch's updates
    val_accuracy: float | None = None
    best_epoch: int | None = None  # early stopping: the epoch of the lowest validation loss so far
    #: set when one Spark job trained this epoch together with others (small data): how many it
    #: trained; ``seconds`` is then that job's time shared out equally
    epochs_in_job: int | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class Callback(Protocol):
    """What ``fit`` tells its callbacks. A callback may also have ``on_message(text)`` (one-line
    notes such as where a run resumes from), ``on_train_begin(config, facts)``,
    ``on_train_end(model)`` and ``on_train_failed(error)``. ``on_step`` follows each Spark job: when
    one job trains several epochs it is called for the first of them only, and ``on_epoch_end`` for
    each."""

    def on_step(self, epoch: int, step: int, steps: int) -> None: ...
    def on_epoch_end(self, record: EpochRecord, total_epochs: int) -> None: ...


class Callbacks:
    """The callbacks of one run, called in order; the optional hooks only on those that have them."""

    def __init__(self, callbacks: Sequence[Callback]):
        self.callbacks = list(callbacks)

    def hook(self, name: str, *args) -> None:
        for cb in self.callbacks:
            method = getattr(cb, name, None)
            if method is not None:
                method(*args)

    def message(self, text: str) -> None:
        self.hook("on_message", text)

    def step(self, epoch: int, step: int, steps: int) -> None:
        for cb in self.callbacks:
            cb.on_step(epoch, step, steps)

    def epoch_end(self, record: EpochRecord, total_epochs: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(record, total_epochs)


class ProgressPrinter:
    """Prints ``Epoch i/N | Loss | Acc | Batchsize | seconds`` lines, and a live bar on a terminal."""

    def __init__(self, out=None, bar: bool | None = None):
        self.out = out or sys.stdout
        self.bar_stream = sys.stderr
        self.bar = self.bar_stream.isatty() if bar is None else bar

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        if not self.bar:
            return
        width = 30
        filled = int(width * step / steps)
        self.bar_stream.write(f"\r  epoch {epoch} [{'#' * filled}{'.' * (width - filled)}] {step}/{steps} steps")
        self.bar_stream.flush()

    def on_message(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def on_epoch_end(self, record: EpochRecord, total_epochs: int) -> None:
        if self.bar:
            self.bar_stream.write("\r" + " " * 70 + "\r")
        val = "" if record.val_accuracy is None else \
            f" | Val loss {record.val_loss:.4f} | Val acc {record.val_accuracy:.4f}"
        shared = "" if record.epochs_in_job is None else f" (1/{record.epochs_in_job} of a job)"
        print(f"Epoch {record.epoch}/{total_epochs} | Loss {record.loss:.4f} | Acc {record.accuracy:.4f} | "
              f"Batchsize {record.batch_size:.0f} | {record.seconds:.2f} s{shared}{val}", file=self.out, flush=True)
