"""Running the ``dfnet`` command line in-process, as the tests do."""

from __future__ import annotations

import contextlib
import io

from dfnet.cli import main

#: Small enough to be quick, big enough to learn something in two epochs.
FAST = ["--hidden", "32", "--batch-size", "128", "--no-progress"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``dfnet ARGV`` in this process: its exit code, standard output and standard error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
