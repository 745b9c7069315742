"""A local Spark Connect server in a process of its own, started and stopped by its PID: what
the tests' Connect journeys and ``benchmarks/connect.py`` run against, and a way to try dfnet's
Connect path on a laptop::

    python -m dfnet.local_connect            # prints the sc:// URL; Ctrl-C stops the server
    dfnet train --remote sc://127.0.0.1:PORT

The server is pip's pyspark's own ``SparkConnectServer`` (what ``sbin/start-connect-server.sh``
runs). It does not live in the calling process, as ``SparkSession.builder.remote("local[2]")``
would put it: a Python process holds one kind of session at a time (``remote("local[2]")``
refuses to start beside a classic session, and pyspark switches ``pyspark.sql.functions`` to
Connect for the whole process once a Connect session exists; :func:`connect_mode` switches a
process that holds both). Its Python workers run this interpreter, so they import this dfnet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_server(workdir: Path, master: str = "local[2]") -> tuple[subprocess.Popen, str, Path]:
    """Start a Connect server in ``workdir`` (its warehouse and log live there); return the
    process, its ``sc://`` URL and the log file. Raises with the log's tail if it does not come up."""
    import pyspark

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "connect-server.log"
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    conf = {"spark.connect.grpc.binding.port": str(port), "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.warehouse.dir": str(workdir / "warehouse"), "spark.driver.memory": "4g"}
    argv = [str(submit), "--class", SERVER_CLASS, "--master", master, "--name", "dfnet-tests-connect"]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    argv.append("spark-internal")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    for key in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE"):
        env.pop(key, None)
    with open(log, "wb") as out:
        # Its own process group: stop() signals the server's JVM and nothing else.
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the Spark Connect server did not start on port {port}; its log ends:\n{tail}")
        time.sleep(0.5)
    return proc, f"sc://127.0.0.1:{port}", log


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (the one we created), SIGKILL it after 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


CONNECT_ENV = ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")


@contextmanager
def connect_mode(url: str):
    """This process in Spark Connect mode for the block, as a Connect notebook is (pyspark's
    functions build Connect columns, ``SPARK_REMOTE`` names the server), then classic again."""
    before = {key: os.environ.get(key) for key in CONNECT_ENV}
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    os.environ["SPARK_REMOTE"] = url
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main() -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m dfnet.local_connect", description=__doc__.split("\n")[0])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default=None, help="warehouse and log folder (default: a temporary one)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dfnet-connect-"))
    proc, url, log = start_server(workdir, args.master)
    print(f"Spark Connect server on {args.master} at {url} (pid {proc.pid}, log {log}); Ctrl-C stops it",
          flush=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
