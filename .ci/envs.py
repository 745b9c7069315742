"""The user journeys in environments pinned like the platforms dfnet's users have.

    python .ci/envs.py prepare NAME...   # make each environment (downloads; can run beside the tests)
    python .ci/envs.py check NAME...     # the install check, then `pytest -m journey` in each

NAME is one of ENVIRONMENTS. Each environment is a virtual environment under ``.ci-envs/`` with the
runtime's own packages pinned as the platform ships them (``.ci/envs/NAME.txt``). The install check
is what a user of that platform does: ``pip install .[images]`` into it, with no constraints, must
leave the runtime's pyspark, pandas, pyarrow and numpy as they were (and add no ``pyspark`` beside
``pyspark-client``). Then the test dependencies come in under the same pins and the journeys run.

The thin client has no JVM: its Connect server runs in a second environment of the same Python
and Spark minor version (``DFNET_CONNECT_PYTHON``), as a remote cluster would.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / ".ci-envs"
PINS = ROOT / ".ci" / "envs"
RUNTIME = ("pyspark", "pyspark-client", "pandas", "pyarrow", "numpy")


@dataclass(frozen=True)
class Environment:
    name: str
    python: str  # major.minor
    what: str
    test_extras: str  # the extras installed for the journeys
    server: str | None = None  # the environment whose pyspark serves Connect to this one

    @property
    def pins(self) -> Path:
        return PINS / f"{self.name}.txt"

    @property
    def folder(self) -> Path:
        return ENVS / self.name

    @property
    def bin(self) -> Path:
        return self.folder / "bin"


ENVIRONMENTS = {e.name: e for e in [
    Environment("databricks-15.4", "3.11", "Databricks 15.4 LTS: Spark 3.5.0, classic", "test"),
    Environment("databricks-17.3", "3.12", "Databricks 17.3 LTS: Spark 4.0.0, classic and Connect", "test"),
    Environment("connect-server-4.1", "3.10", "a Spark 4.1 Connect server for the thin client", "spark,images"),
    Environment("thin-client", "3.10", "pyspark-client 4.1 alone (no JVM) against a Spark 4.1 Connect server",
                "images,mlflow,notebook", server="connect-server-4.1"),
]}


def find_python(version: str) -> str:
    """An interpreter of ``version`` (``3.12``): pyenv's, else one on PATH; fails naming what it looked for."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for candidate in sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True):
        return candidate
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
        return found
    sys.exit(f".ci/envs.py: no Python {version} (looked in {root}/versions and on PATH)")


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(str(a) for a in argv), flush=True)
    return subprocess.run([str(a) for a in argv], check=True, **kwargs)


def pip(env: Environment, *args, quiet: bool = True) -> None:
    run(env.bin / "python", "-m", "pip", *(["-q"] if quiet else []), "--disable-pip-version-check", *args)


def freeze(env: Environment) -> dict[str, str]:
    out = subprocess.run([env.bin / "python", "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                         check=True).stdout
    versions = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            versions[name.lower().replace("_", "-")] = version
        elif " @ " in line:
            versions[line.split(" @ ", 1)[0].lower()] = "(local)"
    return versions


def prepare(env: Environment) -> None:
    """A new virtual environment with the runtime's pins installed (nothing of dfnet yet)."""
    shutil.rmtree(env.folder, ignore_errors=True)
    ENVS.mkdir(exist_ok=True)
    run(find_python(env.python), "-m", "venv", env.folder)
    pip(env, "install", "--upgrade", "pip")
    pip(env, "install", "-r", env.pins)


def install_check(env: Environment) -> list[str]:
    """``pip install .[images]`` as a user of the platform runs it; the runtime's packages it changed."""
    before = freeze(env)
    pip(env, "install", f"{ROOT}[images]")
    after = freeze(env)
    changed = [f"{name} {before.get(name, '(absent)')} -> {after.get(name, '(absent)')}"
               for name in RUNTIME if before.get(name) != after.get(name)]
    print(f"install check, {env.name}: " + ("; ".join(changed) if changed else
          ", ".join(f"{n}=={before[n]}" for n in RUNTIME if n in before) + " unchanged"), flush=True)
    return changed


def journeys(env: Environment) -> int:
    pip(env, "install", "-c", env.pins, "-e", f"{ROOT}[{env.test_extras}]", "pytest>=8")
    extra = {}
    if env.server:
        server = ENVIRONMENTS[env.server]
        pip(server, "install", "-c", server.pins, "-e", f"{ROOT}[{server.test_extras}]")
        extra["DFNET_CONNECT_PYTHON"] = str(server.bin / "python")
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "SPARK_REMOTE", "PYSPARK_PYTHON")}
    environ.update(extra, PATH=f"{env.bin}{os.pathsep}{environ.get('PATH', '')}")
    print(f"journeys, {env.name} ({env.what}):", flush=True)
    return subprocess.run([env.bin / "python", "-m", "pytest", "-q", "-m", "journey", "-p", "no:cacheprovider",
                           "--durations=10"],
                          cwd=ROOT, env=environ).returncode


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("prepare", "check") or any(n not in ENVIRONMENTS for n in argv[1:]):
        sys.exit(f"usage: python .ci/envs.py prepare|check NAME...; NAME in {', '.join(ENVIRONMENTS)}")
    names = argv[1:]
    if argv[0] == "prepare":
        for name in names:
            prepare(ENVIRONMENTS[name])
        return 0
    failed = []
    for name in names:
        env = ENVIRONMENTS[name]
        start = time.monotonic()
        if env.name.startswith("connect-server"):
            continue  # prepared for its client; checked through it
        if install_check(env):
            failed.append(f"{name}: installing dfnet changed the runtime's packages")
        if journeys(env) != 0:
            failed.append(f"{name}: journeys failed")
        print(f"{name}: {time.monotonic() - start:.0f} s", flush=True)
    for line in failed:
        print("FAILED", line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
