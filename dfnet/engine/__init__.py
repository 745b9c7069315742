"""How a training step is computed over data.

Every engine offers ``prepare(df, ...) -> TrainingData`` (validated rows,
cached in the engine's own form), ``gradient(params, rows, noise_key, *,
aggregate) -> LossAndGrad`` (summed over the rows, one Spark job) and
``aggregation_for(asked, tasks)`` (how a step of that many tasks adds its
rows); the DataFrame engine also ``train_locally`` (model averaging). All call
the same :mod:`dfnet.nn` code, so engines can be tested against each other and
differ only in how data moves. Which steps run, and how they add up, is the
schedule's business (:mod:`dfnet.schedules`).
"""

from __future__ import annotations

from ..config import ENGINES
from ..errors import ConfigError
from ..nn.network import Sequential
from ..session import require_classic


def make_engine(name: str, network: Sequential, *, aggregate: str = "auto", patches: str = "inline",
                patch_rows: str = "image-row", partial_dtype: str = "float64"):
    """``dataframe`` (broadcast -> mapInArrow -> groupBy().agg, or an Arrow collect with
    ``aggregate="collect"``, or sharded over reduce tasks with ``aggregate="sharded"``), ``rdd`` (the classic per-record map/reduce) or ``rdd-batched``
    (mapPartitions on stacked rows).

    ``patches="explode"`` (dataframe only) caches a CNN's first-layer patches as rows
    (:mod:`dfnet.engine.patches`); ``inline`` cuts them inside each step.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {sorted(ENGINES)}")
    if name == "dataframe":
        from .dataframe import DataFrameEngine
        return DataFrameEngine(network, aggregate=aggregate, patches=patches, patch_rows=patch_rows,
                               partial_dtype=partial_dtype)
    if patches != "inline":
        raise ConfigError(f"patches={patches!r} runs on the dataframe engine, not engine={name!r}")
    if aggregate not in ("auto", "agg"):
        raise ConfigError(f"aggregate={aggregate!r} applies to the dataframe engine, not engine={name!r}")
    if partial_dtype != "float64":
        raise ConfigError(f"partial_dtype={partial_dtype!r} applies to the dataframe engine, not engine={name!r}")
    # Imported here: the RDD baselines need a classic pyspark (a thin Connect client has no RDD).
    from .rdd import RDDBatchedEngine, RDDPerRecordEngine
    return {"rdd": RDDPerRecordEngine, "rdd-batched": RDDBatchedEngine}[name](network)


def refuse_connect(spark, engine: str) -> None:
    """The RDD engines' refusal of a Spark Connect session (no RDD there), naming the way that works."""
    require_classic(spark, f"engine={engine!r} (an RDD baseline)",
                    "use engine='dataframe' (--engine dataframe), which runs on both kinds of session")
