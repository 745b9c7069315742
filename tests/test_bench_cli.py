"""``dfnet bench partitions|slots|engines|clusters``: the sweeps of :mod:`dfnet.bench` from the command
line. Bad input is refused (exit 2, naming the value and what is allowed) before any Spark session or
job; a sweep prints a line per point and a table, and writes ``--table`` and ``--output``; ``clusters``
runs one application per size on a real standalone cluster; and the wheel, installed in a fresh
virtual environment with no source checkout, runs the issue's command and leaves a table that a later
session reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from cli_helpers import run_cli
from dfnet import cli
from dfnet.cli import application_settings, cluster_capacity, format_rows, main

ROOT = Path(__file__).resolve().parents[1]
DIGITS_TRAIN_ROWS = 1437
POINT = re.compile(r"^point \d+/\d+: ")  # the line of a finished point


@pytest.fixture
def no_session(monkeypatch):
    """Any attempt to start (or fetch) a Spark session fails the test: the input was to be refused first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a Spark session was asked for before the bad input was refused")

    monkeypatch.setattr("dfnet.session.get_or_create_spark", refuse)


def argparse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


# --- bad input, refused before any session -------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["partitions", "--partitions", ""], ["--partitions", "at least one integer"]),
    (["partitions", "--partitions", "1,0"], ["--partitions", "0 is not a positive count", ">= 1"]),
    (["slots", "--slots", "two"], ["--slots", "'two'", "comma-separated integers"]),
    (["engines", "--engines", "dataframe,gpu"], ["--engines", "unknown engine 'gpu'", "dataframe, rdd, rdd-batched"]),
    (["engines", "--engines", ","], ["--engines", "at least one engine"]),
    (["schedules", "--schedules", "auto,sync"], ["--schedules", "unknown schedule 'sync'", "minibatch"]),
    (["aggregations", "--aggregations", "sum"], ["--aggregations", "unknown aggregate 'sum'", "collect"]),
    (["clusters", "--master", "local[2]", "--sizes", ""], ["--sizes", "at least one integer"]),
    (["clusters", "--sizes", "1,2"], ["--master"]),
])
def test_malformed_lists_are_argparse_errors_naming_the_value(capsys, no_session, argv, words):
    err = argparse_error(["bench", *argv], capsys)
    for word in words:
        assert word in err


def test_a_partition_count_above_the_rows_is_refused_before_any_session(capsys, no_session):
    code, out, err = run_cli(["bench", "partitions", "--partitions", f"1,{DIGITS_TRAIN_ROWS + 1}"])
    assert code == 2 and out == ""
    assert f"--partitions {DIGITS_TRAIN_ROWS + 1}: more partitions than the {DIGITS_TRAIN_ROWS} training rows" in err
    assert f"allowed: 1 to {DIGITS_TRAIN_ROWS}" in err


def test_classes_shrink_the_rows_partition_counts_are_checked_against(no_session):
    code, _, err = run_cli(["bench", "partitions", "--classes", "0,1", "--partitions", "400"])
    assert code == 2 and "more partitions than the 288 training rows of digits" in err


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "0"], ["--epochs 0", "at least 1"]),
    (["--warmup", "-1"], ["--warmup -1", "0 or more"]),
    (["--table", "a.b.c.d"], ["a.b.c.d"]),
    (["--hidden", "0"], ["hidden"]),
])
def test_other_bad_sweep_options_exit_2_before_any_session(no_session, argv, words):
    code, _, err = run_cli(["bench", "partitions", "--partitions", "1", *argv])
    assert code == 2
    for word in words:
        assert word in err


def test_a_size_larger_than_the_machine_is_refused_for_a_local_master(no_session):
    cores = os.cpu_count()
    code, out, err = run_cli(["bench", "clusters", "--master", "local[*]", "--sizes", f"1,{cores + 1}"])
    assert code == 2 and "one application" not in out
    assert f"--sizes {cores + 1}: larger than the cluster, which has {cores} threads" in err
    assert f"allowed: 1 to {cores}" in err


class FakeMaster:
    """A standalone master's web UI that answers /json/ with ``state``, on a free loopback port."""

    def __init__(self, state: dict):
        body = json.dumps(state).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/json/" else 404)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


TWO_CORES = {"status": "ALIVE", "cores": 3, "workers": [{"state": "ALIVE", "cores": 1}, {"state": "ALIVE", "cores": 1},
                                                         {"state": "DEAD", "cores": 1}]}


def test_a_size_larger_than_a_standalone_cluster_is_refused_naming_both(no_session):
    with FakeMaster(TWO_CORES) as ui:
        code, out, err = run_cli(["bench", "clusters", "--master", "spark://127.0.0.1:7077", "--master-ui", ui.url,
                                  "--sizes", "1,2,3"])
    assert code == 2 and "one application" not in out
    assert f"--sizes 3: larger than the cluster, which has 2 cores (the alive workers' cores at {ui.url}" in err
    assert "allowed: 1 to 2" in err


def test_the_cluster_capacity_is_unknown_without_an_answering_master_or_on_yarn():
    capacity, why = cluster_capacity("spark://127.0.0.1:9", "http://127.0.0.1:9")
    assert capacity is None and "http://127.0.0.1:9/json/" in why and "--master-ui" in why
    capacity, why = cluster_capacity("yarn")
    assert capacity is None and "cannot ask yarn" in why
    assert cluster_capacity("local[3]") == (os.cpu_count(), "the cores of this machine")


@pytest.mark.parametrize("argv, words", [
    (["--master", "mesos://host:5050"], ["--master mesos://host:5050", "spark://host:port", "yarn", "k8s://"]),
    (["--master", "spark://127.0.0.1:7077", "--conf", "spark.cores.max=4"], ["--conf spark.cores.max",
                                                                             "for each --sizes value"]),
    (["--master", "yarn", "--conf", "spark.executor.instances=4"], ["--conf spark.executor.instances"]),
])
def test_clusters_refuses_masters_and_settings_it_cannot_size(no_session, argv, words):
    code, _, err = run_cli(["bench", "clusters", "--sizes", "1", *argv])
    assert code == 2
    for word in words:
        assert word in err


def test_clusters_refuses_a_spark_connect_server(no_session, monkeypatch):
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:15002")
    code, _, err = run_cli(["bench", "clusters", "--master", "local[1]", "--sizes", "1"])
    assert code == 2 and "SPARK_REMOTE=sc://127.0.0.1:15002" in err and "dfnet bench slots" in err


def test_each_size_is_one_application_sized_for_its_cluster_manager():
    assert application_settings("local[*]", 3, 60) == ("local[3]", {})
    master, conf = application_settings("spark://h:7077", 2, 60)
    assert master == "spark://h:7077"
    assert (conf["spark.cores.max"], conf["spark.executor.cores"], conf["spark.default.parallelism"]) == ("2", "1", "2")
    assert conf["spark.scheduler.minRegisteredResourcesRatio"] == "1.0"
    assert conf["spark.scheduler.maxRegisteredResourcesWaitingTime"] == "60s"
    for master in ("yarn", "k8s://https://k8s:6443"):
        _, conf = application_settings(master, 4, 90)
        assert (conf["spark.executor.instances"], conf["spark.dynamicAllocation.enabled"]) == ("4", "false")
        assert "spark.cores.max" not in conf


def test_slots_beyond_the_session_are_refused_before_any_job(spark, capsys):
    code, out, err = run_cli(["bench", "slots", "--slots", "1,3", "--no-progress"])
    assert code == 2 and "point 1/" not in out
    assert "slots=[3]" in err and "at most 2 tasks at once" in err


# --- the console table, the scripts ----------------------------------------------------------------

def test_the_console_table_shows_the_columns_some_row_fills():
    rows = [{"point": "partitions=1", "partitions": 1, "seconds_per_epoch": 0.51234, "error": None, "engine": None},
            {"point": "partitions=2", "partitions": 2, "seconds_per_epoch": None, "error": "ValueError: boom"}]
    lines = format_rows(rows).splitlines()
    assert lines[0].split() == ["point", "partitions", "seconds_per_epoch", "error"]
    assert lines[1].split() == ["partitions=1", "1", "0.5123"]
    assert lines[2].split() == ["partitions=2", "2", "ValueError:", "boom"]


def test_a_failed_point_is_in_the_table_and_the_exit_code_is_1(tmp_path, capsys):
    """The sweep went on past the failure (the library keeps it in the row); the command says so."""
    from argparse import Namespace

    class FakeSweep:
        rows = [{"run_id": "r1", "point": "partitions=1", "partitions": 1, "seconds_per_epoch": 0.25, "error": None},
                {"run_id": "r1", "point": "partitions=2", "partitions": 2, "seconds_per_epoch": None,
                 "error": "Py4JJavaError: executor lost"}]

    assert cli._finish_sweep(FakeSweep(), Namespace(output=None, table=None)) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[2].split() == ["partitions=2", "2", "Py4JJavaError:", "executor", "lost"]
    assert "1 of 2 points failed (see the error column)" in captured.err


def test_bench_lists_the_sweeps_and_the_scripts(capsys):
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    for sweep in cli.BENCH_SWEEPS:
        assert f"  {sweep} " in out
    assert "scripts (dfnet bench script NAME --help" in out and "aggregation" in out


def test_a_script_of_a_sweeps_name_is_reached_through_bench_script(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert main(["bench", "script", "partitions", "--help"]) == 0
    assert main(["bench", "aggregation", "--sizes", "10"]) == 0  # not a sweep: the script of that name
    assert calls == [[sys.executable, str(cli.BENCHMARKS_DIR / "partitions.py"), "--help"],
                     [sys.executable, str(cli.BENCHMARKS_DIR / "aggregation.py"), "--sizes", "10"]]


# --- a real sweep in this process -------------------------------------------------------------------

@pytest.mark.slow
def test_a_partitions_sweep_prints_each_point_and_writes_the_table_json_and_html(spark, tmp_path):
    output = tmp_path / "results" / "parts"
    code, out, err = run_cli(["bench", "partitions", "--partitions", "1,2", "--epochs", "1", "--warmup", "0",
                              "--hidden", "16", "--no-accuracy", "--table", "bench_cli_parts", "--output",
                              str(output), "--no-progress"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("dfnet bench partitions: 1,2 | digits 1437 training rows | mlp hidden [16]")
    assert [line.split(" | ")[0] for line in lines if POINT.match(line)] == ["point 1/2: partitions=1",
                                                                          "point 2/2: partitions=2"]
    header = next(i for i, line in enumerate(lines) if line.startswith("point ") and "seconds_per_epoch" in line)
    assert [line.split()[0] for line in lines[header + 1:header + 3]] == ["partitions=1", "partitions=2"]
    assert f"Wrote {output}.json and {output}.html" in lines
    saved = json.loads(Path(f"{output}.json").read_text())
    assert [row["partitions"] for row in saved["rows"]] == [1, 2]
    assert all(row["seconds_per_epoch"] > 0 and row["error"] is None for row in saved["rows"])
    assert 'class="plotly-graph-div"' in Path(f"{output}.html").read_text()
    table = spark.table("bench_cli_parts").orderBy("partitions").collect()
    assert [(r["partitions"], r["sweep"]) for r in table] == [(1, "partitions"), (2, "partitions")]
    # The same table again in mode error: refused before any point runs.
    code, out, err = run_cli(["bench", "partitions", "--partitions", "1", "--table", "bench_cli_parts",
                              "--mode", "error", "--no-progress"])
    assert code == 2 and "table bench_cli_parts already exists" in err and "point 1/" not in out


# --- one application per size on a real standalone cluster ------------------------------------------

@pytest.mark.slow
def test_clusters_runs_one_application_per_size_on_a_standalone_cluster(tmp_path, monkeypatch, classic_spark_here):
    """A master and two 1-core workers (dfnet.local_spark, stopped by PID); sizes 1,2 are two
    applications whose tasks ran on 1 and 2 executors (the classic schedule: one task per partition;
    on the digits the auto schedule averages a single model, one task)."""
    from dfnet.local_spark import LOOPBACK, StandaloneCluster

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # the executors' Python workers import this dfnet
    monkeypatch.setenv("SPARK_LOCAL_IP", LOOPBACK)
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    cluster = StandaloneCluster(tmp_path / "cluster", worker_memory="1g")
    try:
        cluster.start_master()
        cluster.set_workers(2)
        output = tmp_path / "clusters"
        code, out, err = run_cli(["bench", "clusters", "--master", cluster.url, "--master-ui",
                                  f"http://{LOOPBACK}:{cluster.master_webui_port}", "--sizes", "1,2",
                                  "--epochs", "1", "--warmup", "0", "--hidden", "16", "--schedule", "classic",
                                  "--no-accuracy",
                                  "--conf", "spark.executor.memory=512m", "--output", str(output), "--no-progress"])
    finally:
        cluster.stop()
    assert code == 0, out + err
    points = [line.split(" | ")[0] for line in out.splitlines() if POINT.match(line)]
    assert points == ["point 1/2: size=1", "point 2/2: size=2"], out
    rows = json.loads(Path(f"{output}.json").read_text())["rows"]
    assert [(r["sweep"], r["point"], r["slots"], r["partitions"], r["tasks"]) for r in rows] == \
        [("clusters", "size=1", 1, 1, 1), ("clusters", "size=2", 2, 2, 2)]
    assert [r["executors"] for r in rows] == [1, 2]
    assert all(r["seconds_per_epoch"] > 0 and r["master"] == cluster.url for r in rows)
    assert len({r["run_id"] for r in rows}) == 1


# --- the wheel in a fresh virtual environment ------------------------------------------------------

def _clean_env(**extra) -> dict:
    """No trace of this checkout or its environment: the installed wheel alone."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_REMOTE",
            "SPARK_CONNECT_MODE_ENABLED", "SPARK_HOME", "DFNET_DATA_DIR")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel built from this source, with the ``spark`` extra
    (pip fetches pyspark and the rest from the package index or its cache); its ``bin`` folder."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(root / "dist")],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = (root / "dist").glob("dfnet-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[spark]"],
                             capture_output=True, text=True, timeout=1200, env=_clean_env())
    assert install.returncode == 0, install.stderr[-3000:]
    return venv / "bin"


@pytest.mark.slow
def test_the_installed_wheel_benches_partitions_into_a_table_a_later_session_reads(wheel_venv, tmp_path):
    work = tmp_path / "work"  # its own spark-warehouse/ and metastore_db/
    work.mkdir()
    env = _clean_env(PATH=f"{wheel_venv}:{os.environ['PATH']}")
    bench = subprocess.run([str(wheel_venv / "dfnet"), "bench", "partitions", "--dataset", "digits", "--partitions",
                            "1,2,4", "--epochs", "2", "--table", "bench_parts"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=900)
    print(bench.stdout)  # the console of the command, shown with pytest -s
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert not (ROOT / "dfnet").resolve().as_posix() in bench.stdout + bench.stderr
    assert [line.split(" | ")[0] for line in bench.stdout.splitlines() if POINT.match(line)] == \
        ["point 1/3: partitions=1", "point 2/3: partitions=2", "point 3/3: partitions=4"]
    assert "WARN NativeCodeLoader" not in bench.stderr and "Setting default log level" not in bench.stderr
    read = textwrap.dedent("""
        import json, dfnet
        from dfnet.session import get_or_create_spark
        spark = get_or_create_spark("local[1]")
        rows = spark.table("bench_parts").select("partitions", "seconds_per_epoch", "sweep", "error").collect()
        print(json.dumps({"dfnet": dfnet.__file__, "rows": [r.asDict() for r in rows]}))
        spark.stop()
    """)
    later = subprocess.run([str(wheel_venv / "python"), "-c", read], cwd=work, env=env, capture_output=True,
                           text=True, timeout=600)
    assert later.returncode == 0, later.stderr[-3000:]
    found = json.loads(later.stdout.strip().splitlines()[-1])
    assert "site-packages" in found["dfnet"]  # the wheel's dfnet, not this checkout's
    rows = sorted(found["rows"], key=lambda r: r["partitions"])
    assert [r["partitions"] for r in rows] == [1, 2, 4]
    assert all(r["seconds_per_epoch"] > 0 and r["sweep"] == "partitions" and r["error"] is None for r in rows)
