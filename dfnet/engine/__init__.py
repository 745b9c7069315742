"""How a training step is computed over data.

Every engine offers ``prepare(df, ...) -> TrainingData`` (validated rows,
cached in the engine's own form) and ``gradient(params, rows) -> LossAndGrad``
(summed over the rows, one Spark job), and calls the same :mod:`dfnet.nn` code,
so engines can be tested against each other and differ only in how data moves.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..nn.network import Sequential


def make_engine(name: str, network: Sequential, *, aggregate: str = "auto", patches: str = "inline",
                patch_rows: str = "image-row"):
    """``dataframe`` (broadcast -> mapInArrow -> groupBy().agg, or an Arrow collect with
    ``aggregate="collect"``), ``rdd`` (the classic per-record map/reduce) or ``rdd-batched``
    (mapPartitions on stacked rows).

    ``patches="explode"`` (dataframe only) caches a CNN's first-layer patches as rows
    (:mod:`dfnet.engine.patches`); ``inline`` cuts them inside each step.
    """
    from .dataframe import DataFrameEngine
    from .rdd import RDDBatchedEngine, RDDPerRecordEngine

    engines = {"dataframe": DataFrameEngine, "rdd": RDDPerRecordEngine, "rdd-batched": RDDBatchedEngine}
    if name not in engines:
        raise ValueError(f"unknown engine {name!r}; known: {sorted(engines)}")
    if name == "dataframe":
        return DataFrameEngine(network, aggregate=aggregate, patches=patches, patch_rows=patch_rows)
    if patches != "inline":
        raise ConfigError(f"patches={patches!r} runs on the dataframe engine, not engine={name!r}")
    if aggregate not in ("auto", "agg"):
        raise ConfigError(f"aggregate={aggregate!r} applies to the dataframe engine, not engine={name!r}")
    return engines[name](network)
