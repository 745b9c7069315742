"""Writes the legacy model fixtures that tests/test_model_codec.py loads: run at commit 586172c.

They are what dfnet wrote before the one model codec (format version 1 everywhere), kept so
models saved by that dfnet keep loading. Re-running this script with a newer dfnet would
write the new layout and defeat its purpose; it is here to say how the files were made::

    git worktree add /work/baseline 586172c
    PYTHONPATH=/work/baseline .venv/bin/python tests/data/legacy/make_fixtures.py tests/data/legacy

Outputs (under the target folder): ``model/`` (``TrainedModel.save``: model.json + weights.npy),
``spark_ml_model/`` (``DFNetModel.write().save()``), ``spark_ml_estimator/`` (a saved
``DFNetClassifier``, Params only), ``checkpoint_dir/`` (the run's checkpoints) and
``expected.json`` (the values a reader must give back).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

import dfnet
from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.session import get_or_create_spark
from dfnet.train import fit

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def strip_spark_extras(folder: Path) -> None:
    """Spark's .crc and _SUCCESS files: readers do without them, and they only add bytes."""
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".crc") or name == "_SUCCESS":
                os.remove(os.path.join(root, name))


def main(target: Path) -> None:
    print("dfnet from", dfnet.__file__)
    if target.exists():
        shutil.rmtree(target / "model", ignore_errors=True)
        for name in ("spark_ml_model", "spark_ml_estimator", "checkpoint_dir"):
            shutil.rmtree(target / name, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    spark = get_or_create_spark("local[2]")
    from dfnet.ml import DFNetClassifier, DFNetModel

    images, labels = load_arrays("digits", "train")
    df = to_dataframe(spark, images, labels, max_value=16.0, num_partitions=2)
    config = TrainConfig(hidden=(4,), epochs=3, validation_split=0.2, early_stopping=2)
    model = fit(df, config, run_id="legacy", class_names=CLASS_NAMES, verbose=False,
                checkpoint_dir=str(target / "checkpoint_dir"))

    model.save(target / "model")
    DFNetModel.from_trained(model).write().save(str(target / "spark_ml_model"))
    DFNetClassifier(layers=[64, 4, 10], maxIter=2, seed=7, patience=2, validationSplit=0.25) \
        .write().save(str(target / "spark_ml_estimator"))
    for folder in ("spark_ml_model", "spark_ml_estimator", "checkpoint_dir"):
        strip_spark_extras(target / folder)

    from dfnet.checkpoint import CheckpointStore

    store = CheckpointStore(spark, str(target / "checkpoint_dir"), keep=None)
    checkpoints = {}
    for epoch in store.epochs():
        ckpt = store.read(epoch)
        early = dict(ckpt.early_stopping or {})
        best = early.pop("best_params", None)
        checkpoints[str(epoch)] = {
            "params_sha256": sha256(ckpt.params), "params_dtype": str(ckpt.params.dtype),
            "optimizer": ckpt.optimizer, "history": ckpt.history, "network": ckpt.network,
            "config": ckpt.config, "data": ckpt.data, "early_stopping": early,
            "early_best_params_sha256": None if best is None else sha256(best)}
    expected = {
        "dfnet_commit": "586172c",
        "params_sha256": sha256(model.params), "params_dtype": str(model.params.dtype),
        "params_head": [float(v) for v in model.params[:5]], "num_params": int(model.params.size),
        "network": model.network.to_config(), "config": model.config.to_dict(), "history": model.history,
        "class_names": list(model.class_names), "run_id": model.run_id,
        "early_stopping": model.early_stopping, "schedule_plan": model.schedule_plan,
        "checkpoints": checkpoints,
        "estimator": {"uid": DFNetClassifier.load(str(target / "spark_ml_estimator")).uid,
                      "layers": [64, 4, 10], "maxIter": 2, "seed": 7, "patience": 2, "validationSplit": 0.25},
    }
    (target / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    spark.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
