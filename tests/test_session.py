"""dfnet and the user's SparkSession: reuse it untouched, and keep working across a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from dfnet.session import get_or_create_spark


def test_an_active_session_is_returned_untouched(spark):
    shuffle = spark.conf.get("spark.sql.shuffle.partitions")
    assert get_or_create_spark(master="local[1]", conf={"spark.sql.shuffle.partitions": "3"}) is spark
    assert spark.conf.get("spark.sql.shuffle.partitions") == shuffle
    assert spark.sparkContext.master == "local[2]"


def test_a_warehouse_the_running_session_cannot_take_is_reported(spark, tmp_path):
    with pytest.warns(UserWarning, match="is ignored: the running session keeps its tables in"):
        assert get_or_create_spark(warehouse=tmp_path) is spark
    assert not any(tmp_path.iterdir())


def test_training_works_again_after_the_session_is_restarted():
    """A notebook that stops its session and starts a new one: the second fit must run cleanly
    and give the same weights (a UDF bound to the first SparkContext would report to its dead
    accumulator server from every task)."""
    script = textwrap.dedent("""
        import numpy as np
        from dfnet.config import TrainConfig
        from dfnet.session import get_or_create_spark
        from dfnet.train import fit

        rng = np.random.default_rng(0)
        X, y = rng.random((60, 5)).astype(np.float32), rng.integers(0, 2, 60)
        weights = []
        for _ in range(2):
            spark = get_or_create_spark("local[1]")
            df = spark.createDataFrame([(X[i].tolist(), int(y[i])) for i in range(60)], "image array<float>, label int")
            config = TrainConfig(hidden=(4,), epochs=2, schedule="classic", optimizer="sgd")
            weights.append(fit(df, config, verbose=False).params)
            spark.stop()
        assert np.array_equal(weights[0], weights[1])
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert "Failed to update accumulator" not in proc.stderr


def test_local_workers_run_this_interpreter_even_off_path(tmp_path):
    """``.venv/bin/dfnet`` without an activated environment: PATH's ``python3`` has no dfnet, yet the
    Python workers of a local session dfnet starts run the same interpreter as the driver."""
    import subprocess
    import sys

    code = ("import sys; from dfnet.session import get_or_create_spark; s = get_or_create_spark('local[1]'); "
            "print(s.sparkContext.parallelize([1]).map(lambda _: __import__('sys').executable).first())")
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "VIRTUAL_ENV", "SPARK_REMOTE")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == sys.executable
