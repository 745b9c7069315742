"""dfnet: train neural networks on Apache Spark DataFrames.

    from dfnet import TrainConfig, fit, load_dataframe, get_or_create_spark
    from dfnet import DFNetClassifier, DFNetModel    # the Spark ML Estimator and Model
"""

from .config import PRESETS, TrainConfig
from .datasets import load_dataframe, to_dataframe
from .model import TrainedModel
from .session import get_or_create_spark
from .train import fit

__version__ = "0.1.0"
#: Exported on first use: importing pyspark.ml costs ~0.8 s that the CLI need not pay.
_LAZY = {"DFNetClassifier": "ml", "DFNetModel": "ml"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DFNetClassifier", "DFNetModel", "PRESETS", "TrainConfig", "TrainedModel", "fit", "get_or_create_spark",
           "load_dataframe", "to_dataframe", "__version__"]
