"""Spark processes on this machine, each in a process group of its own, started and stopped by
its PID: a local Spark Connect server and a Spark standalone cluster (a master and 1-core
workers on 127.0.0.1). The tests' Connect and cluster journeys and the benchmarks run against
them, and they are a way to try dfnet's Connect path or a cluster on a laptop::

    python -m dfnet.local_spark connect            # prints the sc:// URL; Ctrl-C stops the server
    dfnet train --remote sc://127.0.0.1:PORT
    python -m dfnet.local_spark cluster --workers 2  # prints the spark:// URL
    dfnet train --master spark://127.0.0.1:PORT

The Connect server is pip's pyspark's own ``SparkConnectServer`` (what
``sbin/start-connect-server.sh`` runs). It does not live in the calling process, as
``SparkSession.builder.remote("local[2]")`` would put it: a Python process holds one kind of
session at a time (``remote("local[2]")`` refuses to start beside a classic session, and pyspark
switches ``pyspark.sql.functions`` to Connect for the whole process once a Connect session
exists; :func:`connect_mode` switches a process that holds both). Every daemon's Python workers
run this interpreter, so they import this dfnet.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = "127.0.0.1"
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
START_TIMEOUT_S = 120


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(os.path.dirname(pyspark.__file__))



def stop_process_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL whatever is left after ``grace`` seconds."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id

    def signal_group(sig) -> bool:
        try:
            os.killpg(pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # only zombies left, or the id was reused: nothing of ours to signal
            return False

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(signal.SIGKILL)
        proc.wait(timeout=10)
    # Executors and Python workers of a worker share its group and may outlive the leader briefly.
    deadline = time.monotonic() + grace
    while signal_group(0) and time.monotonic() < deadline:
        time.sleep(0.2)
    if signal_group(0):
        signal_group(signal.SIGKILL)



class StandaloneCluster:
    """A Spark standalone master and 1-core workers on 127.0.0.1, started and stopped by this process.

    Every daemon runs in its own session (process group), so stopping a worker
    by its group also stops the executors and Python workers it launched.
    ``setpriv --pdeathsig`` (where present) makes the kernel send SIGTERM to a
    daemon if this process dies without running its ``finally``.
    """

    def __init__(self, root: Path, worker_memory: str = "4g", worker_timeout_s: int | None = None,
                 host: str = LOOPBACK, worker_hosts: list[tuple[str, str | None]] | None = None):
        """``worker_timeout_s``: how soon the master gives up on a silent worker (Spark's default,
        60 s, when None); a test that kills a worker and starts another sets a few seconds.
        ``host``: the master's address; ``worker_hosts``: each worker's ``(address, network
        namespace or None)``, in the order they start (default: all on ``host``, this namespace),
        so that workers can be hosts of their own behind shaped links (``benchmarks/network.py``)."""
        self.root = root
        self.host = host
        self.worker_hosts = worker_hosts
        self.worker_memory = worker_memory
        self.master_port = free_port()
        self.master_webui_port = free_port()
        self.url = f"spark://{host}:{self.master_port}"
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}
        timeout = f" -Dspark.worker.timeout={worker_timeout_s}" if worker_timeout_s else ""
        conf_dir = root / "conf"  # empty: no stray spark-env.sh / spark-defaults.conf
        conf_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_CONF_DIR": str(conf_dir),
                    "SPARK_LOCAL_IP": host, "SPARK_LOCAL_DIRS": str(root / "local"),
                    "SPARK_WORKER_DIR": str(root / "work"), "PYSPARK_PYTHON": sys.executable,
                    # The REST submission server would take the fixed port 6066; nothing here needs it.
                    "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false" + timeout}
        if worker_timeout_s:  # workers beat every timeout / 4: they must know it too
            self.env["SPARK_WORKER_OPTS"] = timeout
        self._pdeathsig = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []

    def _spawn(self, name: str, main_class: str, *args: str, host: str | None = None,
               netns: str | None = None) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        inside = ["ip", "netns", "exec", netns] if netns else []
        cmd = [*self._pdeathsig, *inside, str(spark_home() / "bin" / "spark-class"), main_class, *args]
        env = {**self.env, "SPARK_LOCAL_IP": host or self.host}
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=self.root, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.logs[proc.pid] = log
        return proc

    def start_master(self, timeout: float = 120.0) -> None:
        self.master = self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", self.host,
                                  "--port", str(self.master_port), "--webui-port", str(self.master_webui_port))
        self._wait(lambda state: state is not None, "the master's web UI to answer", timeout)

    def kill_worker(self, index: int = 0) -> subprocess.Popen:
        """SIGKILL worker ``index``'s process group (the worker, its executor and Python workers), as
        a machine failure would; it is no longer one of :attr:`workers`."""
        proc = self.workers.pop(index)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return proc

    def executor_pids(self) -> list[int]:
        """PIDs of the executor JVMs that this cluster's workers launched (in their process groups)."""
        groups = {proc.pid for proc in self.workers}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                pgid = os.getpgid(int(entry))
            except OSError:
                continue
            if pgid in groups and b"CoarseGrainedExecutorBackend" in cmdline:
                found.append(int(entry))
        return sorted(found)

    def set_workers(self, count: int, timeout: float = 120.0) -> None:
        """Start or stop workers until exactly ``count`` are alive, and wait for the master to see them."""
        while len(self.workers) > count:
            stop_process_group(self.workers.pop())
        while len(self.workers) < count:
            index = len(self.workers)
            host, netns = self.worker_hosts[index] if self.worker_hosts else (self.host, None)
            work_dir = self.root / "work" / f"worker-{index + 1}"
            work_dir.mkdir(parents=True, exist_ok=True)
            self.workers.append(self._spawn(
                f"worker-{index + 1}", "org.apache.spark.deploy.worker.Worker",
                "--host", host, "--cores", "1", "--memory", self.worker_memory,
                "--webui-port", str(free_port()), "--work-dir", str(work_dir), self.url, host=host, netns=netns))
        self._wait(lambda state: state is not None and alive_workers(state) == count,
                   f"{count} alive worker(s) at the master", timeout)

    def state(self) -> dict | None:
        """The master's JSON status (loopback, no proxy), or None while it does not answer."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.host}:{self.master_webui_port}/json/", timeout=2) as response:
                return json.load(response)
        except (OSError, ValueError):
            return None

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in [self.master, *self.workers]:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited with code {proc.returncode} while waiting for "
                                       f"{what}; its log ({self.logs[proc.pid]}) ends:\n{self.log_tail(proc)}")
            if ready(self.state()):
                return
            time.sleep(0.5)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}; the master's log ends:\n{self.log_tail(self.master)}")

    def log_tail(self, proc: subprocess.Popen | None, lines: int = 15) -> str:
        if proc is None or proc.pid not in self.logs:
            return ""
        return "\n".join(self.logs[proc.pid].read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Workers first (and the executors in their groups), then the master."""
        while self.workers:
            stop_process_group(self.workers.pop())
        if self.master is not None:
            stop_process_group(self.master)
            self.master = None


def alive_workers(state: dict) -> int:
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def start_server(workdir: Path, master: str = "local[2]") -> tuple[subprocess.Popen, str, Path]:
    """Start a Connect server in ``workdir`` (its warehouse and log live there); return the
    process, its ``sc://`` URL and the log file. Raises with the log's tail if it does not come up."""
    import pyspark

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "connect-server.log"
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    conf = {"spark.connect.grpc.binding.port": str(port), "spark.connect.grpc.binding.address": LOOPBACK,
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
    return proc, f"sc://{LOOPBACK}:{port}", log


def start_server_in(python: str, workdir: Path, master: str = "local[2]") -> tuple[subprocess.Popen, str]:
    """Start a Connect server with another Python environment's pyspark and dfnet (``python -m
    dfnet.local_spark connect``): a thin client (``pyspark-client``, no JVM) needs a server from
    elsewhere. Returns the process (stopped like :func:`stop_server`) and its ``sc://`` URL."""
    import re
    import selectors

    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    proc = subprocess.Popen([python, "-m", "dfnet.local_spark", "connect", "--master", master, "--workdir",
                             str(workdir)], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, text=True)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline, seen = time.monotonic() + START_TIMEOUT_S + 30, []
    while time.monotonic() < deadline and proc.poll() is None:
        if not selector.select(timeout=1):
            continue
        line = proc.stdout.readline()
        seen.append(line)
        match = re.search(r"sc://[\w.\-]+:\d+", line)
        if match:
            return proc, match.group(0)
    stop_process_group(proc)
    raise RuntimeError(f"{python} -m dfnet.local_spark connect did not report a server; it printed:\n"
                       + "".join(seen)[-3000:])


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server's process group (the one :func:`start_server` created)."""
    stop_process_group(proc)


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


def main(argv=None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m dfnet.local_spark", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("connect", help="a Spark Connect server")
    c.add_argument("--master", default="local[2]")
    k = sub.add_parser("cluster", help="a standalone master and 1-core workers")
    k.add_argument("--workers", type=int, default=2)
    for p in (c, k):
        p.add_argument("--workdir", default=None, help="work and log folder (default: a temporary one)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"dfnet-{args.what}-"))
    if args.what == "connect":
        proc, url, log = start_server(workdir, args.master)
        what = f"Spark Connect server on {args.master} at {url} (pid {proc.pid}, log {log})"
        stop, wait = (lambda: stop_server(proc)), proc.wait
    else:
        cluster = StandaloneCluster(workdir)
        cluster.start_master()
        cluster.set_workers(args.workers)
        what = f"Spark standalone master at {cluster.url} with {args.workers} 1-core workers (logs in {workdir})"
        stop, wait = cluster.stop, cluster.master.wait
    print(f"{what}; Ctrl-C or SIGTERM stops it", flush=True)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # Also when started in the background, where SIGINT arrives ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    try:
        wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
