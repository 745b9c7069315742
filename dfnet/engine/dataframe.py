"""The DataFrame engine: one training step is one Spark job.

broadcast the flat weights -> ``mapInArrow`` runs the batched forward and
backward pass on each partition's Arrow batches and yields ONE row of partial
sums per partition -> the rows are added (``groupBy().agg``, or on the driver
after an Arrow collect) -> the driver receives the summed gradient, loss,
correct count and row count.

Why this shape (figures: docs/design.md, "What was measured to choose it", and
docs/performance.md, "Engines" and "Aggregation", with their commands):

- ``mapInArrow`` rather than ``mapInPandas``: the packed images are read
  straight from the Arrow buffers, with no pandas Series of bytes in between.
- A pass feeds ``loss_and_grad`` :data:`STEP_ROWS` images at a time, so the
  activations fit the CPU caches.
- The partial sums travel as one ``array<double>`` per row packed as
  ``[gradient..., loss_sum, correct, count]``: a grouped-aggregate pandas UDF
  cannot share an ``agg()`` with built-in aggregates, so the scalars ride along.
- Every sum adds the rows in partition order (:func:`ordered_sum`): float
  addition is not associative, and on a cluster the reduce side receives the
  rows in whatever order the tasks finished, so without it two runs of one
  seed, or a retried task, changed the weights.
- Three ways to add the P partial rows (:class:`PartialLayout`): an Arrow
  ``collect`` skips a shuffle stage but funnels P vectors into the driver;
  ``agg`` funnels them into one reduce task; ``sharded`` cuts every vector into
  K chunk rows and adds each chunk on its own reduce task (one chunk a task,
  :func:`shard_keys`), so no link carries more than W values a step per task
  and the driver receives K slices. Every way gives the same bits.
  :func:`resolve_aggregate` picks one from W, P and the cluster; the schedule
  that runs a step asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

from ..nn.layers import DropoutNoise
from ..nn.network import LossAndGrad, Sequential
from ..session import cluster_shape, ship_weights
from .data import ImageRows, TrainingData, as_pixels, encode_training_data
from .faults import inject_task_fault
from .patches import PatchRows, explode_patches
from .sums import (AGGREGATIONS, COLLECT_LIMIT, PARTIAL_COL, PARTIAL_DTYPES, PARTIAL_SCHEMA,  # noqa: F401
                   PARTITION_COL, ClusterShape, PartialLayout, adaptive_execution_off, make_sum_vectors,
                   ordered_sum, partial_batch, resolve_aggregate, shards_for, sum_on_driver)

#: Images per ``loss_and_grad`` call in a gradient pass: a whole Arrow batch (up to 10,000 rows)
#: at once keeps activations far larger than the CPU caches (docs/design.md, "What was measured").
STEP_ROWS = 256
_SCALARS = 3  # loss_sum, correct, count after the gradient


def unpack(vector: np.ndarray) -> LossAndGrad:
    """A packed partial-sum vector ``[gradient..., loss_sum, correct, count]`` -> :class:`LossAndGrad`."""
    return LossAndGrad(float(vector[-3]), vector[:-_SCALARS], int(round(vector[-2])), int(round(vector[-1])))


Rows = ImageRows | PatchRows  # how a cached row is read back: a whole image, or patch rows of one


def decode_partition(rows: Rows, batches: Iterator[pa.RecordBatch]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A whole partition as ONE ``(inputs, labels, row keys)`` triple (images or patches, as
    stored), None when it is empty."""
    parts = list(rows.decode(batches))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    inputs = [p[0] for p in parts]
    if len({x.dtype for x in inputs}) > 1:  # uint8 levels beside float values: all as pixels
        inputs = [as_pixels(x, rows.dtype) for x in inputs]
    return np.concatenate(inputs), np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def step_noise(noise_key: tuple[int, int, int] | None, keys: np.ndarray) -> DropoutNoise | None:
    """The dropout key of a step ``(seed, epoch, step)`` for rows ``keys``; None: no dropout."""
    return None if noise_key is None else DropoutNoise(*noise_key, keys)


def _image_rows(network: Sequential) -> ImageRows:
    return ImageRows(network.num_features, network.dtype.name)


def partial_gradient_sums(network: Sequential, broadcast, rows: Rows | None = None,
                          noise_key: tuple[int, int, int] | None = None):
    """The ``mapInArrow`` function: one packed partial-sum row per non-empty partition
    (``rows``: how to read the cached rows; default: the image encoding; ``noise_key``: the
    step's ``(seed, epoch, step)`` dropout key, None for no dropout)."""
    rows = rows or _image_rows(network)

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        inject_task_fault()
        params = broadcast.value
        total = None
        for inputs, labels, keys in rows.decode(batches):
            total = summed_in_chunks(
                lambda X, y, k: rows.loss_and_grad(network, params, X, y, step_noise(noise_key, k)),
                inputs, labels, total=total, keys=keys)
        if total is not None:
            yield partial_batch(total)

    return per_partition


def summed_in_chunks(loss_and_grad, inputs: np.ndarray, labels: np.ndarray, chunk_rows: int = STEP_ROWS,
                     total: np.ndarray | None = None, keys: np.ndarray | None = None) -> np.ndarray | None:
    """``loss_and_grad(X, labels)`` (``loss_and_grad(X, labels, keys)`` when the rows' ``keys``
    are given) over ``chunk_rows`` rows at a time, added in place to the float64
    running ``total`` packed as ``[gradient..., loss_sum, correct, count]`` (None: start from
    nothing, and None back for no rows): what a partition emits, one running sum over all its
    batches, and the numpy floor of ``benchmarks/engines.py``. Adds in place rather than packing
    every chunk into a new vector."""
    for start in range(0, len(labels), chunk_rows):
        end = start + chunk_rows
        part = (loss_and_grad(inputs[start:end], labels[start:end]) if keys is None else
                loss_and_grad(inputs[start:end], labels[start:end], keys[start:end]))
        if total is None:
            total = np.zeros(part.grad_sum.size + _SCALARS)
        total[:-_SCALARS] += part.grad_sum
        total[-3] += part.loss_sum
        total[-2] += part.correct
        total[-1] += part.count
    return total


def locally_trained_sums(network: Sequential, broadcast, plan: "LocalPlan", rows: Rows | None = None):
    """The ``mapInArrow`` function of the model-averaging schedule.

    Each partition starts from the broadcast weights, runs ``plan.steps``
    mini-batch steps of its own images (its round's slice of a per-epoch,
    per-partition permutation; an image's patch rows count as one) with a
    fresh local optimizer, and yields ONE packed row
    ``[weights * images_used..., loss_sum, correct, images_used]``.
    Local step ``s`` of round ``r`` is step ``r * plan.steps + s`` of the
    epoch in the dropout key, and ``plan.weight_decay`` decays the local
    optimizer's weights as the driver's would.
    """
    from pyspark import TaskContext

    from ..optim import make_optimizer

    rows = rows or _image_rows(network)

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        inject_task_fault()
        partition_data = decode_partition(rows, batches)
        if partition_data is None:
            return
        X, labels, keys = partition_data
        partition = TaskContext.get().partitionId()
        params = np.array(broadcast.value, copy=True)
        decay = dict(weight_decay=plan.weight_decay, decay_mask=network.decay_mask()) if plan.weight_decay else {}
        stats, used = [], 0
        # The round's epoch, then (plan.more_lrs) whole further epochs in the same task: each with
        # its own permutation and a fresh local optimizer, as separate jobs would run them.
        for i, lr in enumerate((plan.lr, *plan.more_lrs)):
            epoch = plan.epoch + i
            order = np.random.default_rng([plan.seed, epoch, partition]).permutation(len(labels))
            first = plan.round * plan.steps * plan.batch_size
            order = order[first:first + plan.steps * plan.batch_size]
            if len(order) == 0:
                return
            optimizer = make_optimizer(plan.optimizer, lr, **plan.optimizer_args, **decay)
            loss_sum, correct = 0.0, 0
            for s, start in enumerate(range(0, len(order), plan.batch_size)):
                batch = order[start:start + plan.batch_size]
                noise_key = None if not plan.dropout else (plan.seed, epoch, plan.round * plan.steps + s)
                step = rows.loss_and_grad(network, params, X[batch], labels[batch],
                                          step_noise(noise_key, keys[batch]))
                optimizer.step(params, step.grad_sum / step.count)
                loss_sum += step.loss_sum
                correct += step.correct
            used = len(order)
            stats += [loss_sum, correct, used]
        packed = np.concatenate([params.astype(np.float64) * used, stats])
        yield partial_batch(packed, partition)

    return per_partition


@dataclass(frozen=True)
class EpochTotals:
    """One epoch of local training, added over the tasks: loss and correct predictions (each
    measured before its local step's update) over ``count`` rows."""

    loss_sum: float
    correct: int
    count: int


@dataclass(frozen=True)
class LocallyTrained:
    """What one job of the averaging schedule hands back."""

    weights: np.ndarray | None  # float64 row-weighted mean of the tasks' final weights; None: no rows
    epochs: list[EpochTotals]  # one per epoch the job trained


@dataclass(frozen=True)
class LocalPlan:
    """What every partition does in one round of the averaging schedule."""

    epoch: int
    round: int
    steps: int  # local mini-batch steps per partition in this round
    batch_size: int
    seed: int
    optimizer: str
    lr: float
    optimizer_args: dict
    weight_decay: float = 0.0
    dropout: bool = False  # the network has dropout layers: key their masks
    #: learning rates of further whole epochs (epoch + 1, ...) the same job trains (round 0 of
    #: one-round epochs only): a job's fixed cost shared by several epochs of small data
    more_lrs: tuple[float, ...] = ()


class DataFrameEngine:
    """Computes summed gradients over encoded rows with one Spark job per call."""

    name = "dataframe"

    def __init__(self, network: Sequential, aggregate: str = "auto", *, patches: str = "inline",
                 patch_rows: str = "image-row", partial_dtype: str = "float64"):
        if aggregate not in ("auto", *AGGREGATIONS):
            raise ValueError(f"aggregate must be one of {('auto', *AGGREGATIONS)}, got {aggregate!r}")
        if partial_dtype not in PARTIAL_DTYPES:
            raise ValueError(f"partial_dtype must be one of {PARTIAL_DTYPES}, got {partial_dtype!r}")
        if patches not in ("inline", "explode"):
            raise ValueError(f"patches must be 'inline' or 'explode', got {patches!r}")
        self.network = network
        self.aggregate = aggregate
        self.partial_dtype = partial_dtype
        self.sum_vectors = make_sum_vectors()
        #: ``inline``: cached images, the first convolution cuts its patches in the step;
        #: ``explode``: cached patch rows (:mod:`dfnet.engine.patches`).
        self.rows: Rows = _image_rows(network) if patches == "inline" else PatchRows.of(network, patch_rows)
        #: the session's task slots and machines, learnt by :meth:`prepare` (sharded sums, ``auto``)
        self.cluster = ClusterShape()
        #: how :meth:`aggregation_for` resolved (its layout, for the steps), and why (the run's first line)
        self.resolved: PartialLayout | None = None
        self.aggregation_note = ""

    def prepare(self, df: DataFrame, *, features_col: str, label_col: str,
                num_partitions: int | None = None, shuffle_seed: int | None = None,
                input_partitions_hint: int | None = None) -> TrainingData:
        """Cache the packed encoding (images, or patch rows) of a validated ``df``; ``shuffle_seed``
        spreads the rows over the partitions at random (patch rows always are, by image key)."""
        self.cluster = cluster_shape(df.sparkSession, fallback=num_partitions or input_partitions_hint or 1)
        if isinstance(self.rows, PatchRows):
            return explode_patches(df, self.rows, features_col=features_col, label_col=label_col,
                                   num_partitions=num_partitions or input_partitions_hint)
        return encode_training_data(df, features_col=features_col, label_col=label_col,
                                    num_features=self.network.num_features, dtype=self.network.dtype.name,
                                    num_partitions=num_partitions, shuffle_seed=shuffle_seed,
                                    input_partitions_hint=input_partitions_hint)

    def aggregation_for(self, asked: str, tasks: int) -> str:
        """How a step of ``tasks`` tasks adds its partial rows (collect, agg or sharded): ``asked``,
        with ``auto`` resolved by :func:`resolve_aggregate` from the weights, the tasks and the
        cluster (a schedule asks once, when it knows its task count). Records why in
        :attr:`aggregation_note`."""
        layout, why = resolve_aggregate(asked, tasks, self.network.num_params + _SCALARS, self.cluster,
                                        self.partial_dtype)
        self.aggregation_note = f"sums: {describe_layout(layout)} ({why})"
        self.resolved = layout
        return layout.how

    def layout(self, aggregate: str | None = None) -> PartialLayout:
        """The :class:`PartialLayout` of ``aggregate`` (default: the engine's own): the one
        :meth:`aggregation_for` resolved for the schedule's tasks, else planned for as many tasks as
        slots. An unresolved ``auto`` is sharded (``agg`` when one shard holds the vector): that
        bounds the driver's memory and every link's load whatever the task count."""
        how = aggregate or self.aggregate
        if self.resolved is not None and how == self.resolved.how:
            return self.resolved
        shards = shards_for(self.network.num_params + _SCALARS, self.cluster.slots)
        if how == "auto":
            how = "sharded" if shards > 1 else "agg"
        return PartialLayout(how, shards if how == "sharded" else 1, self.partial_dtype)

    def gradient(self, params: np.ndarray, rows: DataFrame, noise_key: tuple[int, int, int] | None = None, *,
                 aggregate: str | None = None) -> LossAndGrad:
        """Sums over ``rows`` (an encoded frame, usually a sample or batch of it) at ``params``;
        ``noise_key`` ``(seed, epoch, step)`` turns the network's dropout on (off: None);
        ``aggregate`` (default: the engine's own) says how the partial rows are added."""
        total = self._summed_vector(params, rows, lambda b: partial_gradient_sums(self.network, b, self.rows,
                                                                                  noise_key), aggregate)
        if total is None:  # no rows in this sample or batch
            return LossAndGrad(0.0, np.zeros(self.network.num_params), 0, 0)
        return unpack(total)

    def train_locally(self, params: np.ndarray, rows: DataFrame, plan: LocalPlan, *,
                      aggregate: str | None = None) -> "LocallyTrained":
        """One job of the averaging schedule: every task trains ``1 + len(plan.more_lrs)`` epochs
        from ``params`` (see :func:`locally_trained_sums`); back come the row-weighted mean of the
        tasks' final weights and each epoch's totals."""
        epochs = 1 + len(plan.more_lrs)
        total = self._summed_vector(params, rows, lambda b: locally_trained_sums(self.network, b, plan, self.rows),
                                    aggregate)
        if total is None:
            return LocallyTrained(None, [EpochTotals(0.0, 0, 0)] * epochs)
        weights_sum, stats = total[:-_SCALARS * epochs], total[-_SCALARS * epochs:].reshape(epochs, _SCALARS)
        totals = [EpochTotals(float(loss), int(round(correct)), int(round(count))) for loss, correct, count in stats]
        # Every epoch of a job uses the same rows per task, so the last epoch's count weighs the weights.
        return LocallyTrained(weights_sum / totals[-1].count if totals[-1].count else None, totals)

    def _summed_vector(self, params: np.ndarray, rows: DataFrame, make_fn, aggregate: str | None
                       ) -> np.ndarray | None:
        """One job: the packed partial rows of ``make_fn(broadcast)`` summed (None: no rows)."""
        layout = self.layout(aggregate)
        with ship_weights(rows.sparkSession, params) as weights:
            partials = rows.mapInArrow(layout.emitting(make_fn(weights)), layout.schema())
            return layout.add(partials, self.sum_vectors)


def describe_layout(layout: PartialLayout) -> str:
    """``sharded over 8 reduce tasks, float32 partials`` and the like."""
    what = {"collect": "collected to the driver", "agg": "added on one reduce task",
            "sharded": f"sharded over {layout.shards} reduce task{'s' if layout.shards != 1 else ''}"}[layout.how]
    return what + (", float32 partials" if layout.dtype == "float32" else "")
