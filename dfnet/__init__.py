"""dfnet: train neural networks on Apache Spark DataFrames.

    from dfnet import TrainConfig, fit, load_dataframe, get_or_create_spark
    from dfnet import DFNetClassifier, DFNetModel    # the Spark ML Estimator and Model
    from dfnet import write_predictions, write_history, write_class_metrics   # tables for Spark SQL
    from dfnet import train_run, RunTables     # what `dfnet train` writes, from Python
"""

from . import compat  # first: without pyspark, its ImportError says what to install
from .config import PRESETS, TrainConfig
from .datasets import load_dataframe, to_dataframe
from .model import TrainedModel
from .run import RunTables, train_run
from .session import get_or_create_spark
from .tables import save_table, write_class_metrics, write_history, write_predictions
from .train import fit

__version__ = "0.1.0"
#: Exported on first use: importing pyspark.ml costs ~0.8 s that the CLI need not pay.
_LAZY = {"DFNetClassifier": "ml", "DFNetModel": "ml"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DFNetClassifier", "DFNetModel", "PRESETS", "RunTables", "TrainConfig", "TrainedModel", "fit",
           "get_or_create_spark", "load_dataframe", "save_table", "to_dataframe", "train_run", "write_class_metrics",
           "write_history", "write_predictions", "__version__"]
