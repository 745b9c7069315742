"""Fingerprints of ``fit``: the SHA-256 of the final weights, the history (timings and the
descriptive fields left out) and the plan of 14 runs on the bundled digits, covering every
schedule, both aggregations, validation and early stopping, dropout, the CNN's two patch forms,
the RDD baselines, 4 partitions and a resumed run.

For a change that must not change the maths (a refactor): fingerprint the base commit, then the
change, on the same machine and environment, and compare::

    git worktree add /tmp/base <base commit>
    PYTHONPATH=/tmp/base python benchmarks/fingerprints.py /tmp/base.json
    python benchmarks/fingerprints.py /tmp/new.json --compare /tmp/base.json

(The weights' bits depend on numpy's BLAS kernels, so compare runs of one environment only.)
The plan is saved for reading; ``--compare`` judges the weights, the history and early stopping.
"""
import argparse
import hashlib
import json
import shutil
import tempfile
import numpy as np

from dfnet.config import TrainConfig
from dfnet.datasets import load_arrays, to_dataframe
from dfnet.session import get_or_create_spark
from dfnet.train import fit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("output", help="where to write the fingerprints (JSON)")
parser.add_argument("--compare", help="fingerprints of the base to compare with")
args = parser.parse_args()
spark = get_or_create_spark("local[2]")
images, labels = load_arrays("digits", "train")
df = to_dataframe(spark, images, labels).cache()
df.count()
df4 = df.repartition(4).cache()
df4.count()


def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


cases = {
 "auto3": dict(cfg=dict(epochs=3)),
 "auto_val_es": dict(cfg=dict(epochs=5, validation_split=0.2, early_stopping=2)),
 "auto_collect": dict(cfg=dict(epochs=2, aggregate="collect")),
 "minibatch": dict(cfg=dict(epochs=2, schedule="minibatch", batch_size=128)),
 "classic": dict(cfg=dict(epochs=3, schedule="classic", sample=0.7, optimizer="sgd", dtype="float64",
                          activation="sigmoid", loss="mse", init="classic", hidden=(16,))),
 "average_ls": dict(cfg=dict(epochs=2, schedule="average", local_steps=5, partitions=4, weight_decay=1e-4)),
 "dropout_mb": dict(cfg=dict(epochs=2, schedule="minibatch", batch_size=256, dropout=0.2)),
 "dropout_auto": dict(cfg=dict(epochs=2, dropout=0.2)),
 "cnn_explode": dict(cfg=dict(epochs=2, model="cnn", patches="explode")),
 "cnn_inline_mb": dict(cfg=dict(epochs=1, model="cnn", schedule="minibatch", batch_size=256)),
 "rdd": dict(cfg=dict(epochs=1, engine="rdd", schedule="minibatch", batch_size=512, hidden=(16,))),
 "rdd_batched": dict(cfg=dict(epochs=2, engine="rdd-batched", hidden=(16,))),
 "parts4_auto": dict(cfg=dict(epochs=2), df=df4),
}
out = {}
for name, case in cases.items():
    cfg = TrainConfig(**case["cfg"])
    m = fit(case.get("df", df), cfg, verbose=False, run_id="golden")
    hist = [{k: v for k, v in r.items() if k != "seconds"} for r in m.history]
    # early_stopping_result was early_stopping before issue 22: read either, to compare across it
    early = getattr(m, "early_stopping_result", None) or getattr(m, "early_stopping", None)
    out[name] = {"params": digest(m.params), "history": hist, "plan": m.schedule_plan, "early": early}
    print(name, out[name]["params"], flush=True)
# checkpoint + resume equals uninterrupted
d = tempfile.mkdtemp(prefix="dfnet-fingerprints-")
cfg = TrainConfig(epochs=3, schedule="minibatch", batch_size=256, lr_schedule="constant")
fit(df, cfg.replace(epochs=2), verbose=False, checkpoint_dir=d, run_id="golden")
m = fit(df, cfg, verbose=False, checkpoint_dir=d, resume=True, run_id="golden")
out["resume"] = {"params": digest(m.params)}
print("resume", out["resume"]["params"])
shutil.rmtree(d, ignore_errors=True)
with open(args.output, "w") as f:
    json.dump(out, f, indent=1, default=str)

DESCRIPTIVE = ("batch_size", "epochs_in_job")  # what a record says about a step, not what it computed


def computed(history):
    return [{k: v for k, v in r.items() if k not in DESCRIPTIVE} for r in history]


if args.compare:
    with open(args.compare) as f:
        base = json.load(f)
    same = True
    for name, fingerprint in base.items():
        mine = out.get(name, {})
        equal = (mine.get("params") == fingerprint["params"] and
                 computed(mine.get("history", [])) == computed(fingerprint.get("history", [])) and
                 mine.get("early") == fingerprint.get("early"))
        same &= equal
        print(f"{name}: {'same' if equal else 'DIFFERENT'}")
    print("all the same" if same else "some differ")
    raise SystemExit(0 if same else 1)
