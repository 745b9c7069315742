"""Accuracy as models multiply: test accuracy and epochs to 88% against the number of models.

    python benchmarks/models.py [--models 2,4,8,16,32,64] [--schedules auto,minibatch] [--replicas 10]
                                [--epochs 30] [--stop-at-target] [--max-epochs N] [--name models]

The data: Fashion-MNIST's 60,000 training images replicated ``--replicas``
times IN SPARK (:func:`common.copies_of`: copy ``c`` of image ``i`` has the id
``c * 60000 + i``), every copy but the first shifted by a seeded random
(dy, dx) in [-2, 2]^2 (a hash of the id, zero fill; a ``mapInArrow`` over the
cached 60,000-row source), 600,000 rows by default, cached (memory and disk:
~1.9 GB of float32 arrays); ``fit`` caches their packed encoding once per run
(~310 MB). Test: the 10,000 Fashion-MNIST test
images, scored after every epoch (``validation_df``; one extra job an epoch,
outside the training seconds).

For each model count M the training rows are cut into M partitions, and the
run plans as if the cluster had M task slots (``--slots``, default M), so
``auto`` plans min(M, M, rows / 16,384) = M models (up to 36 on 600,000 rows). The cores that run the
tasks (``--master``, default ``local[2]``, this machine's) change the seconds,
never the weights: every task's work is a function of its partition and the
plan, and the driver adds the tasks' results in partition order.

Schedules:
  auto       dfnet's defaults (``TrainConfig(partitions=M)``): what ``plan_auto`` plans for M models
  plan       ``--plans M:A[:S[:W]]``: averaging with M models forced (coalesced from --partitions), A
             averages an epoch, the learning rate x S reached by a linear warm-up over W epochs, whatever
             ``auto`` would plan: candidates for it
  minibatch  synchronous mini-batch SGD: one Spark job a step over all M partitions, global batch =
             the local batch auto plans for M models x M, Adam at 0.003 x global / 128 (the linear
             scaling rule, Goyal et al. 2017; 0.003 is the default at batches of 128) reached by a
             linear warm-up over --warmup epochs (5), then the default cosine

``--stop-at-target`` stops a run after the first epoch at or above --target
(0.88): the "final" accuracy is then that epoch's. ``--max-epochs`` caps a run
(the cosine still spans --epochs). Prints a table and saves
benchmarks/results/<--name>.json and .html (test accuracy after each epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from common import ROOT, copies_of, default_data_dir, environment, save_results

import dfnet.train
from dfnet.config import TrainConfig, auto_batch_size
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.session import get_or_create_spark

BASE_ROWS = 60_000
SIDE = 28
#: The linear scaling rule's reference: the default Adam 0.003 at the default batch on large data.
REFERENCE_BATCH = 128


class _Stop(Exception):
    """Raised by the recorder to end a run early (target reached, or the epoch cap)."""


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64 ``x`` (wrapping arithmetic): a seeded hash per row, vectorised."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def shifts(ids: np.ndarray, seed: int, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) of each row id: 0 for the first copy (ids < 60,000), else in [-max_shift, max_shift]."""
    h = _mix(ids.astype(np.uint64) + np.uint64(seed) * np.uint64(1_000_003 * BASE_ROWS))
    span = np.uint64(2 * max_shift + 1)
    dy = (h % span).astype(np.int64) - max_shift
    dx = ((h // span) % span).astype(np.int64) - max_shift
    original = ids < BASE_ROWS
    dy[original], dx[original] = 0, 0
    return dy, dx


def shift_images(images: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Each (SIDE, SIDE) image moved by its (dy, dx), zero fill."""
    out = np.zeros_like(images)
    for sy in np.unique(dy):
        for sx in np.unique(dx):
            rows = (dy == sy) & (dx == sx)
            if not rows.any():
                continue
            src = images[rows][:, max(-sy, 0):SIDE - max(sy, 0), max(-sx, 0):SIDE - max(sx, 0)]
            out[np.flatnonzero(rows)[:, None, None], np.arange(max(sy, 0), SIDE + min(sy, 0))[None, :, None],
                np.arange(max(sx, 0), SIDE + min(sx, 0))[None, None, :]] = src
    return out


def shifted_copies(spark, data_dir: str, replicas: int, seed: int, max_shift: int, partitions: int = 2):
    """The larger training set, built in Spark and cached: ``replicas`` copies of Fashion-MNIST
    train (from the cached 60,000-row source), each but the first shifted per row; and the source."""
    images, labels = load_arrays("fashion-mnist", "train", data_dir)
    base = to_dataframe(spark, images, labels, num_partitions=partitions).cache()
    base.count()
    frame = copies_of(base, replicas, partitions, BASE_ROWS)
    schema = frame.schema

    def per_batch(batches):
        for batch in batches:
            ids = batch.column("id").to_numpy()
            column = batch.column("image")
            values = column.flatten().to_numpy().reshape(len(ids), SIDE, SIDE)
            moved = shift_images(values, *shifts(ids, seed, max_shift)).reshape(-1)
            offsets = pa.array(np.arange(len(ids) + 1, dtype=np.int32) * SIDE * SIDE)
            image = pa.ListArray.from_arrays(offsets, pa.array(moved, type=column.type.value_type),
                                             type=column.type)
            yield pa.RecordBatch.from_arrays([batch.column("id"), image, batch.column("label")],
                                             schema=batch.schema)

    shifted = frame.mapInArrow(per_batch, schema).persist(StorageLevel.MEMORY_AND_DISK)
    shifted.count()
    return shifted, base


class Recorder:
    """Each epoch's test accuracy and training seconds; the start-of-run plan line; stops a run
    at the target (``stop_at``) or after ``max_epochs``."""

    def __init__(self, target: float, stop_at: float | None, max_epochs: int | None, on_epoch=None):
        self.target, self.stop_at, self.max_epochs, self.on_epoch = target, stop_at, max_epochs, on_epoch
        self.plan_line, self.epochs = None, []

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        pass

    def on_message(self, text: str) -> None:
        if text.startswith("Schedule"):
            self.plan_line = text
        print("  " + text, flush=True)

    def on_epoch_end(self, record, total_epochs: int) -> None:
        self.epochs.append({"epoch": record.epoch, "test_accuracy": record.val_accuracy,
                            "test_loss": record.val_loss, "train_loss": record.loss, "seconds": record.seconds})
        print(f"  epoch {record.epoch}/{total_epochs}: test accuracy {record.val_accuracy:.4f}, "
              f"{record.seconds:.1f} s", flush=True)
        if self.on_epoch is not None:
            self.on_epoch(self)
        if self.stop_at is not None and record.val_accuracy >= self.stop_at:
            raise _Stop()
        if self.max_epochs is not None and record.epoch >= self.max_epochs:
            raise _Stop()


def forced_plan(models: int, averages: int, lr_scale: float = 1.0, warmup: float = 0.0):
    """A plan_schedule that plans averaging with ``models`` models and ``averages`` averages an
    epoch, the learning rate times ``lr_scale`` after ``warmup`` epochs (the rest as ``plan_auto``
    plans it)."""
    from dfnet.schedules import local_steps_per_epoch, plan_auto

    def plan_schedule(config, *, rows, partitions, slots, task_rows=None, whole_epochs_only=False):
        plan = plan_auto(config, rows=rows, partitions=models, slots=models, whole_epochs_only=whole_epochs_only)
        largest = task_rows(models if models < partitions else None)
        steps = local_steps_per_epoch(config.replace(batch_size=plan.batch_size), largest)
        return dataclasses.replace(plan, models=models, local_steps=None if averages == 1 else -(-steps // averages),
                                   lr_scale=lr_scale, warmup_epochs=warmup, epochs_per_job=1,
                                   reason=f"forced: {models} models (largest task {largest} rows), {averages} "
                                          f"average(s) an epoch, lr x {lr_scale:g} after {warmup:g} warm-up "
                                          f"epochs; batches of {plan.batch_size}")
    return plan_schedule


def run(train, test, rows: int, models: int, schedule: str, args, on_epoch=None) -> dict:
    """One training run of ``schedule`` with ``models`` partitions (and planned slots);
    ``on_epoch(recorder)`` after every epoch (the script saves the run so far)."""
    slots = args.slots or models
    local_batch = auto_batch_size(math.ceil(rows / models))
    forced = None
    if schedule.startswith("plan "):
        spec = [float(x) for x in schedule.split(" ", 1)[1].split(":")]
        forced = forced_plan(int(spec[0]), int(spec[1]), *spec[2:4])
    if schedule == "auto" or forced:
        config = TrainConfig(partitions=args.partitions or models, epochs=args.epochs, seed=args.seed)
        rescale = None
    else:
        config = TrainConfig(partitions=models, epochs=args.epochs, seed=args.seed, schedule="minibatch",
                             batch_size=local_batch * models)
        rescale = dict(lr_scale=local_batch * models / REFERENCE_BATCH, warmup_epochs=float(args.warmup))
    # The plan as on a cluster of `slots` task slots; minibatch: with the scaled learning rate and warm-up.
    plan_schedule, task_slots = dfnet.train.plan_schedule, dfnet.train.task_slots

    def planned(*a, **kw):
        plan = (forced or plan_schedule)(*a, **kw)
        if rescale is None:
            return plan
        return dataclasses.replace(plan, **rescale, reason=f"{plan.reason}; lr x {rescale['lr_scale']:g} "
                                                              f"(linear rule) after {args.warmup} warm-up epochs")

    dfnet.train.plan_schedule, dfnet.train.task_slots = planned, (lambda spark, fallback: slots)
    recorder = Recorder(args.target, args.target if args.stop_at_target else None, args.max_epochs, on_epoch)
    print(f"\n== {schedule}, {models} models ({config.partitions} partitions, {slots} planned slots)", flush=True)
    start = time.perf_counter()
    stopped = False
    try:
        model = dfnet.train.fit(train, config, validation_df=test, callbacks=[recorder], verbose=False)
        plan = model.schedule_plan
    except _Stop:
        stopped, plan = True, None
    finally:
        dfnet.train.plan_schedule, dfnet.train.task_slots = plan_schedule, task_slots
    wall = time.perf_counter() - start
    history = recorder.epochs
    first = next((h for h in history if h["test_accuracy"] >= args.target), None)
    result = {"models": models, "schedule": schedule, "slots": slots, "config": config.to_dict(),
              "plan_line": recorder.plan_line, "plan": plan, "epochs_run": len(history), "stopped_early": stopped,
              "epochs_to_target": first["epoch"] if first else None,
              "seconds_to_target": sum(h["seconds"] for h in history[:first["epoch"]]) if first else None,
              "final_accuracy": history[-1]["test_accuracy"] if history else None,
              "best_accuracy": max(h["test_accuracy"] for h in history) if history else None,
              "median_epoch_seconds": float(np.median([h["seconds"] for h in history])) if history else None,
              "wall_seconds": wall, "history": history}
    print(f"-> {schedule} x{models}: {result['epochs_to_target']} epochs to {args.target}, "
          f"accuracy {result['final_accuracy']:.4f} after {len(history)} epochs, {wall:.0f} s", flush=True)
    return result


def figure(results: list[dict], target: float):
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in results:
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in r["history"]], y=[h["test_accuracy"] for h in r["history"]],
                                 mode="lines+markers", name=f"{r['schedule']} x{r['models']}"))
    fig.add_hline(y=target, line_dash="dot")
    fig.update_layout(title="Test accuracy after each epoch against the number of models",
                      xaxis_title="epoch", yaxis_title="test accuracy")
    return fig


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="2,4,8,16,32,64", help="model counts (= partitions = planned slots)")
    parser.add_argument("--schedules", default="auto,minibatch", help="auto and/or minibatch")
    parser.add_argument("--plans", default="", help="forced averaging plans M:A[:S[:W]] (models, averages an epoch, "
                                                    "learning-rate factor, warm-up epochs), run after the schedules")
    parser.add_argument("--partitions", type=int, default=None,
                        help="partitions of the training rows (default: the run's model count)")
    parser.add_argument("--minibatch-models", default=None,
                        help="model counts for minibatch (default: --models); a step is a Spark job, so small "
                             "global batches cost thousands of jobs an epoch")
    parser.add_argument("--replicas", type=int, default=10, help="copies of the 60,000 training images")
    parser.add_argument("--max-shift", type=int, default=2, help="largest shift of a copy, in pixels")
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="epochs of the cosine")
    parser.add_argument("--max-epochs", type=int, default=None, help="stop a run after this many epochs")
    parser.add_argument("--stop-at-target", action="store_true", help="stop a run at the first epoch >= target")
    parser.add_argument("--target", type=float, default=0.88)
    parser.add_argument("--warmup", type=float, default=5.0, help="minibatch: warm-up epochs")
    parser.add_argument("--slots", type=int, default=None, help="plan for this many task slots (default: M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--name", default="models", help="results file name")
    args = parser.parse_args(argv)
    counts = [int(m) for m in args.models.split(",") if m]
    mb_counts = [int(m) for m in args.minibatch_models.split(",")] if args.minibatch_models else counts
    schedules = [s for s in args.schedules.split(",") if s]
    if set(schedules) - {"auto", "minibatch"}:
        parser.error(f"unknown schedules {sorted(set(schedules) - {'auto', 'minibatch'})}")

    spark = get_or_create_spark(args.master, app_name="dfnet-bench-models")
    start = time.perf_counter()
    train, _ = shifted_copies(spark, args.data_dir, args.replicas, args.seed, args.max_shift)
    rows = BASE_ROWS * args.replicas
    images, labels = load_arrays("fashion-mnist", "test", args.data_dir)
    test = to_dataframe(spark, images, labels).cache()
    test.count()
    print(f"{rows} training rows ({args.replicas} copies, shifts up to {args.max_shift} px), "
          f"{time.perf_counter() - start:.1f} s to load", flush=True)

    results = []
    payload = {"environment": environment(spark), "commit": _commit(), "args": vars(args), "rows": rows,
               "results": results}
    runs = [(s, m) for s in schedules for m in (counts if s == "auto" else mb_counts)]
    runs += [(f"plan {p}", int(p.split(":")[0])) for p in args.plans.split(",") if p]
    for schedule, models in runs:
        def so_far(recorder, schedule=schedule, models=models):  # a run cut short still leaves its epochs
            payload["unfinished"] = {"schedule": schedule, "models": models, "plan_line": recorder.plan_line,
                                     "history": recorder.epochs}
            save_results(args.name, payload)
        results.append(run(train, test, rows, models, schedule, args, so_far))
        payload.pop("unfinished", None)
        save_results(args.name, payload, figure(results, args.target))

    print(f"\n| models | schedule | plan | epochs to {args.target:.0%} | final accuracy (epoch) | s/epoch |")
    print("|---|---|---|---|---|---|")
    for r in results:
        plan = (r["plan_line"] or "").split(": ", 1)[-1]
        print(f"| {r['models']} | {r['schedule']} | {plan} | {r['epochs_to_target'] or '-'} | "
              f"{r['final_accuracy']:.4f} ({r['epochs_run']}) | {r['median_epoch_seconds']:.1f} |")
    path = save_results(args.name, payload, figure(results, args.target))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
