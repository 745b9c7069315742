"""Many processes, one folder: dfnet takes turns at Spark's embedded Derby metastore.

A process holding Derby's lock (as a booted database does) is made here with fcntl, so the waiting
is checked without a second JVM; the journey then runs three real `dfnet train` processes in one
folder at once and reads their tables from a fourth.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dfnet.errors import CatalogBusyError
from dfnet.metastore import EmbeddedMetastore, catalog_holder, embedded_metastore, wait_for_metastore

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX, 1)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding a POSIX lock on ``path`` (as Derby does on dbex.lck) for ``seconds``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_test_session_opens_the_derby_folder_of_its_warehouse(spark):
    metastore = embedded_metastore(spark)
    warehouse = Path(spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:")).parent
    assert metastore is not None and metastore.folder == warehouse / "metastore_db"
    assert catalog_holder(metastore) is None  # its own JVM's lock is not another process's


def test_a_busy_metastore_is_waited_for_then_refused_naming_the_holder(tmp_path):
    metastore = EmbeddedMetastore(tmp_path / "metastore_db", jvm_pid=None)
    holder = hold_lock(metastore.lock_file, 60)
    try:
        assert catalog_holder(metastore) == holder.pid
        said = []
        start = time.monotonic()
        with pytest.raises(CatalogBusyError) as refused:
            wait_for_metastore(metastore, timeout=1.5, say=said.append)
        assert 1.4 < time.monotonic() - start < 10
        message = str(refused.value)
        assert f"process {holder.pid} (python -c" in message and str(metastore.folder) in message
        assert "--warehouse" in message and "docs/tables.md" in message
        assert len(said) == 1 and f"process {holder.pid}" in said[0]
    finally:
        holder.kill()
        holder.wait()


def test_the_wait_ends_when_the_holder_exits(tmp_path):
    metastore = EmbeddedMetastore(tmp_path / "metastore_db", jvm_pid=None)
    holder = hold_lock(metastore.lock_file, 2)
    try:
        start = time.monotonic()
        wait_for_metastore(metastore, timeout=60, say=lambda line: None)
        assert 1 < time.monotonic() - start < 30
        assert catalog_holder(metastore) is None
    finally:
        holder.kill()
        holder.wait()


def test_a_second_process_waits_for_the_turn_this_one_took(tmp_path):
    """dfnet's own turn (taken before the JVM opens Derby) keeps two dfnet processes from
    creating or opening the database at the same moment."""
    metastore = EmbeddedMetastore(tmp_path / "metastore_db", jvm_pid=None)
    wait_for_metastore(metastore, timeout=5, say=lambda line: None)
    wait_for_metastore(metastore, timeout=5, say=lambda line: None)  # the same process: at once
    other = textwrap.dedent(f"""
        from pathlib import Path
        from dfnet.errors import CatalogBusyError
        from dfnet.metastore import EmbeddedMetastore, wait_for_metastore
        try:
            wait_for_metastore(EmbeddedMetastore(Path({str(metastore.folder)!r}), None), timeout=1, say=print)
        except CatalogBusyError as e:
            print("refused:", e)
        """)
    result = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, timeout=60)
    assert f"refused: the Spark catalog in {metastore.folder} is still open in process {os.getpid()}" in result.stdout


@pytest.mark.journey
@pytest.mark.slow
def test_three_runs_in_one_folder_at_once_all_write_their_tables(tmp_path, classic_spark_here):
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    runs = []
    for i in range(3):
        argv = [sys.executable, "-m", "dfnet.cli", "train", "--epochs", "1", "--hidden", "16", "--no-progress",
                "--no-report", "--output", f"run{i}", "--predictions-table", f"preds{i}"]
        runs.append(subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True))
        time.sleep(1)
    outputs = [proc.communicate(timeout=600) for proc in runs]
    for proc, (out, err) in zip(runs, outputs):
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err and "\tat " not in err and "Exception" not in err, err[-2000:]
        assert len(err.splitlines()) <= 3, err  # at most the lines saying it waited for the catalog
    count = textwrap.dedent("""
        from dfnet.session import get_or_create_spark
        spark = get_or_create_spark("local[1]")
        print([spark.table(f"preds{i}").count() for i in range(3)])
        """)
    result = subprocess.run([sys.executable, "-c", count], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "[360, 360, 360]", result.stderr[-2000:]
