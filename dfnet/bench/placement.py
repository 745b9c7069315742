"""Where a DataFrame's tasks run: the distinct executors and hosts, from inside the tasks.

A Python worker knows its host (``socket.gethostname()``) but no executor id:
``TaskContext`` gives partition, stage and attempt, and the environment Spark
passes a worker has no executor id either. The worker's ancestry does: a Python
worker is forked by ``pyspark.daemon``, whose parent is the executor's JVM, and
that JVM's command line carries ``--executor-id N`` on every cluster manager
that launches executors (standalone, YARN, Kubernetes); a JVM without it runs
the tasks itself (``local[N]``, or a Connect server on a local master): the
``driver``. Where ``/proc`` is missing (macOS), ``SPARK_LOCAL_DIRS`` (the block
manager's folder, one per executor) names the executor instead. The same task
runs on classic and Connect sessions alike: it is a ``mapInArrow`` pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ..session import input_partitions

PLACEMENT_SCHEMA = T.StructType([T.StructField("host", T.StringType()), T.StructField("executor", T.StringType())])
#: Python processes between a worker and its JVM: the worker, the daemon, perhaps a shell.
_MAX_ANCESTORS = 6


@dataclass(frozen=True)
class Placement:
    """The executors (``host/executor id``) and hosts that ran one pass over a frame's partitions."""

    executor_ids: tuple[str, ...]
    host_names: tuple[str, ...]

    @property
    def executors(self) -> int:
        return len(self.executor_ids)

    @property
    def hosts(self) -> int:
        return len(self.host_names)

    def describe(self) -> str:
        """``2 executors on 1 host``."""
        e, h = self.executors, self.hosts
        return f"{e} executor{'s' if e != 1 else ''} on {h} host{'s' if h != 1 else ''}"


def where_tasks_run(df: DataFrame, column: str, partitions: int | None = None, *,
                    df_partitions: int | None = None) -> Placement:
    """Run one small job over ``df`` (in ``partitions`` tasks when given, as fit's jobs run; only
    ``column`` read) whose every task reports its host and executor. ``df_partitions``: ``df``'s
    own partitions when known (on Connect counting them is a job)."""
    frame = df.select(column)
    if partitions is not None:
        own = df_partitions or input_partitions(df)
        # fewer: merged without a shuffle, as averaging coalesces its partitions
        frame = frame.coalesce(partitions) if partitions < own else frame.repartition(partitions)
    found = frame.mapInArrow(_report_placement, PLACEMENT_SCHEMA).distinct().collect()
    return Placement(tuple(sorted(f"{r['host']}/{r['executor']}" for r in found)),
                     tuple(sorted({r["host"] for r in found})))


def _report_placement(batches):
    """The task's (host, executor): one row per task, whatever its rows."""
    import socket

    import pyarrow as pa

    for _ in batches:  # drain the input: the pass must run as the real tasks do
        pass
    yield pa.RecordBatch.from_pylist([{"host": socket.gethostname(), "executor": executor_identity()}],
                                     schema=pa.schema([("host", pa.string()), ("executor", pa.string())]))


def executor_identity() -> str:
    """This Python worker's executor: ``--executor-id`` of the JVM above it, ``driver`` for a JVM
    that runs tasks itself; without ``/proc``, the block manager's folder (``SPARK_LOCAL_DIRS``)."""
    import os

    pid = os.getpid()
    for _ in range(_MAX_ANCESTORS):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode("utf-8", "replace").split("\0")
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if args and os.path.basename(args[0]) == "java":
            if "--executor-id" in args[:-1]:
                return args[args.index("--executor-id") + 1]
            return "driver"
        if parent <= 1:
            break
        pid = parent
    return os.environ.get("SPARK_LOCAL_DIRS", "unknown")
