"""Time-to-accuracy benchmark: wall time until test accuracy first reaches a target.

    python benchmarks/time_to_accuracy.py [--task fashion|mnist01|all] [--contenders numpy-b128,df-minibatch,...]
                                          [--max-epochs N] [--classic-epochs N] [--mllib-iters 10,20,40,80,160]
                                          [--fashion-target 0.88] [--mnist01-target 0.995] [--master local[2]]

Tasks (test accuracy on the official test split; the target is an option):
  fashion   Fashion-MNIST, 60,000 -> 10,000 images, 784-128-10 ReLU/softmax (dfnet's default), target 0.88
  mnist01   MNIST 0/1, 1,000 -> 2,115 images (../shared/data/mnist), 784-128-2 ReLU/softmax, target 0.995

Contenders, all timed in the same run from the same data (dfnet and numpy from the same initial weights):
  numpy-b128          single process: dfnet.nn + dfnet.optim Adam 0.002, mini-batches of 128 on the driver's arrays
                      (--numpy-threads BLAS threads, default 1: what one Spark task gets)
  numpy-b512-cosine   single process, the same hyperparameters as df-minibatch (the algorithm without Spark)
  df-minibatch        DataFrame engine, minibatch schedule, Adam 0.003 cosine, batches of 512 (one job per step)
  df-defaults         dfnet's defaults (the auto schedule, 30 cosine epochs), only the task's layer sizes given
  df-average          DataFrame engine, model averaging, one job per epoch (local Adam 0.002)
  df-average-1p       the same on ONE partition: one task trains on all rows where they are cached (averaging
                      k models trains each on 1/k of the data, and needs ~k times the epochs to the same accuracy)
  df-average-local    df-average with --local-steps local steps between averages (several jobs per epoch)
  df-classic          DataFrame engine, one full-batch Adam 0.003 step per epoch (budget: --classic-epochs)
  mllib               Spark MLlib MultilayerPerceptronClassifier (L-BFGS, same layer sizes), a fresh fit for each
                      maxIter in --mllib-iters until one reaches the target
  torch               single process PyTorch on the driver's arrays (same layer sizes, PyTorch's own init),
                      Adam 0.001, mini-batches of 128, 2 threads
  torch-distributor   pyspark.ml.torch's TorchDistributor, 2 local processes (one thread each), DistributedDataParallel
                      over gloo, each process on half of each epoch's shuffle: 64 rows per process per step, Adam 0.001
  (both torch contenders are skipped when torch is not installed)

How time to target is counted:
  dfnet   the cumulative training seconds (history `seconds`: the steps only) at the first epoch whose
          `val_accuracy` >= target; "wall" adds fit's set-up (validation, caching) and the per-epoch scoring.
  numpy   the same: cumulative seconds of the training epochs; "wall" adds the per-epoch test scoring.
  mllib   the wall time of the first fit that reaches the target (one fit, not the sum of the search);
          "wall" adds scoring that model with MulticlassClassificationEvaluator.
  torch   as numpy. torch-distributor: rank 0's cumulative seconds of the training epochs (the all-reduces
          included); "wall" runs from just before TorchDistributor.run (process launch, data loading, warm-up and
          rank 0's per-epoch test scoring included). `launch_seconds`: run's wall minus rank 0's time in the function.
A contender stops at the target (unless --full-budget) or at its epoch / iteration budget ("not reached",
with its best accuracy). Cosine learning rates decay over the budget (--max-epochs), so the budget is part
of those contenders' hyperparameters. The JVM is warmed (~20 cheap jobs and a small MLlib fit) before any
Spark contender is timed.

Prints one markdown table per task and saves benchmarks/results/<name>.json and <name>.html (test accuracy
against cumulative seconds, per contender).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np
from common import default_data_dir, environment, save_results

from dfnet.config import TrainConfig
from dfnet.datasets import get_dataset, load_arrays, load_dataframe
from dfnet.errors import TrainingDivergedError
from dfnet.optim import make_optimizer
from dfnet.session import get_or_create_spark
from dfnet.train import EpochRecord, build_network, fit

TASKS = {
    "fashion": dict(dataset="fashion-mnist", classes=None, target=0.88, hidden=(128,), max_epochs=20,
                    classic_epochs=150, average_batch=128),
    # 500 rows per partition: local batches of 16 give 32 local steps per epoch, so --local-steps 20
    # really averages twice per epoch instead of collapsing into df-average.
    "mnist01": dict(dataset="mnist", classes=[0, 1], target=0.995, hidden=(128,), max_epochs=10,
                    classic_epochs=100, average_batch=16),
}
CONTENDERS = {
    "numpy-b128": dict(kind="numpy", config=dict(batch_size=128, lr=0.002, lr_schedule="constant")),
    "numpy-b512-cosine": dict(kind="numpy", config=dict(batch_size=512, lr=0.003, lr_schedule="cosine")),
    "df-minibatch": dict(kind="dfnet", config=dict(schedule="minibatch", batch_size=512, lr=0.003,
                                                   lr_schedule="cosine")),
    "df-defaults": dict(kind="dfnet", config={}),
    "df-average": dict(kind="dfnet", config=dict(schedule="average", lr=0.002, lr_schedule="constant")),
    "df-average-1p": dict(kind="dfnet", config=dict(schedule="average", lr=0.002, lr_schedule="constant",
                                                    partitions=1)),
    "df-average-local": dict(kind="dfnet", config=dict(schedule="average", lr=0.002, lr_schedule="constant")),
    "df-classic": dict(kind="dfnet", config=dict(schedule="classic", lr=0.003, lr_schedule="constant")),
    "mllib": dict(kind="mllib", config={}),
    "torch": dict(kind="torch", config=dict(batch_size=128, lr=0.001, threads=2)),
    "torch-distributor": dict(kind="torch-distributor", config=dict(batch_size=128, lr=0.001, processes=2)),
}
TORCH_KINDS = ("torch", "torch-distributor")


class TargetReached(Exception):
    """Raised by :class:`TargetTracker` to end ``fit`` early: it has no stop hook of its own."""


class TargetTracker:
    """``fit`` callback: records test accuracy against cumulative seconds, notes the first epoch at target."""

    def __init__(self, target: float, stop_at_target: bool):
        self.target, self.stop_at_target = target, stop_at_target
        self.start = time.perf_counter()
        self.train_seconds = 0.0
        self.curve: list[dict] = []
        self.reached_at: dict | None = None

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        pass

    def on_epoch_end(self, record: EpochRecord, total_epochs: int) -> None:
        self.train_seconds += record.seconds
        point = dict(epoch=record.epoch, steps=record.steps, train_loss=record.loss, epoch_seconds=record.seconds,
                     train_seconds=self.train_seconds, wall_seconds=time.perf_counter() - self.start,
                     accuracy=record.val_accuracy)
        self.curve.append(point)
        print(f"   epoch {record.epoch:3d}/{total_epochs} | jobs {record.steps:3d} | {record.seconds:6.2f} s | "
              f"test acc {record.val_accuracy:.4f}", flush=True)
        if self.reached_at is None and record.val_accuracy >= self.target:
            self.reached_at = point
            if self.stop_at_target:
                raise TargetReached


class EpochCurve:
    """The :class:`TargetTracker` of the contenders that run their own epoch loop (the torch ones)."""

    def __init__(self, target: float, stop_at_target: bool, epochs: int):
        self.target, self.stop_at_target, self.epochs = target, stop_at_target, epochs
        self.train_seconds = 0.0
        self.curve: list[dict] = []
        self.reached_at: dict | None = None
        self.status: str | None = None

    def add(self, epoch: int, steps: int, train_loss: float, seconds: float, wall_seconds: float,
            accuracy: float) -> bool:
        """Record one epoch; True when training should stop (at the target, or diverged)."""
        self.train_seconds += seconds
        point = dict(epoch=epoch, steps=steps, train_loss=train_loss, epoch_seconds=seconds,
                     train_seconds=self.train_seconds, wall_seconds=wall_seconds, accuracy=accuracy)
        self.curve.append(point)
        print(f"   epoch {epoch:3d}/{self.epochs} | {seconds:6.3f} s | test acc {accuracy:.4f}", flush=True)
        if not math.isfinite(train_loss):
            self.status = f"diverged at epoch {epoch}"
            return True
        if self.reached_at is None and accuracy >= self.target:
            self.reached_at = point
        return self.reached_at is not None and self.stop_at_target


def outcome(name: str, kind: str, target: float, curve: list[dict], reached_at: dict | None, *,
            status: str | None = None, **extra) -> dict:
    """One contender's result in the shape every kind shares."""
    accuracies = [p["accuracy"] for p in curve]
    return {"contender": name, "kind": kind, "target": target, "reached": reached_at is not None,
            "status": status or ("reached" if reached_at else "not reached"),
            "seconds_to_target": reached_at["train_seconds"] if reached_at else None,
            "wall_seconds_to_target": reached_at["wall_seconds"] if reached_at else None,
            "reached_at": reached_at, "final_accuracy": accuracies[-1] if accuracies else None,
            "best_accuracy": max(accuracies) if accuracies else None, "curve": curve, **extra}


# --- contenders ----------------------------------------------------------------------

def contender_config(name: str, task: dict, args) -> TrainConfig:
    if name == "df-defaults":  # dfnet's defaults as they are (30 cosine epochs, auto schedule), the task's layers
        return TrainConfig(hidden=task["hidden"], partitions=args.partitions).validate()
    changes = dict(hidden=task["hidden"], epochs=args.max_epochs or task["max_epochs"], partitions=args.partitions)
    changes.update(CONTENDERS[name]["config"])
    if changes.get("schedule") == "average":
        changes["batch_size"] = task["average_batch"]
    if name == "df-average-local":
        changes["local_steps"] = args.local_steps
    if name == "df-classic":
        changes["epochs"] = args.classic_epochs or task["classic_epochs"]
    return TrainConfig(**changes).validate()


def run_dfnet(name: str, config: TrainConfig, data: dict, target: float, args) -> dict:
    tracker = TargetTracker(target, stop_at_target=not args.full_budget)
    status = None
    try:
        fit(data["train_df"], config, num_classes=data["num_classes"], validation_df=data["test_df"],
            callbacks=[tracker], verbose=False)
    except TargetReached:
        pass
    except TrainingDivergedError as exc:
        status = f"diverged: {exc}"
    jobs_per_epoch = tracker.curve[0]["steps"] if tracker.curve else None
    return outcome(name, "dfnet", target, tracker.curve, tracker.reached_at, status=status,
                   config=config.to_dict(), jobs_per_epoch=jobs_per_epoch,
                   budget=f"{config.epochs} epochs")


def run_numpy(name: str, config: TrainConfig, data: dict, target: float, args) -> dict:
    """The single-process reference: the same network, init and optimizer on the driver's arrays."""
    # threadpoolctl comes with scikit-learn, which dfnet requires.
    from threadpoolctl import threadpool_limits

    # Spark sets OMP_NUM_THREADS=1 in its Python workers (one core per task); OpenBLAS's default of
    # one thread per core made these small products 10-60x slower and erratic on a busy 2-core machine.
    with threadpool_limits(limits=args.numpy_threads, user_api="blas"):
        result = _numpy_training(name, config, data, target, args)
    result["blas_threads"] = args.numpy_threads
    return result


def _numpy_training(name: str, config: TrainConfig, data: dict, target: float, args) -> dict:
    X, labels, X_test, labels_test = data["arrays"]
    net = build_network(config, X.shape[1], data["num_classes"])
    params = net.init_params(config.seed, config.init_scheme)
    optimizer = make_optimizer(config.optimizer, config.learning_rate, momentum=config.momentum,
                               beta1=config.beta1, beta2=config.beta2)
    _warm_numpy(net, params, X, labels, config.batch_size)
    rng = np.random.default_rng(config.seed)
    train_seconds = wall_seconds = 0.0
    curve, reached_at, status = [], None, None
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        optimizer.lr = config.lr_at(epoch)
        order = rng.permutation(len(labels))
        loss_sum = 0.0
        for first in range(0, len(order), config.batch_size):
            rows = order[first:first + config.batch_size]
            step = net.loss_and_grad(params, X[rows], labels[rows])
            optimizer.step(params, step.grad_sum / step.count)
            loss_sum += step.loss_sum
        seconds = time.perf_counter() - start
        scoring = time.perf_counter()
        accuracy = float(np.mean(np.argmax(net.forward(params, X_test), axis=1) == labels_test))
        scoring = time.perf_counter() - scoring
        train_seconds += seconds
        wall_seconds += seconds + scoring
        point = dict(epoch=epoch, steps=math.ceil(len(order) / config.batch_size), train_loss=loss_sum / len(order),
                     epoch_seconds=seconds, train_seconds=train_seconds, wall_seconds=wall_seconds, accuracy=accuracy)
        curve.append(point)
        print(f"   epoch {epoch:3d}/{config.epochs} | {seconds:6.3f} s | test acc {accuracy:.4f}", flush=True)
        if not math.isfinite(loss_sum):
            status = f"diverged at epoch {epoch}"
            break
        if reached_at is None and accuracy >= target:
            reached_at = point
            if not args.full_budget:
                break
    return outcome(name, "numpy", target, curve, reached_at, status=status, config=config.to_dict(),
                   budget=f"{config.epochs} epochs")


def _warm_numpy(net, params: np.ndarray, X: np.ndarray, labels: np.ndarray, batch_size: int,
                seconds: float = 0.5) -> None:
    """Untimed steps on a copy of the weights: the first BLAS calls of a process (thread pool, page
    faults) are several times slower than the rest."""
    scratch = params.copy()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        step = net.loss_and_grad(scratch, X[:batch_size], labels[:batch_size])
        scratch -= 1e-6 * step.grad_sum
    net.forward(scratch, X[:batch_size])


def mllib_frames(data: dict, partitions: int):
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    def vectors(df):
        return df.select(array_to_vector("image").alias("features"), F.col("label").cast("double").alias("label"))

    train = vectors(data["train_df"]).repartition(partitions).cache()
    test = vectors(data["test_df"]).cache()
    train.count(), test.count()
    return train, test


def run_mllib(name: str, layers: list[int], data: dict, target: float, args) -> dict:
    """A fresh L-BFGS fit per maxIter; the time to target is the wall time of the first fit at target."""
    from pyspark.ml.classification import MultilayerPerceptronClassifier
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    train, test = mllib_frames(data, args.partitions)
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    curve, reached_at, status = [], None, None
    search_seconds = 0.0
    try:
        for max_iter in args.mllib_iters:
            classifier = MultilayerPerceptronClassifier(layers=layers, maxIter=max_iter, seed=args.seed,
                                                        blockSize=128)
            start = time.perf_counter()
            model = classifier.fit(train)
            fit_seconds = time.perf_counter() - start
            start = time.perf_counter()
            accuracy = evaluator.evaluate(model.transform(test))
            scoring = time.perf_counter() - start
            search_seconds += fit_seconds + scoring
            iterations = _total_iterations(model)
            point = dict(max_iter=max_iter, iterations=iterations, train_seconds=fit_seconds,
                         wall_seconds=fit_seconds + scoring, accuracy=accuracy)
            curve.append(point)
            print(f"   maxIter {max_iter:4d} | {iterations} iterations | fit {fit_seconds:7.2f} s | "
                  f"test acc {accuracy:.4f}", flush=True)
            if reached_at is None and accuracy >= target:
                reached_at = point
                if not args.full_budget:
                    break
            if iterations is not None and iterations < max_iter:
                # L-BFGS met its tolerance: a larger maxIter would refit the same model.
                status = None if reached_at else f"converged after {iterations} iterations below the target"
                break
    finally:
        train.unpersist()
        test.unpersist()
    return outcome(name, "mllib", target, curve, reached_at, status=status, layers=layers,
                   solver="l-bfgs", search_seconds=search_seconds,
                   budget=f"maxIter {', '.join(map(str, args.mllib_iters))}")


def _total_iterations(model) -> int | None:
    from py4j.protocol import Py4JError

    try:
        summary = model.summary
        summary = summary() if callable(summary) else summary  # a method in pyspark 4.3
        return int(summary.totalIterations)
    except (AttributeError, RuntimeError, Py4JError):  # no training summary: the count is informative only
        return None


# --- PyTorch contenders ------------------------------------------------------------------
# TorchDistributor cloudpickles its train function into a script for torchrun's processes. This file runs
# as __main__, so the function and the helpers it names (_torch_mlp, _warm_torch, EpochCurve) travel by
# value, and the processes never import this script; each imports what it needs itself.

def torch_missing() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return True
    return False


def _torch_mlp(layers: list[int]):
    """Linear layers of the given sizes with ReLU between: logits, for nn.CrossEntropyLoss."""
    from torch import nn

    modules = []
    for fan_in, fan_out in zip(layers[:-1], layers[1:]):
        modules += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*modules[:-1])


def _warm_torch(model, X, y, batch_size: int, steps: int = 20) -> None:
    """Untimed Adam steps, then the weights put back: a process's first steps (thread pool, allocator,
    gloo's first all-reduces) are slower than the rest."""
    import copy

    import torch

    state = copy.deepcopy(model.state_dict())
    scratch = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        scratch.zero_grad()
        torch.nn.functional.cross_entropy(model(X[:batch_size]), y[:batch_size]).backward()
        scratch.step()
    model.load_state_dict(state)
    model.zero_grad()


def run_torch(name: str, layers: list[int], epochs: int, data: dict, target: float, args) -> dict:
    """Single-process PyTorch on the driver's arrays: the same layer sizes, Adam, shuffled mini-batches."""
    import torch

    spec = CONTENDERS[name]["config"]
    batch_size = spec["batch_size"]
    torch.set_num_threads(spec["threads"])
    X, y, X_test, y_test = (torch.from_numpy(a) for a in data["arrays"])
    torch.manual_seed(args.seed)
    model = _torch_mlp(layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    _warm_torch(model, X, y, batch_size)
    generator = torch.Generator().manual_seed(args.seed)
    tracker = EpochCurve(target, not args.full_budget, epochs)
    wall_seconds = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(y), generator=generator)
        loss_sum = _torch_epoch(model, optimizer, loss_fn, X, y, order, batch_size)
        seconds = time.perf_counter() - start
        scoring = time.perf_counter()
        with torch.no_grad():
            accuracy = (model(X_test).argmax(dim=1) == y_test).double().mean().item()
        wall_seconds += seconds + time.perf_counter() - scoring
        if tracker.add(epoch, math.ceil(len(order) / batch_size), loss_sum / len(order), seconds, wall_seconds,
                       accuracy):
            break
    return outcome(name, "torch", target, tracker.curve, tracker.reached_at, status=tracker.status,
                   config=dict(spec, layers=layers, seed=args.seed), torch=torch.__version__,
                   budget=f"{epochs} epochs")


def _torch_epoch(model, optimizer, loss_fn, X, y, order, batch_size: int) -> float:
    """One pass of Adam steps over the rows ``order`` in batches; the summed loss."""
    loss_sum = 0.0
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(X[rows]), y[rows])
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(rows)
    return loss_sum


def _ddp_train(paths: list[str], layers: list[int], spec: dict, epochs: int, target: float, stop_at_target: bool,
               seed: int, launched: float) -> dict:
    """TorchDistributor's train function, run by every process: DDP over gloo, each rank on its share of
    the epoch's shuffle; rank 0 scores the test set after each epoch and decides when all ranks stop."""
    import time

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    entered = time.monotonic()  # CLOCK_MONOTONIC on Linux: the same clock as the driver's `launched`
    torch.set_num_threads(1)  # one core per process (torchrun sets OMP_NUM_THREADS=1 too)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y, X_test, y_test = (torch.from_numpy(np.load(path)) for path in paths)
    torch.manual_seed(seed)
    model = DistributedDataParallel(_torch_mlp(layers))  # starts every rank from rank 0's weights
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    batch_size = spec["batch_size"] // world  # the global batch is split: DDP averages the ranks' gradients
    _warm_torch(model, X, y, batch_size)
    # The same seeded shuffle on every rank, cut into equal shares (as DistributedSampler does): unequal
    # step counts would leave one rank waiting in an all-reduce that never comes.
    generator = torch.Generator().manual_seed(seed)
    share = len(y) // world
    tracker = EpochCurve(target, stop_at_target, epochs) if rank == 0 else None
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(y), generator=generator)[rank * share:(rank + 1) * share]
        loss_sum = _torch_epoch(model, optimizer, loss_fn, X, y, order, batch_size)
        seconds = time.perf_counter() - start
        totals = torch.tensor([loss_sum, float(share)], dtype=torch.float64)
        dist.all_reduce(totals)
        stop = torch.zeros(1, dtype=torch.int32)
        if rank == 0:
            with torch.no_grad():
                accuracy = (model.module(X_test).argmax(dim=1) == y_test).double().mean().item()
            stop[0] = tracker.add(epoch, -(-share // batch_size), (totals[0] / totals[1]).item(), seconds,
                                  time.monotonic() - launched, accuracy)
        # Also the barrier: the other ranks wait here while rank 0 scores, then all stop at the same epoch.
        dist.broadcast(stop, src=0)
        if stop.item():
            break
    result = [None]
    if rank == 0:
        result = [dict(curve=tracker.curve, reached_at=tracker.reached_at, status=tracker.status,
                       startup_seconds=entered - launched, in_function_seconds=time.monotonic() - entered)]
    # Every process pickles its return value to the same output file, so all return rank 0's.
    dist.broadcast_object_list(result, src=0)
    dist.destroy_process_group()
    return result[0]


def run_torch_distributor(name: str, layers: list[int], epochs: int, data: dict, target: float, args) -> dict:
    """The same model with DistributedDataParallel in TorchDistributor's local processes."""
    import torch
    from pyspark.ml.torch.distributor import TorchDistributor

    spec = CONTENDERS[name]["config"]
    extra = dict(config=dict(spec, layers=layers, seed=args.seed), torch=torch.__version__, budget=f"{epochs} epochs")
    with tempfile.TemporaryDirectory(prefix="dfnet-tta-") as tmp:
        # Files, not arguments: the arguments are pickled into the launch script and unpickled by every process.
        paths = [os.path.join(tmp, f"{part}.npy") for part in ("X", "y", "X_test", "y_test")]
        for path, array in zip(paths, data["arrays"]):
            np.save(path, array)
        distributor = TorchDistributor(num_processes=spec["processes"], local_mode=True, use_gpu=False)
        launched = time.monotonic()
        try:
            run = distributor.run(_ddp_train, paths, layers, spec, epochs, target, not args.full_budget,
                                  args.seed, launched)
        except RuntimeError as exc:  # a failed process: the message ends with its output
            print(f"   failed: {exc}", flush=True)
            return outcome(name, "torch-distributor", target, [], None, status="failed (output in the log)",
                           **extra)
        run_seconds = time.monotonic() - launched
    launch_seconds = run_seconds - run["in_function_seconds"]
    print(f"   distributor.run {run_seconds:.2f} s: {run['startup_seconds']:.2f} s to rank 0's function, "
          f"{launch_seconds:.2f} s outside it in all", flush=True)
    return outcome(name, "torch-distributor", target, run["curve"], run["reached_at"], status=run["status"],
                   launch_seconds=launch_seconds, startup_seconds=run["startup_seconds"], run_seconds=run_seconds,
                   **extra)


# --- data and warm-up ----------------------------------------------------------------

def load_task(spark, task: dict, args) -> dict:
    """The task's train/test rows as cached DataFrames (for Spark) and as float arrays (for numpy)."""
    spec = get_dataset(task["dataset"])
    classes = task["classes"]

    def arrays(split):
        images, labels = load_arrays(task["dataset"], split, args.data_dir)
        if classes is not None:
            keep = np.isin(labels, classes)
            images, labels = images[keep], labels[keep]
            labels = np.array([classes.index(int(v)) for v in labels], dtype=np.int64)
        # The same scaling as datasets.to_dataframe, so numpy and Spark see identical pixels.
        return np.divide(images.reshape(len(images), -1), spec.max_value, dtype=np.float32), labels

    X, y = arrays("train")
    X_test, y_test = arrays("test")
    train_df = load_dataframe(spark, task["dataset"], "train", data_dir=args.data_dir, classes=classes,
                              num_partitions=args.partitions).cache()
    test_df = load_dataframe(spark, task["dataset"], "test", data_dir=args.data_dir, classes=classes).cache()
    train_rows, test_rows = train_df.count(), test_df.count()
    if (train_rows, test_rows) != (len(y), len(y_test)):
        raise RuntimeError(f"Spark and numpy disagree on the rows: {train_rows}/{test_rows} "
                           f"against {len(y)}/{len(y_test)}")
    return dict(train_df=train_df, test_df=test_df, arrays=(X, y, X_test, y_test),
                num_classes=len(classes) if classes else spec.num_classes, train_rows=train_rows,
                test_rows=test_rows)


def warm_up(data: dict, hidden: tuple[int, ...], with_mllib: bool, partitions: int) -> float:
    """~20 cheap jobs through dfnet's path (and a tiny MLlib fit): the JVM is ~30% slower before."""
    start = time.perf_counter()
    small = data["train_df"].limit(1000).cache()
    small.count()
    fit(small, TrainConfig(hidden=hidden, schedule="classic", epochs=20), num_classes=data["num_classes"],
        verbose=False)
    if with_mllib:
        from pyspark.ml.classification import MultilayerPerceptronClassifier

        train, test = mllib_frames(dict(train_df=small, test_df=small.limit(10)), partitions)
        MultilayerPerceptronClassifier(layers=[train.first()["features"].size, *hidden, data["num_classes"]],
                                       maxIter=5, seed=0).fit(train)
        train.unpersist()
        test.unpersist()
    small.unpersist()
    return time.perf_counter() - start


# --- one task --------------------------------------------------------------------------

def run_task(spark, task_name: str, args) -> dict:
    task = TASKS[task_name]
    target = args.targets[task_name]
    data = load_task(spark, task, args)
    layers = [data["arrays"][0].shape[1], *task["hidden"], data["num_classes"]]
    print(f"\n== {task_name}: {task['dataset']} classes {task['classes'] or 'all'}, {data['train_rows']} -> "
          f"{data['test_rows']} rows, layers {layers}, target test accuracy {target}", flush=True)
    results = []
    for name in args.contenders:
        kind = CONTENDERS[name]["kind"]
        if kind in ("dfnet", "mllib") and not args.warm:
            seconds = warm_up(data, task["hidden"], "mllib" in args.contenders, args.partitions)
            print(f"   (JVM warm-up: {seconds:.1f} s, untimed)", flush=True)
            args.warm = True
        print(f"-- {name}", flush=True)
        if kind in TORCH_KINDS and torch_missing():
            print("   skipped: torch not installed", flush=True)
            result = outcome(name, kind, target, [], None, status="skipped: torch not installed")
        elif kind in TORCH_KINDS:
            epochs = args.max_epochs or task["max_epochs"]
            print(f"   Adam {CONTENDERS[name]['config']['lr']}, batch {CONTENDERS[name]['config']['batch_size']}, "
                  f"budget {epochs} epochs", flush=True)
            runner = run_torch if kind == "torch" else run_torch_distributor
            result = runner(name, layers, epochs, data, target, args)
        elif kind == "mllib":
            result = run_mllib(name, layers, data, target, args)
        else:
            config = contender_config(name, task, args)
            batch = "full batch" if config.schedule == "classic" else f"batch {config.batch_size}"
            local = f", {config.local_steps} local steps per average" if config.local_steps else ""
            print(f"   {config.schedule}, {config.optimizer} {config.learning_rate} {config.lr_schedule}, "
                  f"{batch}{local}, budget {config.epochs} epochs", flush=True)
            if name == "df-average-local":
                per_epoch = math.ceil(math.ceil(data["train_rows"] / args.partitions) / config.batch_size)
                if config.local_steps >= per_epoch:
                    print(f"   note: --local-steps {config.local_steps} >= ~{per_epoch} local steps per epoch: "
                          f"the same as df-average", flush=True)
            runner = run_numpy if kind == "numpy" else run_dfnet
            result = runner(name, config, data, target, args)
        results.append(result)
        summary = (f"reached in {result['seconds_to_target']:.2f} s" if result["reached"]
                   else result["status"] if result["best_accuracy"] is None
                   else f"{result['status']} (best {result['best_accuracy']:.4f})")
        print(f"   -> {summary}", flush=True)
    data["train_df"].unpersist()
    data["test_df"].unpersist()
    references = [r["seconds_to_target"] for r in results if r["kind"] == "numpy" and r["reached"]]
    fastest = min(references) if references else None
    for r in results:
        r["ratio_to_fastest_numpy"] = (r["seconds_to_target"] / fastest) if (fastest and r["reached"]) else None
    return {"task": task_name, "dataset": task["dataset"], "classes": task["classes"], "target": target,
            "train_rows": data["train_rows"], "test_rows": data["test_rows"], "layers": layers,
            "fastest_numpy_seconds": fastest, "results": results}


# --- report ------------------------------------------------------------------------------

def progress_cell(r: dict) -> str:
    """Epochs (or MLlib iterations) at the target, else how far the contender got."""
    if r["kind"] == "mllib":
        point = r["reached_at"] or (r["curve"][-1] if r["curve"] else None)
        return "-" if point is None else f"maxIter {point['max_iter']} ({point['iterations']} it.)"
    point = r["reached_at"] or (r["curve"][-1] if r["curve"] else None)
    if point is None:
        return "-"
    if r["kind"] in ("numpy", *TORCH_KINDS):  # steps per process for torch-distributor
        jobs = _count(point["epoch"] * point["steps"], "step")
    else:
        jobs = _count(sum(p["steps"] for p in r["curve"] if p["epoch"] <= point["epoch"]), "job")
    return f"{_count(point['epoch'], 'epoch')}, {jobs}" + ("" if r["reached"] else " (budget)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def print_table(report: dict) -> None:
    print(f"\n### {report['task']}: {report['dataset']} {report['classes'] or 'all classes'}, "
          f"{report['train_rows']:,} -> {report['test_rows']:,}, target {report['target']}\n")
    print("| contender | reached? | seconds to target | wall incl. set-up + validation | epochs / iterations | "
          "final accuracy | x fastest numpy |")
    print("|---|---|---|---|---|---|---|")
    for r in report["results"]:
        if r["reached"]:
            reached = "yes"
        else:
            why = [] if r["status"] == "not reached" else [r["status"]]
            if r["best_accuracy"] is not None:
                why.append(f"best {r['best_accuracy']:.4f}")
            reached = "no" + (f" ({'; '.join(why)})" if why else "")
        seconds = f"{r['seconds_to_target']:.2f}" if r["reached"] else "-"
        wall = f"{r['wall_seconds_to_target']:.2f}" if r["reached"] else "-"
        ratio = f"{r['ratio_to_fastest_numpy']:.1f}x" if r["ratio_to_fastest_numpy"] else "-"
        final = "-" if r["final_accuracy"] is None else f"{r['final_accuracy']:.4f}"
        print(f"| {r['contender']} | {reached} | {seconds} | {wall} | {progress_cell(r)} | {final} | {ratio} |")
    if report["fastest_numpy_seconds"] is None:
        print("\n(no single-process reference reached the target: no ratios)")


def figure(reports: list[dict]):
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(reports), cols=1, vertical_spacing=0.12,
                        subplot_titles=[f"{r['task']} ({r['dataset']}), target {r['target']}" for r in reports])
    colors = {name: qualitative.Plotly[i % len(qualitative.Plotly)] for i, name in enumerate(CONTENDERS)}
    shown = set()
    for row, report in enumerate(reports, start=1):
        for r in report["results"]:
            if not r["curve"]:
                continue
            labels = [f"maxIter {p['max_iter']}" if r["kind"] == "mllib" else f"epoch {p['epoch']}"
                      for p in r["curve"]]
            fig.add_trace(go.Scatter(x=[p["train_seconds"] for p in r["curve"]], y=[p["accuracy"] for p in r["curve"]],
                                     text=labels, mode="lines+markers", name=r["contender"],
                                     legendgroup=r["contender"], showlegend=r["contender"] not in shown,
                                     line=dict(color=colors[r["contender"]])), row=row, col=1)
            shown.add(r["contender"])
        fig.add_hline(y=report["target"], line_dash="dot", line_color="grey", row=row, col=1)
        fig.update_xaxes(type="log", title_text="cumulative training seconds (MLlib: seconds of that fit)",
                         row=row, col=1)
        fig.update_yaxes(title_text="test accuracy", row=row, col=1)
    fig.update_layout(title="Test accuracy against training time, per contender (same run)",
                      height=450 * len(reports))
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="all", choices=[*TASKS, "all"])
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help="comma-separated subset of: " + ", ".join(CONTENDERS))
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="epoch budget (and cosine horizon) of the mini-batch, averaging, numpy and torch "
                             "contenders "
                             "(default: " + ", ".join(f"{k} {t['max_epochs']}" for k, t in TASKS.items()) + ")")
    parser.add_argument("--classic-epochs", type=int, default=None,
                        help="epoch budget of df-classic, one full-batch step each "
                             "(default: " + ", ".join(f"{k} {t['classic_epochs']}" for k, t in TASKS.items()) + ")")
    parser.add_argument("--mllib-iters", default="10,20,40,80,160", help="maxIter of each fresh MLlib fit, in order")
    parser.add_argument("--local-steps", type=int, default=20, help="local steps between averages (df-average-local)")
    for name, task in TASKS.items():
        parser.add_argument(f"--{name}-target", type=float, default=task["target"],
                            help=f"test accuracy to reach on {name} ({task['target']})")
    parser.add_argument("--full-budget", action="store_true",
                        help="keep training to the budget after the target (the time to target is unchanged)")
    parser.add_argument("--numpy-threads", type=int, default=1,
                        help="BLAS threads of the numpy contenders (1, like one Spark task; 2 uses both cores)")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0,
                        help="MLlib's and the torch contenders' seed (dfnet and numpy use TrainConfig's)")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--name", default="time_to_accuracy", help="results file name")
    args = parser.parse_args(argv)
    args.contenders = [c for c in args.contenders.split(",") if c]
    unknown = sorted(set(args.contenders) - set(CONTENDERS))
    if unknown or not args.contenders:
        parser.error(f"unknown contenders {unknown}; known: {', '.join(CONTENDERS)}")
    try:
        args.mllib_iters = [int(n) for n in args.mllib_iters.split(",") if n]
    except ValueError:
        parser.error(f"--mllib-iters must be comma-separated integers, got {args.mllib_iters!r}")
    for option in ("max_epochs", "classic_epochs", "local_steps", "numpy_threads", "partitions"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    args.targets = {name: getattr(args, f"{name}_target") for name in TASKS}
    args.warm = False
    tasks = list(TASKS) if args.task == "all" else [args.task]

    spark = get_or_create_spark(args.master, app_name="dfnet-bench-time-to-accuracy")
    reports = [run_task(spark, name, args) for name in tasks]
    for report in reports:
        print_table(report)
    options = {k: v for k, v in vars(args).items() if k not in ("warm",)}
    path = save_results(args.name, {"environment": environment(spark), "options": options, "tasks": reports},
                        figure(reports))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
