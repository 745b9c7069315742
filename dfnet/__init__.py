"""dfnet: train neural networks on Apache Spark DataFrames.

    from dfnet import TrainConfig, fit, load_dataframe, get_or_create_spark
"""

from .config import PRESETS, TrainConfig
from .datasets import load_dataframe, to_dataframe
from .model import TrainedModel
from .session import get_or_create_spark
from .train import fit

__version__ = "0.1.0"
__all__ = ["PRESETS", "TrainConfig", "TrainedModel", "fit", "get_or_create_spark", "load_dataframe",
           "to_dataframe", "__version__"]
