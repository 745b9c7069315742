"""The one row format of every benchmark sweep: :data:`BENCH_SCHEMA`, in :data:`BENCH_COLUMNS` order."""

from __future__ import annotations

from pyspark.sql import types as T

_TYPES = {"string": T.StringType(), "timestamp": T.TimestampType(), "int": T.IntegerType(), "long": T.LongType(),
          "double": T.DoubleType(), "array<double>": T.ArrayType(T.DoubleType()),
          "array<string>": T.ArrayType(T.StringType())}

#: (column, type, what it holds). Seconds are wall-clock seconds of the driver; a failed point has
#: ``error`` set and null timings.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("run_id", "string", "names the sweep: every point of one sweep shares it"),
    ("timestamp", "timestamp", "when the point started (the driver's clock, UTC)"),
    ("sweep", "string", "partitions, slots, engines, schedules or aggregations (clusters: dfnet bench clusters)"),
    ("point", "string", "the swept setting as text, e.g. partitions=4"),
    ("partitions", "int", "partitions of the cached training rows"),
    ("slots", "int", "task slots the run could use: the session's, or the slots sweep's value"),
    ("engine", "string", "TrainConfig.engine"),
    ("schedule", "string", "the schedule that ran (auto resolved: average, minibatch, classic)"),
    ("aggregate", "string", "how a job added its partial rows (collect, agg or sharded; null: the RDD engines)"),
    ("rows", "long", "training rows per epoch"),
    ("epochs", "int", "measured epochs (after the warm-up epochs)"),
    ("warmup", "int", "epochs trained first and not measured"),
    ("seconds_per_epoch", "double", "median over the measured epochs of the history's seconds"),
    ("seconds_min", "double", "fastest measured epoch"),
    ("seconds_max", "double", "slowest measured epoch"),
    ("jobs_per_epoch", "double", "Spark jobs per measured epoch (see jobs_source)"),
    ("executors", "int", "distinct executors the point's tasks ran on"),
    ("hosts", "int", "distinct hosts the point's tasks ran on"),
    ("accuracy", "double", "accuracy on test_df (null without one)"),
    ("spark_version", "string", "the session's Spark version (on Connect: the server's)"),
    ("dfnet_version", "string", "dfnet.__version__"),
    ("master", "string", "the session's master (null where a Connect server does not tell)"),
    ("error", "string", "why the point failed (null when it ran)"),
    # dfnet's own columns, after the fixed ones
    ("model", "string", "the network, e.g. mlp 64-128-10"),
    ("weights", "long", "trainable parameters of the network"),
    ("tasks", "int", "tasks per training job (averaging coalesces partitions to its models)"),
    ("epochs_per_job", "int", "epochs one job trained (auto on small data: more than 1, and the "
                              "seconds of those epochs are equal shares of the job)"),
    ("jobs_source", "string", "status tracker (counted, classic) or plan (the schedule's plan, Connect)"),
    ("epoch_seconds", "array<double>", "seconds of each measured epoch"),
    ("executor_ids", "array<string>", "the executors, as host/executor id"),
    ("host_names", "array<string>", "the hosts"),
)

BENCH_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in COLUMNS)
BENCH_SCHEMA = T.StructType([T.StructField(name, _TYPES[kind]) for name, kind, _ in COLUMNS])


def empty_row() -> dict:
    """A row with every column null, in :data:`BENCH_COLUMNS` order."""
    return dict.fromkeys(BENCH_COLUMNS)


def as_tuple(row: dict) -> tuple:
    """``row``'s values in :data:`BENCH_COLUMNS` order (what ``createDataFrame`` takes with the schema)."""
    return tuple(row.get(name) for name in BENCH_COLUMNS)
