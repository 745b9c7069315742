"""float32 partial sums against float64: the accuracy they cost on the real data sets, measured in one run.

    python benchmarks/partials.py [--datasets mnist,fashion-mnist] [--master local[2]] [--name partials]

For each data set (60,000 training rows -> the 10,000 test rows) two configurations are trained
twice from the same seed, once with ``partial_dtype="float64"`` (the default) and once with
``"float32"``: the defaults (``auto``: model averaging, where the partial vector is each task's
weights times its rows) and synchronous mini-batches of 1,024 over 5 epochs (where it is the
summed gradient). Reported: test accuracy of each, their difference, and the largest relative
difference of the final weights; for scale, the accuracy difference that the next seed makes
in float64. float32 partials are also run twice to show they are deterministic (the same
bits). Saves benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import default_data_dir, environment, save_results

from dfnet.config import TrainConfig
from dfnet.datasets import load_dataframe
from dfnet.session import get_or_create_spark
from dfnet.train import fit

CASES = {
    "defaults": dict(),
    "minibatch-1024": dict(schedule="minibatch", batch_size=1024, epochs=5),
}


def run_case(train, test, case: str, dtype: str, seed: int) -> dict:
    config = TrainConfig(partial_dtype=dtype, seed=seed, **CASES[case])
    start = time.perf_counter()
    model = fit(train, config, verbose=False)
    seconds = time.perf_counter() - start
    return {"case": case, "partial_dtype": dtype, "accuracy": model.evaluate(test).accuracy,
            "seconds": seconds, "params": model.params, "plan": model.schedule_plan}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mnist,fashion-mnist")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="partials")
    args = parser.parse_args(argv)
    spark = get_or_create_spark(args.master, app_name="dfnet-bench-partials")
    rows, table = [], ["| data set | case | accuracy float64 | accuracy float32 | difference | next seed, float64 "
                       "| max relative weight difference | float32 twice: same bits |",
                       "|---|---|---|---|---|---|---|---|"]
    try:
        env = environment(spark)
        for dataset in args.datasets.split(","):
            train = load_dataframe(spark, dataset, "train", data_dir=args.data_dir).cache()
            test = load_dataframe(spark, dataset, "test", data_dir=args.data_dir).cache()
            train.count(), test.count()
            for case in args.cases.split(","):
                wide = run_case(train, test, case, "float64", args.seed)
                narrow = run_case(train, test, case, "float32", args.seed)
                again = run_case(train, test, case, "float32", args.seed)
                other_seed = run_case(train, test, case, "float64", args.seed + 1)
                scale = np.abs(wide["params"]).max()
                relative = float(np.abs(narrow["params"] - wide["params"]).max() / scale)
                same = bool(np.array_equal(narrow["params"], again["params"]))
                row = {"dataset": dataset, "case": case, "accuracy_float64": wide["accuracy"],
                       "accuracy_float32": narrow["accuracy"],
                       "difference": narrow["accuracy"] - wide["accuracy"], "max_relative_weight_difference": relative,
                       "next_seed_difference": other_seed["accuracy"] - wide["accuracy"],
                       "float32_deterministic": same, "seconds_float64": wide["seconds"],
                       "seconds_float32": narrow["seconds"], "plan": wide["plan"]}
                rows.append(row)
                line = (f"| {dataset} | {case} | {wide['accuracy']:.4f} | {narrow['accuracy']:.4f} | "
                        f"{row['difference']:+.4f} | {row['next_seed_difference']:+.4f} | {relative:.2e} | "
                        f"{'yes' if same else 'NO'} |")
                table.append(line)
                print(line, flush=True)
            train.unpersist(), test.unpersist()
    finally:
        spark.stop()
    print("\n".join(table))
    path = save_results(args.name, {"environment": env, "options": vars(args), "rows": rows, "table": table})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
