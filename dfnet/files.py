"""Writing local files so that a failure never leaves a half-written one under its final name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def stage_file(target: Path, write) -> str:
    """Write ``write(f)`` (a binary file object) to a temporary sibling of ``target``, readable
    like any saved file; return its name for the caller to ``os.replace`` onto ``target``."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp files are private; saved files are meant to be shared
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomically(target: Path, write) -> Path:
    """Stage ``target``'s new content, then rename it into place (the old file stays on failure)."""
    tmp = stage_file(target, write)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target
