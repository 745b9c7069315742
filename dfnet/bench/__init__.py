"""Benchmark sweeps on the caller's session, over the caller's DataFrame; results as DataFrames and tables.

    import dfnet.bench as bench
    sweep = bench.partitions(df, [1, 2, 4], epochs=3)     # one fit per point, one row per point
    sweep.df                     # the rows, a DataFrame in df's session (BENCH_SCHEMA)
    sweep.figure()               # seconds per epoch against the swept value
    sweep.cost_model             # fit_cost_model(sweep.rows), or None
    sweep.write_table("bench")   # appended: one table holds many sweeps, for %sql
    sweep.save("out/partitions") # partitions.json and partitions.html

Sweeps: :func:`partitions`, :func:`slots` (cluster sizes: task slots a run
uses), :func:`engines`, :func:`schedules`, :func:`aggregations`. Each point is
one :func:`dfnet.train.fit` of ``warmup + epochs`` epochs; the median of the
measured epochs' seconds, Spark jobs per epoch and the executors and hosts its
tasks ran on make its row. See docs/bench.md.
"""

from .cost import CostModel, fit_cost_model
from .figure import sweep_figure
from .placement import Placement, where_tasks_run
from .result import Sweep
from .schema import BENCH_COLUMNS, BENCH_SCHEMA
from .sweeps import aggregations, engines, partitions, schedules, slots

__all__ = ["BENCH_COLUMNS", "BENCH_SCHEMA", "CostModel", "Placement", "Sweep", "aggregations", "engines",
           "fit_cost_model", "partitions", "schedules", "slots", "sweep_figure", "where_tasks_run"]
