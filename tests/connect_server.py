"""A real local Spark Connect server for the Connect journeys, started and stopped by its PID.

The server is pip's pyspark's own ``SparkConnectServer`` (what ``sbin/start-connect-server.sh``
runs) on ``local[2]``, in a process of its own. It cannot live in the test process: a Python
process holds one kind of session at a time (``SparkSession.builder.remote("local[2]")`` refuses
to start beside the classic test session, and pyspark switches ``pyspark.sql.functions`` to
Connect for the whole process once a Connect session exists). Its Python workers run this
interpreter, so they import dfnet from this checkout.
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
            "spark.sql.warehouse.dir": str(workdir / "warehouse"), "spark.driver.memory": "2g"}
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
