"""Spark versions benchmark: the engines benchmark's 60,000-row step in several Python environments,
in one run, rounds interleaved (A B A B ...) so that the machine's noise falls on all of them alike.

    python benchmarks/versions.py --env 3.5=.ci-envs/databricks-15.4/bin/python \\
                                  --env 4.3=.venv/bin/python [--rounds 2] [--cases fashion-64]

Each ``--env LABEL=PYTHON[:PYTHONPATH]`` names an interpreter whose environment has pyspark and
dfnet's dependencies; the optional PYTHONPATH puts another dfnet first (a checkout of an older
commit, to compare before and after a change on the same Spark). Every round runs
``benchmarks/engines.py --engines numpy,dataframe`` in each environment (a fresh session, warmed
up, then the median of the epochs after the first) and keeps the median over rounds. Printed: the
DataFrame engine's seconds per epoch, its ratio to the numpy floor of the same process, and its
ratio to the first environment's. Saves benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import RESULTS, ROOT, save_results


def parse_env(text: str) -> tuple[str, str, str | None]:
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"expected LABEL=PYTHON[:PYTHONPATH], got {text!r}")
    python, _, path = rest.partition(":")
    if not Path(python).exists():
        raise argparse.ArgumentTypeError(f"{python}: no such interpreter")
    return label, python, path or None


def engines_run(python: str, path: str | None, args, name: str) -> dict:
    """One engines.py run in ``python``'s environment; its saved results."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYSPARK_PYTHON", "SPARK_REMOTE")}
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    if path:
        env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    argv = [python, str(ROOT / "benchmarks" / "engines.py"), "--cases", args.cases, "--engines", "numpy,dataframe",
            "--epochs", str(args.epochs), "--name", name]
    subprocess.run(argv, check=True, env=env, cwd=ROOT / "benchmarks")
    return json.loads((RESULTS / f"{name}.json").read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", action="append", type=parse_env, required=True, dest="envs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", default="fashion-64")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--name", default="versions")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in args.envs}
    for r in range(args.rounds):
        for label, python, path in args.envs:
            print(f"\n### round {r + 1}/{args.rounds}: {label} ({python})", flush=True)
            runs[label].append(engines_run(python, path, args, f"{args.name}-{label}-smoke"))
    rows = []
    for label, python, path in args.envs:
        per_case = {}
        for case in args.cases.split(","):
            frames = [next(c for c in run["results"] if c["case"] == case) for run in runs[label]]
            df = statistics.median(f["engines"]["dataframe"]["median_epoch_seconds"] for f in frames)
            floor = statistics.median(f["engines"]["numpy"]["median_epoch_seconds"] for f in frames)
            per_case[case] = {"dataframe_seconds": df, "numpy_seconds": floor, "ratio_to_numpy": df / floor,
                              "rounds": [f["engines"]["dataframe"]["median_epoch_seconds"] for f in frames]}
        rows.append({"label": label, "python": python, "pythonpath": path,
                     "environment": runs[label][0]["environment"], "cases": per_case})
    first = rows[0]
    print("\n| environment | pyspark | numpy | case | dataframe s/epoch | x numpy floor | x " + first["label"] + " |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for case, c in row["cases"].items():
            ratio = c["dataframe_seconds"] / first["cases"][case]["dataframe_seconds"]
            c["ratio_to_first"] = ratio
            print(f"| {row['label']} | {row['environment']['pyspark']} | {row['environment']['numpy']} | {case} | "
                  f"{c['dataframe_seconds']:.3f} | {c['ratio_to_numpy']:.2f}x | {ratio:.2f}x |")
    path = save_results(args.name, {"rounds": args.rounds, "epochs": args.epochs, "environments": rows})
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
