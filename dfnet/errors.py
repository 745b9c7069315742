"""Exception types raised by dfnet.

Every error names what was wrong (column, value, file) and what was expected,
and is raised before any training starts.
"""

from __future__ import annotations


class DFNetError(Exception):
    """Base class of every error dfnet raises on purpose."""


class ConfigError(DFNetError, ValueError):
    """A hyperparameter or option has a value outside its allowed range or set."""


class DatasetError(DFNetError, ValueError):
    """A data set cannot be found, downloaded or verified."""


class IDXFormatError(DatasetError):
    """An IDX file is corrupt: bad magic number, or declared sizes that disagree with its length."""


class DataValidationError(DFNetError, ValueError):
    """A DataFrame handed to dfnet does not hold what training or prediction needs."""


class ModelFormatError(DFNetError, ValueError):
    """A saved model is missing, corrupt, or has a different architecture than expected."""


class TrainingDivergedError(DFNetError, ArithmeticError):
    """The loss or the weights became NaN or infinite during training."""


class CheckpointError(DFNetError, ValueError):
    """A checkpoint is corrupt or unreadable, or belongs to a different run than the one resuming."""


class OutputExistsError(DFNetError, FileExistsError):
    """A save would replace something that already exists, and overwriting was not asked for."""


class ImageFolderError(DFNetError, ValueError):
    """Image files cannot become training rows: a folder without class folders, an empty class
    folder, a file that is not a readable image, or images of different sizes with no size asked for."""


class CatalogBusyError(DFNetError, RuntimeError):
    """The Spark catalog's embedded metastore stayed open in another process for longer than dfnet waits."""
