"""Shared fixtures: one real local Spark session for the whole run, the real data sets, and one
quick `dfnet train` run on the digits that several test modules read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("DFNET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of reference data sets (`../shared/data` beside the project)."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.fail(f"reference data not found at {SHARED_DATA}; set DFNET_SHARED_DATA to the shared/data folder")
    return SHARED_DATA


@pytest.fixture(scope="session")
def classic_spark_here():
    """Skips a test that starts classic Spark processes of its own where pyspark cannot (a thin client)."""
    from dfnet.compat import has_classic_spark

    if not has_classic_spark():
        pytest.skip("a thin Spark Connect client (pyspark-client): no classic session here")


@pytest.fixture(scope="session")
def spark(tmp_path_factory, classic_spark_here):
    """A real local[2] SparkSession shared by every test in the run; its tables and
    Derby metastore live in a temporary folder, never in the project."""
    from dfnet.session import get_or_create_spark

    session = get_or_create_spark(master="local[2]", app_name="dfnet-tests",
                                  warehouse=tmp_path_factory.mktemp("warehouse"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def digits_run(spark, tmp_path_factory):
    """One `dfnet train --dataset digits --epochs 2` run (quick options): its exit code, output,
    errors and run folder. Tests only read the folder."""
    from cli_helpers import FAST, run_cli

    output = tmp_path_factory.mktemp("cli") / "run"
    code, out, err = run_cli(["train", "--dataset", "digits", "--epochs", "2", "--validation-split", "0.2",
                              "--output", str(output), *FAST])
    return code, out, err, output


@pytest.fixture(scope="session")
def connect_url(tmp_path_factory):
    """The ``sc://`` URL of a real local[2] Spark Connect server, in its own process for the whole
    run (see :mod:`dfnet.local_spark`), stopped by its PID at the end. ``DFNET_CONNECT_PYTHON``
    names a Python whose pyspark and dfnet run the server (a thin client has no server of its own)."""
    from dfnet.compat import client_version
    from dfnet.local_spark import start_server, start_server_in, stop_server

    server_python = os.environ.get("DFNET_CONNECT_PYTHON")
    if server_python:
        proc, url = start_server_in(server_python, tmp_path_factory.mktemp("connect"))
        try:
            yield url
        finally:
            stop_server(proc)
        return
    if client_version() < (4, 0):
        pytest.skip("pip's pyspark 3.5 has no Spark Connect server (4.0 bundles it); set DFNET_CONNECT_PYTHON")
    proc, url, _ = start_server(tmp_path_factory.mktemp("connect"))
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def connect_session(connect_url):
    """The Spark Connect client session of the run (no SparkContext, no RDD, no py4j)."""
    from dfnet.local_spark import connect_mode
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    with connect_mode(connect_url):
        session = RemoteSparkSession.builder.remote(connect_url).getOrCreate()
    yield session
    with connect_mode(connect_url):
        session.stop()


@pytest.fixture
def connect(connect_session, connect_url):
    """A test in Spark Connect mode, as a Databricks serverless notebook is: the Connect session,
    pyspark's functions building Connect columns and ``SPARK_REMOTE`` set, for this test only."""
    from dfnet.local_spark import connect_mode

    with connect_mode(connect_url):
        yield connect_session
