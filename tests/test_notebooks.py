"""The example notebooks in ``examples/`` run cell by cell, in order, against the test session.

A small runner reads each notebook as its host stores it and executes it the
way a user would:

- Databricks source format (``databricks_dfnet.py``): cells between
  ``# COMMAND ----------`` lines, ``# DBTITLE 1,<title>`` titles, magic cells
  written as ``# MAGIC`` lines.
- Zeppelin note (``zeppelin_dfnet.zpln``): JSON; ``paragraphs`` in order, the
  interpreter named by each paragraph's leading ``%name``.

Python cells are ``exec``-ed in ONE namespace holding what the host provides
(Databricks: ``spark``, ``sc``, ``display``, ``displayHTML``; Zeppelin:
``spark``, ``sc``, ``z``); those fakes record what the notebook shows, and a
Zeppelin paragraph's printed ``%html`` output is recorded as HTML. SQL cells
run through ``spark.sql`` and their collected rows are recorded under the
cell's title. Markdown cells have nothing to run. Every other magic fails the
run before any cell runs, unless :data:`SKIPPED_MAGICS` names it with a reason:
``%pip`` is skipped because the test runs the dfnet under test, not the wheel
or git checkout the cell installs (dfnet is not on PyPI; the tests check that
every ``pip install`` in the notebooks names a wheel file or a git URL).

The end-to-end tests then check the SQL results against values the test
computes itself from the tables and the model, and that the notebook left the
session running with the configuration the user gave it.

The Jupyter notebook (``dfnet.ipynb``) is not run by that runner but by Jupyter's own machinery:
``nbclient`` executes it top to bottom on a real ``python3`` ipykernel (this venv's Python), in a
temporary folder, with the settings its first cell reads from the environment pointing it at the
real MNIST files and a temporary warehouse. Its kernel starts its own Spark (a second JVM, or a
Spark Connect client of the test run's server). The test reads the notebook's answers from the
outputs (the per-epoch lines, the Table Schema JSON of each SQL cell's DataFrame, the plotly JSON of
each figure) and checks them against numpy on the IDX files, the saved model and the tables the
notebook wrote. The committed file carries no outputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession

from dfnet.session import is_connect
from session_helpers import all_settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATABRICKS_NOTEBOOK = EXAMPLES / "databricks_dfnet.py"
ZEPPELIN_NOTE = EXAMPLES / "zeppelin_dfnet.zpln"

#: Magics the runner does not execute, each with the reason. Any other magic fails the run.
SKIPPED_MAGICS = {"pip": "installs dfnet from a wheel file or a git URL; the test runs the dfnet under test instead"}
PYTHON_KINDS = {"python", "pyspark"}
SQL_KINDS = {"sql"}
MARKDOWN_KINDS = {"md"}

#: Settings a user might have given their session; the notebooks must leave them as they are.
USER_CONF = {"spark.sql.shuffle.partitions": "7", "spark.dfnet.notebooks.user.setting": "kept as the user set it"}
DATABASE = "dfnet_examples"
#: Rows a display() of a DataFrame keeps, like the notebooks' own tables.
DISPLAY_ROWS = 1000
#: What TrainedModel.report returns for the notebooks' dense network, in order.
FIGURE_HEADINGS = ["Training history", "Confusion matrix", "Per-class metrics", "Test samples"]

#: Every ``pip install X`` in a notebook (a %pip cell, or a command in the text).
_PIP_INSTALL = re.compile(r"pip install\s+(\S+)")
#: dfnet is not on PyPI: X must be a wheel file built from the source, or a git URL.
_DFNET_SOURCE = re.compile(r"/\S*/dfnet-\d[\w.]*-py3-none-any\.whl|git\+https://\S+/dfnet\.git(@\S+)?")


def pip_installs(cells: list["Cell"]) -> list[str]:
    """What each ``pip install`` in the cells installs (quotes and backticks stripped)."""
    found = []
    for cell in cells:
        text = f"pip {cell.source}" if cell.kind == "pip" else cell.source
        found += [m.group(1).strip("\"'`") for m in _PIP_INSTALL.finditer(text)]
    return found


class NotebookFormatError(ValueError):
    """A notebook file that its host would not read as written."""


class UnsupportedCell(RuntimeError):
    """A cell whose magic the runner neither runs nor lists in SKIPPED_MAGICS."""


@dataclass(frozen=True)
class Cell:
    index: int  # 1-based position in the notebook
    kind: str  # "python", "pyspark", "sql", "md", or any other magic's name ("pip", "sh", ...)
    source: str  # the code, without the magic
    title: str | None = None

    @property
    def name(self) -> str:
        return f"cell {self.index}" + (f" ({self.title})" if self.title else "")


# --- reading notebooks ---------------------------------------------------------------

DATABRICKS_HEADER = "# Databricks notebook source"
DATABRICKS_SEPARATOR = "# COMMAND ----------"
_DBTITLE = re.compile(r"# DBTITLE \d+,(.*)")
_MAGIC_LINE = re.compile(r"%(\w+)(.*)")


def databricks_cells(text: str) -> list[Cell]:
    """The cells of a notebook in Databricks' source format, in order."""
    lines = text.splitlines()
    if not lines or lines[0] != DATABRICKS_HEADER:
        raise NotebookFormatError(f"the first line must be {DATABRICKS_HEADER!r}, got {lines[:1]}")
    chunks, current = [], []
    for line in lines[1:]:
        if line == DATABRICKS_SEPARATOR:
            chunks.append(current)
            current = []
        else:
            current.append(line)
    chunks.append(current)

    cells = []
    for chunk in chunks:
        body = "\n".join(chunk).strip("\n").splitlines()
        if not body:
            continue
        index, title = len(cells) + 1, None
        if (match := _DBTITLE.fullmatch(body[0])) is not None:
            title, body = match.group(1).strip(), body[1:]
        magic = [line.startswith("# MAGIC") for line in body]
        if any(magic) and not all(magic):
            raise NotebookFormatError(f"cell {index}: mixes '# MAGIC' lines with Python lines")
        if not any(magic):
            cells.append(Cell(index, "python", "\n".join(body), title))
            continue
        # "# MAGIC <line>", and "# MAGIC" alone for an empty line.
        unmagicked = [line[len("# MAGIC "):] if line.startswith("# MAGIC ") else line[len("# MAGIC"):] for line in body]
        command = _MAGIC_LINE.fullmatch(unmagicked[0])
        if command is None:
            raise NotebookFormatError(f"cell {index}: a '# MAGIC' cell must start with a %magic, got {unmagicked[0]!r}")
        source = "\n".join([command.group(2).strip()] + unmagicked[1:]).strip("\n")
        cells.append(Cell(index, command.group(1), source, title))
    return cells


_ZEPPELIN_MAGIC = re.compile(r"%([\w.]+)(?:\([^)]*\))?")


def zeppelin_cells(text: str) -> list[Cell]:
    """The paragraphs of a Zeppelin note (``.zpln`` JSON), in order; disabled ones are left out."""
    note = json.loads(text)
    for key in ("paragraphs", "name", "id", "config", "info"):
        if key not in note:
            raise NotebookFormatError(f"a Zeppelin note needs the key {key!r}; it has {sorted(note)}")
    group = note.get("defaultInterpreterGroup", "spark")
    cells = []
    for index, paragraph in enumerate(note["paragraphs"], start=1):
        text = paragraph.get("text") or ""
        if not paragraph.get("config", {}).get("enabled", True):
            continue
        match = _ZEPPELIN_MAGIC.match(text)
        if match is None:
            # No magic: the default interpreter of the group (the Spark group's is Scala).
            kind, source = group, text
        else:
            name = match.group(1)
            kind = name[len(group) + 1:] if name.startswith(group + ".") else name
            source = text[match.end():]
        cells.append(Cell(index, kind, source.strip("\n"), paragraph.get("title") or None))
    return cells


# --- running them -----------------------------------------------------------------

@dataclass
class Shown:
    """One thing a notebook showed: ``table`` (a list of Rows), ``html`` or ``text`` (a str)."""

    cell: Cell
    kind: str
    value: Any


@dataclass
class NotebookRun:
    cells: list[Cell]
    namespace: dict
    ran: list[Cell] = field(default_factory=list)
    skipped: list[tuple[Cell, str]] = field(default_factory=list)
    shown: list[Shown] = field(default_factory=list)
    sql: dict[str, list] = field(default_factory=dict)  # cell title -> rows of its query
    seconds: dict[int, float] = field(default_factory=dict)  # cell index -> wall time
    current: Cell | None = None

    def show(self, kind: str, value: Any) -> None:
        self.shown.append(Shown(self.current, kind, value))

    def timings(self) -> str:
        return "\n".join(f"{cell.name}: {self.seconds[cell.index]:.1f} s" for cell in self.ran)

    def shown_as(self, kind: str) -> list[Shown]:
        return [s for s in self.shown if s.kind == kind]


def plan(cells: list[Cell]) -> list[tuple[Cell, str]]:
    """Each cell and what the runner does with it; UnsupportedCell for a magic it cannot run or skip."""
    actions = []
    for cell in cells:
        if cell.kind in PYTHON_KINDS:
            actions.append((cell, "python"))
        elif cell.kind in SQL_KINDS:
            actions.append((cell, "sql"))
        elif cell.kind in MARKDOWN_KINDS:
            actions.append((cell, "markdown"))
        elif cell.kind in SKIPPED_MAGICS:
            actions.append((cell, "skip"))
        else:
            raise UnsupportedCell(f"{cell.name}: %{cell.kind} is neither run by this test nor listed in "
                                  f"SKIPPED_MAGICS {sorted(SKIPPED_MAGICS)}")
    return actions


def run_cells(cells: list[Cell], spark: SparkSession, builtins: Callable[[NotebookRun], dict],
              on_output: Callable[[NotebookRun, str], None], label: str) -> NotebookRun:
    """Run ``cells`` in order in one namespace made by ``builtins``; ``on_output`` gets each python cell's stdout."""
    actions = plan(cells)  # refuse an unknown magic before anything runs
    run = NotebookRun(cells, {})
    run.namespace.update({"__name__": "__main__", **builtins(run)})
    for cell, action in actions:
        run.current = cell
        if action == "markdown":
            run.skipped.append((cell, "markdown: nothing to run"))
            continue
        if action == "skip":
            run.skipped.append((cell, SKIPPED_MAGICS[cell.kind]))
            continue
        start, out = time.perf_counter(), io.StringIO()
        try:
            if action == "python":
                with contextlib.redirect_stdout(out):
                    exec(compile(cell.source, f"<{label} {cell.name}>", "exec"), run.namespace)
                on_output(run, out.getvalue())
            else:
                rows = spark.sql(cell.source.strip().rstrip(";")).collect()
                run.sql[cell.title or cell.name] = rows
                run.show("table", rows)
        except Exception as e:
            printed = out.getvalue()[-2000:]
            raise AssertionError(f"{label} {cell.name} failed: {type(e).__name__}: {e}"
                                 + (f"\n--- it printed (end):\n{printed}" if printed else "")) from e
        run.seconds[cell.index] = time.perf_counter() - start
        run.ran.append(cell)
    return run


def _display_value(value: Any) -> tuple[str, Any]:
    if isinstance(value, DataFrame):
        return "table", value.limit(DISPLAY_ROWS).collect()
    if hasattr(value, "to_html") and hasattr(value, "layout"):  # a plotly figure
        return "html", value.to_html(include_plotlyjs="cdn", full_html=False)
    raise TypeError(f"display() of a {type(value).__name__} is not faked by this test")


def databricks_builtins(spark: SparkSession) -> Callable[[NotebookRun], dict]:
    def make(run: NotebookRun) -> dict:
        def display(value: Any, *args: Any, **kwargs: Any) -> None:
            run.show(*_display_value(value))

        def displayHTML(html: str) -> None:  # noqa: N802 - Databricks' name
            if not isinstance(html, str):
                raise TypeError(f"displayHTML takes a str, got {type(html).__name__}")
            run.show("html", html)

        provided = {"spark": spark, "display": display, "displayHTML": displayHTML}
        if not is_connect(spark):  # serverless and standard access mode notebooks have no `sc`
            provided["sc"] = spark.sparkContext
        return provided
    return make


def databricks_output(run: NotebookRun, text: str) -> None:
    if text:
        run.show("text", text)


class FakeZeppelinContext:
    """The part of Zeppelin's ``z`` the notes use: ``z.show(df)`` shows a DataFrame as a table."""

    def __init__(self, run: NotebookRun):
        self._run = run

    def show(self, df: DataFrame, max_result: int = DISPLAY_ROWS, **kwargs: Any) -> None:
        if not isinstance(df, DataFrame):
            raise TypeError(f"z.show() of a {type(df).__name__} is not faked by this test")
        self._run.show("table", df.limit(max_result).collect())


def zeppelin_builtins(spark: SparkSession) -> Callable[[NotebookRun], dict]:
    def make(run: NotebookRun) -> dict:
        return {"spark": spark, "sc": spark.sparkContext, "z": FakeZeppelinContext(run)}
    return make


_ZEPPELIN_DISPLAY = re.compile(r"^%(html|text|table|angular|md)\s", re.MULTILINE)


def zeppelin_output(run: NotebookRun, text: str) -> None:
    """Zeppelin starts a new result wherever a line starts with ``%html``, ``%text``, ``%table`` ..."""
    starts = [(m.start(), m.end(), m.group(1)) for m in _ZEPPELIN_DISPLAY.finditer(text)]
    if not starts or starts[0][0] > 0:
        head = text[:starts[0][0]] if starts else text
        if head.strip():
            run.show("text", head)
    for i, (_, body_start, kind) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        run.show(kind, text[body_start:end])


def run_databricks(path: Path, spark: SparkSession) -> NotebookRun:
    return run_cells(databricks_cells(path.read_text()), spark, databricks_builtins(spark), databricks_output,
                     path.name)


def run_zeppelin(path: Path, spark: SparkSession) -> NotebookRun:
    return run_cells(zeppelin_cells(path.read_text()), spark, zeppelin_builtins(spark), zeppelin_output, path.name)


# --- the runner on its own --------------------------------------------------------

def test_databricks_notebook_is_in_source_format():
    text = DATABRICKS_NOTEBOOK.read_text()
    assert text.splitlines()[0] == DATABRICKS_HEADER
    cells = databricks_cells(text)
    kinds = {c.kind for c in cells}
    assert kinds == {"md", "pip", "python", "sql"}
    [pip_cell] = [c for c in cells if c.kind == "pip"]
    assert _DFNET_SOURCE.fullmatch(pip_cell.source.removeprefix("install").strip()), pip_cell.source
    installs = pip_installs(cells)
    assert len(installs) == 2 and all(_DFNET_SOURCE.fullmatch(x) for x in installs), installs  # the cell, the git URL
    assert any(x.startswith("git+https://") for x in installs)
    assert not any("# MAGIC" in c.source for c in cells if c.kind != "python")
    for c in cells:
        if c.kind == "python":
            compile(c.source, c.name, "exec")
    assert [(c, a) for c, a in plan(cells) if a == "skip"] == [(pip_cell, "skip")]


def test_zeppelin_note_is_a_valid_note():
    note = json.loads(ZEPPELIN_NOTE.read_text())
    assert isinstance(note["name"], str) and isinstance(note["id"], str) and note["defaultInterpreterGroup"] == "spark"
    assert isinstance(note["config"], dict) and isinstance(note["info"], dict)
    ids = [p["id"] for p in note["paragraphs"]]
    assert len(set(ids)) == len(ids)
    for p in note["paragraphs"]:
        assert {"text", "config", "id", "title", "settings"} <= set(p), p.get("title")
        assert p["config"]["enabled"] is True
    cells = zeppelin_cells(ZEPPELIN_NOTE.read_text())
    assert len(cells) == len(note["paragraphs"])
    assert {c.kind for c in cells} == {"md", "pyspark", "sql"}
    for c in cells:
        if c.kind == "pyspark":
            compile(c.source, c.name, "exec")
    installs = pip_installs(cells)  # Zeppelin has no %pip: the Install paragraph tells the user what to run
    assert len(installs) == 2 and all(_DFNET_SOURCE.fullmatch(x) for x in installs), installs  # a wheel, a git URL
    assert any(x.startswith("git+https://") for x in installs)


def test_pip_install_check_refuses_a_name_from_pypi():
    cell = Cell(1, "pip", "install dfnet")
    assert pip_installs([cell]) == ["dfnet"] and not _DFNET_SOURCE.fullmatch("dfnet")
    assert not _DFNET_SOURCE.fullmatch("dfnet==0.1.0")
    assert _DFNET_SOURCE.fullmatch("/Volumes/<catalog>/<schema>/<volume>/dfnet-0.1.0-py3-none-any.whl")
    assert _DFNET_SOURCE.fullmatch("git+https://<your-git-host>/<you>/dfnet.git@v0.1.0")


def test_the_runner_refuses_a_magic_it_does_not_know_before_running_anything():
    text = "\n".join([DATABRICKS_HEADER, "raise SystemExit('must not run')", "", DATABRICKS_SEPARATOR, "",
                      "# DBTITLE 1,Shell", "# MAGIC %sh", "# MAGIC ls /"])
    with pytest.raises(UnsupportedCell, match=r"cell 2 \(Shell\): %sh"):
        run_cells(databricks_cells(text), None, databricks_builtins(None), databricks_output, "inline")
    note = json.dumps({"paragraphs": [{"text": "println(1)", "config": {}, "id": "a", "title": ""}], "name": "n",
                       "id": "n", "config": {}, "info": {}, "defaultInterpreterGroup": "spark"})
    with pytest.raises(UnsupportedCell, match=r"%spark is neither run"):
        plan(zeppelin_cells(note))


def test_the_runner_runs_cells_in_order_in_one_namespace(spark):
    text = "\n".join([
        DATABRICKS_HEADER, "# MAGIC %md", "# MAGIC # Title", "", DATABRICKS_SEPARATOR, "",
        "# MAGIC %pip install something", "", DATABRICKS_SEPARATOR, "",
        "df = spark.range(3)", "display(df)", "print('hello')", "", DATABRICKS_SEPARATOR, "",
        "# DBTITLE 1,Count", "# MAGIC %sql", "# MAGIC -- a comment", "# MAGIC",
        "# MAGIC SELECT count(*) AS n FROM range(4)", "",
        DATABRICKS_SEPARATOR, "", "displayHTML(f'<b>{df.count()}</b>')"])
    run = run_cells(databricks_cells(text), spark, databricks_builtins(spark), databricks_output, "inline")
    assert [c.index for c in run.ran] == [3, 4, 5]
    assert [(c.index, reason) for c, reason in run.skipped] == [(1, "markdown: nothing to run"),
                                                                (2, SKIPPED_MAGICS["pip"])]
    assert [(s.cell.index, s.kind) for s in run.shown] == [(3, "table"), (3, "text"), (4, "table"), (5, "html")]
    assert [r.id for r in run.shown[0].value] == [0, 1, 2]
    assert run.sql["Count"][0].n == 4
    assert run.shown[-1].value == "<b>3</b>"


def test_zeppelin_output_is_split_into_results():
    run = NotebookRun([], {})
    zeppelin_output(run, "Epoch 1\n%html <div>a</div>\n%html <div>\nb</div>\n")
    assert [(s.kind, s.value) for s in run.shown] == [("text", "Epoch 1\n"), ("html", "<div>a</div>\n"),
                                                      ("html", "<div>\nb</div>\n")]


# --- the notebooks, end to end ----------------------------------------------------

#: A run of the notebook before this one (run ids sort by start time: older than any new run).
EARLIER_RUN = "20000101-000000-earlier"
EARLIER_HISTORY = [{"epoch": e, "loss": 9.0, "accuracy": 0.125 * e, "rows": 100, "seconds": 1.0,
                    "val_loss": 9.5, "val_accuracy": 0.1} for e in (1, 2)]
#: EARLIER_RUN's partitions sweep, (partitions, seconds per epoch): 2 was fastest; 4 failed (no seconds).
EARLIER_SWEEP = [(1, 0.5), (2, 0.25), (4, None)]
#: Where the Databricks notebook and the Zeppelin note write their sweeps.
BENCH_TABLE = f"{DATABASE}.bench"
#: The partition counts the notebooks sweep.
SWEPT_PARTITIONS = [1, 2]


def write_earlier_run(spark: SparkSession) -> None:
    """The tables the notebook appends to, as an earlier run left them: history and per-class
    metrics (every class F1 0) of EARLIER_RUN, so "the newest run" queries have a run to leave out,
    and its partitions sweep (EARLIER_SWEEP, with a failed point), so "per sweep" has two sweeps."""
    import dfnet
    from dfnet.bench import BENCH_COLUMNS, Sweep

    dfnet.write_history(SimpleNamespace(run_id=EARLIER_RUN, history=EARLIER_HISTORY), f"{DATABASE}.history",
                        mode="append", spark=spark)
    per_class = [{"class": c, "tp": 0, "fp": 18, "fn": 18, "tn": 300, "support": 18, "precision": 0.0,
                  "recall": 0.0, "f1": 0.0} for c in range(10)]
    dfnet.write_class_metrics(SimpleNamespace(per_class=per_class, class_names=None), f"{DATABASE}.class_metrics",
                              run_id=EARLIER_RUN, mode="append", spark=spark)
    sweep = [{**dict.fromkeys(BENCH_COLUMNS), "run_id": EARLIER_RUN, "sweep": "partitions",
              "point": f"partitions={p}", "partitions": p, "seconds_per_epoch": s, "seconds_min": s,
              "seconds_max": s, "error": None if s is not None else "a point that failed"} for p, s in EARLIER_SWEEP]
    Sweep("partitions", sweep, spark, {}).write_table(BENCH_TABLE)


@pytest.fixture
def user_session(request, tmp_path):
    """The test session as a user's notebook would have it: USER_CONF set, a fresh ``dfnet_examples``
    database (in ``tmp_path``) holding only an earlier run's history and per-class metrics
    (:func:`write_earlier_run`). All undone afterwards. Each test runs its notebook once in it.
    Parametrized indirectly with "connect", the session is the Spark Connect one (a serverless
    notebook); otherwise the classic one."""
    spark = request.getfixturevalue("connect" if getattr(request, "param", "classic") == "connect" else "spark")
    previous = {key: spark.conf.get(key, None) for key in USER_CONF}
    for key, value in USER_CONF.items():
        spark.conf.set(key, value)
    spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
    spark.sql(f"CREATE DATABASE {DATABASE} LOCATION '{(tmp_path / DATABASE).as_uri()}'")
    try:
        write_earlier_run(spark)
        yield spark
    finally:
        spark.sql(f"DROP DATABASE IF EXISTS {DATABASE} CASCADE")
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _numpy_probabilities(model, images: np.ndarray) -> np.ndarray:
    """The model's class probabilities by the numpy forward pass (the network ends in a softmax)."""
    return np.asarray(model.network.forward(model.params, images.astype(model.network.dtype)), dtype=np.float64)


def check_notebook_run(run: NotebookRun, spark: SparkSession, conf_before: dict[str, str]) -> None:
    from dfnet.datasets import load_arrays

    # Every cell ran, except markdown and the listed magics.
    done = sorted([c.index for c in run.ran] + [c.index for c, _ in run.skipped])
    assert done == [c.index for c in run.cells]
    assert {c.kind for c, _ in run.skipped} <= MARKDOWN_KINDS | set(SKIPPED_MAGICS)

    ns = run.namespace
    model, evaluation = ns["model"], ns["evaluation"]
    pipeline_trained = ns["pipeline_model"].stages[-1].trained_model
    k = model.num_classes

    # The predictions table, against the test split and the model's numpy forward pass.
    rows = spark.table(f"{DATABASE}.predictions").orderBy("id").collect()
    _, test_labels = load_arrays("digits", "test")
    ids = np.array([r.id for r in rows])
    labels = np.array([r.label for r in rows])
    predicted = np.array([r.prediction for r in rows])
    probability = np.array([r.probability for r in rows])
    images = np.array([r.image for r in rows], dtype=np.float32)
    assert {r.run_id for r in rows} == {model.run_id}
    assert np.array_equal(ids, np.arange(len(test_labels))) and np.array_equal(labels, test_labels)
    np.testing.assert_allclose(probability, _numpy_probabilities(model, images), atol=1e-5)
    assert np.array_equal(predicted, probability.argmax(axis=1))

    accuracy = float(np.mean(labels == predicted))
    [acc_row] = run.sql["Test accuracy"]  # predictions are overwritten: this run's only
    assert (acc_row.run_id, acc_row.n) == (model.run_id, len(rows))
    assert acc_row.accuracy == pytest.approx(accuracy, abs=1e-12) and evaluation.accuracy == pytest.approx(accuracy)
    assert accuracy > 0.85  # the notebooks' settings must still train a useful model

    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    assert [(r.label, r.prediction, r.n) for r in run.sql["Confusion matrix"]] == \
        [(int(i), int(j), int(confusion[i, j])) for i, j in zip(*np.nonzero(confusion))]  # row-major: the ORDER BY
    assert np.array_equal(evaluation.confusion, confusion)

    tp = np.diag(confusion).astype(np.float64)
    predicted_as, support = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted_as, out=np.zeros(k), where=predicted_as > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    # The newest run's rows only (not EARLIER_RUN's, whose F1 0 would come first), worst F1 first.
    per_class = {r["class"]: r for r in run.sql["Per-class F1"]}
    assert len(run.sql["Per-class F1"]) == k and sorted(per_class) == list(range(k))
    assert [r["class"] for r in run.sql["Per-class F1"]] == sorted(range(k), key=lambda c: (f1[c], c))
    for c, r in per_class.items():
        assert (r.class_name, r.support) == (str(c), int(support[c]))
        assert (r.precision, r.recall, r.f1) == pytest.approx((precision[c], recall[c], f1[c]), abs=1e-12)

    confidence = probability[np.arange(len(rows)), predicted]  # probability[prediction]
    mistakes = np.flatnonzero(labels != predicted)
    expected = sorted(mistakes, key=lambda i: (-confidence[i], ids[i]))[:10]
    assert [r.id for r in run.sql["Most confident mistakes"]] == [int(ids[i]) for i in expected]
    assert [r.confidence for r in run.sql["Most confident mistakes"]] == \
        pytest.approx([confidence[i] for i in expected], abs=1e-12)

    # One history row per epoch of each run (the earlier one and this notebook's two), equal to what
    # fit recorded, ordered by epoch, then run: no run's rows written twice.
    assert len({EARLIER_RUN, model.run_id, pipeline_trained.run_id}) == 3
    expected_history = sorted((h["epoch"], m.run_id, h["accuracy"], h.get("val_accuracy"))
                              for m in (SimpleNamespace(run_id=EARLIER_RUN, history=EARLIER_HISTORY),
                                        model, pipeline_trained) for h in m.history)
    assert [tuple(r) for r in run.sql["Accuracy per epoch across runs"]] == expected_history
    assert all(h.get("val_accuracy") is not None for h in model.history)

    # The figures: model.report's, every one shown as plotly HTML, in order.
    figures = ns["figures"]
    assert list(figures) == FIGURE_HEADINGS
    html = [s.value for s in run.shown_as("html") if s.cell.title == "Figures"]
    assert len(html) == len(FIGURE_HEADINGS)
    for text, fig in zip(html, figures.values()):
        assert "Plotly.newPlot" in text and "cdn.plot.ly" in text
        assert json.dumps(fig.layout.title.text) in text  # this figure's title, as plotly.js gets it
    assert np.array_equal(np.asarray(figures["Confusion matrix"].data[0].z), confusion)
    np.testing.assert_allclose([bar.y for bar in figures["Per-class metrics"].data], [precision, recall, f1],
                               rtol=0, atol=1e-12)
    assert f"({len(mistakes)} of {len(rows)} test rows)" in figures["Test samples"].layout.title.text
    report_calls = [c for c in run.cells if c.kind in MARKDOWN_KINDS and "model.report(test, \"" in c.source]
    assert report_calls and all("report.html" in c.source for c in report_calls)  # the offline page is documented
    tables = [s.value for s in run.shown_as("table") if s.cell.kind in PYTHON_KINDS]
    assert [len(rows) for rows in tables] == [5, 10]  # the data, the predictions

    check_sweep_section(run, spark)

    # The session is the user's still: running, active, configured as before.
    assert ns["spark"] is spark
    assert is_connect(spark) or not spark.sparkContext._jsc.sc().isStopped()
    assert SparkSession.getActiveSession() is spark
    assert spark.range(3).count() == 3
    assert {key: spark.conf.get(key) for key in USER_CONF} == USER_CONF
    assert all_settings(spark) == conf_before


def check_sweep_section(run: NotebookRun, spark: SparkSession) -> None:
    """The partitions sweep: its rows in the table after the earlier sweep's, a line per point, its
    figure shown, and the SQL answer: one fastest partition count per sweep, failed points left out."""
    sweep, train = run.namespace["sweep"], run.namespace["train"]
    rows = spark.table(BENCH_TABLE).where(f"run_id = '{sweep.run_id}'").orderBy("partitions").collect()
    assert [r.partitions for r in rows] == SWEPT_PARTITIONS and {r.sweep for r in rows} == {"partitions"}
    assert {r.rows for r in rows} == {train.count()} and {r.epochs for r in rows} == {2}
    for r in rows:
        assert r.error is None and 0 < r.seconds_min <= r.seconds_per_epoch <= r.seconds_max, r
    seconds = {r.partitions: r.seconds_per_epoch for r in rows}
    assert seconds == {r["partitions"]: r["seconds_per_epoch"] for r in sweep.rows}
    assert spark.table(BENCH_TABLE).count() == len(EARLIER_SWEEP) + len(SWEPT_PARTITIONS)  # appended, once

    shown = [s for s in run.shown if s.cell.title == "Partitions sweep"]
    printed = "".join(s.value for s in shown if s.kind == "text")
    assert re.findall(r"^point (\d)/2: partitions=(\d) \| (\S+) s/epoch", printed, re.MULTILINE) == [
        (str(i), str(p), f"{seconds[p]:.2f}") for i, p in enumerate(SWEPT_PARTITIONS, start=1)], printed
    [html] = [s.value for s in shown if s.kind == "html"]
    figure = sweep.figure()
    [trace] = figure.data
    assert list(trace.x) == SWEPT_PARTITIONS and list(trace.y) == [seconds[p] for p in SWEPT_PARTITIONS]
    assert "Plotly.newPlot" in html and json.dumps(figure.layout.title.text) in html and sweep.run_id in html

    fastest = min(seconds, key=seconds.get)
    earlier = {p: s for p, s in EARLIER_SWEEP if s is not None}
    earlier_fastest = min(earlier, key=earlier.get)
    assert [tuple(r) for r in run.sql["Fastest partition count per sweep"]] == [
        (EARLIER_RUN, earlier_fastest, earlier[earlier_fastest], len(earlier)),
        (sweep.run_id, fastest, seconds[fastest], len(SWEPT_PARTITIONS))]


@pytest.mark.journey
@pytest.mark.parametrize("user_session", ["classic", "connect"], indirect=True)
def test_databricks_notebook_runs_end_to_end(user_session):
    spark = user_session
    conf_before = all_settings(spark)
    run = run_databricks(DATABRICKS_NOTEBOOK, spark)
    print(run.timings())
    assert [c.kind for c, _ in run.skipped].count("pip") == 1
    check_notebook_run(run, spark, conf_before)


@pytest.mark.journey
def test_zeppelin_note_runs_end_to_end(user_session):
    spark = user_session
    conf_before = all_settings(spark)
    run = run_zeppelin(ZEPPELIN_NOTE, spark)
    print(run.timings())
    check_notebook_run(run, spark, conf_before)


# --- the Jupyter notebook, on a real kernel ----------------------------------------

JUPYTER_NOTEBOOK = EXAMPLES / "dfnet.ipynb"
#: The settings the first code cell reads from the environment, all of them.
JUPYTER_SETTINGS = ("DFNET_DATASET", "DFNET_DATA_DIR", "DFNET_CLASSES", "DFNET_EPOCHS", "DFNET_HIDDEN", "DFNET_MASTER",
                    "DFNET_WAREHOUSE", "DFNET_DATABASE", "DFNET_MODEL_DIR")
#: The end-to-end run: real MNIST digits (three classes, relabelled in this order), small and quick.
JUPYTER_CLASSES = (3, 5, 8)
JUPYTER_EPOCHS = 2
#: The cells whose answers the test checks, by their nbformat cell id.
JUPYTER_SQL_CELLS = ("sql-test-accuracy", "sql-accuracy-per-class", "sql-confusions", "sql-per-class-f1",
                     "sql-confident-mistakes", "sql-history", "sql-bench-fastest")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
TABLE_MIME = "application/vnd.dataresource+json"  # pandas' display.html.table_schema
#: Seconds any one cell may take (the whole run takes about a minute).
JUPYTER_CELL_TIMEOUT = 300


def _descendants(pid: int) -> set[int]:
    import psutil  # ipykernel's own dependency

    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _wait_gone(pids: set[int], seconds: float = 30.0) -> set[int]:
    """The processes of ``pids`` still running after ``seconds`` (zombies count as gone)."""
    import psutil

    deadline = time.monotonic() + seconds
    while True:
        alive = set()
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@dataclass
class KernelRun:
    nb: Any  # the executed nbformat notebook
    kernel_pid: int
    processes: set[int]  # the kernel and every process it started (its Spark JVM)
    seconds: float


def execute_notebook(nb, workdir: Path, env: dict[str, str], *, timeout: int = JUPYTER_CELL_TIMEOUT) -> KernelRun:
    """Run every cell of ``nb`` in order on a new ``python3`` ipykernel started in ``workdir`` with ``env``,
    as Jupyter's *Run All* does; raises ``CellExecutionError`` at the first failing cell.

    ``NotebookClient.execute`` shuts the kernel down whether the cells pass or not; this checks it did,
    and that the kernel's children (the Spark JVM a notebook starts) ended with it, else kills what is
    left and fails."""
    from nbclient import NotebookClient
    from nbclient.util import run_sync

    client = NotebookClient(nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(workdir)}})
    kernel: dict[str, Any] = {"pid": None, "processes": set()}

    def started(**_: Any) -> None:
        kernel["pid"] = client.km.provisioner.pid
        kernel["processes"].add(kernel["pid"])

    def executed(**_: Any) -> None:
        kernel["processes"] |= _descendants(kernel["pid"])

    client.on_notebook_start = started
    client.on_cell_executed = executed
    start = time.perf_counter()
    try:
        client.execute(env=env)
    finally:
        seconds = time.perf_counter() - start
        km = client.km
        if km is not None and run_sync(km.is_alive)():  # not expected: execute() shuts it down
            run_sync(km.shutdown_kernel)(now=True)
            pytest.fail("NotebookClient.execute left the kernel running")
        left = _wait_gone(kernel["processes"])
        if left:
            import psutil

            for pid in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
            pytest.fail(f"processes of the notebook's kernel outlived it: {sorted(left)}")
    return KernelRun(nb, kernel["pid"], kernel["processes"], seconds)


def kernel_env(**settings: str) -> dict[str, str]:
    """This process's environment for a kernel, without a Spark Connect server or notebook settings of its own."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE", *JUPYTER_SETTINGS}}
    return {**env, **settings}


def cell_stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def plotly_array(value) -> np.ndarray:
    """An array of a figure's JSON: a list, or plotly's typed array ``{"dtype", "bdata" (base64), "shape"}``."""
    if isinstance(value, dict):
        import base64

        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]).newbyteorder("<"))
        return flat.reshape([int(d) for d in str(value.get("shape", len(flat))).split(",")])
    return np.asarray(value)


def cell_seconds(cell) -> float:
    """A cell's run time, from the timings nbclient records in its metadata."""
    from datetime import datetime

    timing = cell.metadata["execution"]
    start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def shown_table(cell) -> list[dict]:
    """The rows of the pandas DataFrame a cell ends with, from its Table Schema JSON output."""
    [bundle] = [o.data for o in cell.outputs if o.output_type == "execute_result"]
    resource = bundle[TABLE_MIME]
    fields = [f["name"] for f in resource["schema"]["fields"]]
    assert fields[0] == "index" and resource["schema"]["primaryKey"] == ["index"]
    assert [row["index"] for row in resource["data"]] == list(range(len(resource["data"])))
    return [{name: row[name] for name in fields[1:]} for row in resource["data"]]


def test_jupyter_notebook_is_stored_without_outputs():
    import nbformat

    raw = json.loads(JUPYTER_NOTEBOOK.read_text())
    nb = nbformat.reads(JUPYTER_NOTEBOOK.read_text(), as_version=4)
    nbformat.validate(nb)
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5)  # cells have ids
    assert nb.metadata.kernelspec.name == "python3" and nb.metadata.kernelspec.language == "python"
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]
        assert "execution" not in cell["metadata"], cell["id"]  # no timings of a run either
    ids = [c["id"] for c in raw["cells"]]
    assert len(set(ids)) == len(ids)
    assert {"settings", "session", "data", "train", "evaluate", "tables", "figures", "bench", "stop",
            *JUPYTER_SQL_CELLS} <= set(ids)
    # Plain Python, no magics, so it also runs as a script; the settings come first and read the environment.
    for cell in nb.cells:
        if cell.cell_type == "code":
            compile(cell.source, cell.id, "exec")
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.id == "settings"
    for name in JUPYTER_SETTINGS:
        assert f'os.environ.get("{name}"' in first.source, name
    assert 'pio.renderers.default = "plotly_mimetype"' in next(c for c in nb.cells if c.id == "figures").source


def test_a_failing_cell_fails_the_run_and_the_kernel_and_its_spark_still_shut_down(tmp_path):
    import nbformat
    import psutil
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os\nprint(os.getpid(), os.getcwd())"),
        nbformat.v4.new_code_cell("from dfnet.session import get_or_create_spark\n"
                                  "spark = get_or_create_spark(master='local[1]')\n"
                                  "print(spark.range(3).count(), spark.sparkContext._gateway.proc.pid)"),
        nbformat.v4.new_code_cell("raise ValueError('a cell that fails')"),
        nbformat.v4.new_code_cell("print('never runs')")])
    with pytest.raises(CellExecutionError, match="a cell that fails"):
        execute_notebook(nb, tmp_path, kernel_env(), timeout=120)  # checks that the kernel's processes ended
    pid, cwd = cell_stdout(nb.cells[0]).split()
    assert cwd == str(tmp_path)  # the kernel ran in the folder it was given
    count, jvm = cell_stdout(nb.cells[1]).split()
    assert count == "3"  # the kernel had started its Spark JVM
    assert nb.cells[3].outputs == [] and nb.cells[3].execution_count is None
    for what, process in (("the kernel", pid), ("its Spark JVM", jvm)):
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(int(process)).status() == psutil.STATUS_ZOMBIE, f"{what} still runs"


def _read_tables(database: str, warehouse: Path | None, connect_session) -> dict[str, Any]:
    """The notebook's three tables and its benchmark table: from their Parquet files in the warehouse
    folder (classic), or through the test's own Connect session to the same server."""
    import pandas as pd

    tables = {}
    for name in ("predictions", "history", "class_metrics", "bench"):
        if connect_session is None:
            tables[name] = pd.read_parquet(warehouse / "tables" / f"{database}.db" / name)
        else:
            tables[name] = connect_session.table(f"{database}.{name}").toPandas()
    return tables


@pytest.mark.parametrize("session_kind", ["classic", "connect"])
def test_jupyter_notebook_runs_end_to_end_on_a_real_kernel(session_kind, shared_data, tmp_path, request):
    import nbformat

    import dfnet
    from dfnet.datasets import load_arrays
    from dfnet.model import TrainedModel

    workdir, warehouse, model_dir = tmp_path / "notebook", tmp_path / "warehouse", tmp_path / "model"
    workdir.mkdir()
    database = f"dfnet_jupyter_{session_kind}"
    settings = {"DFNET_DATASET": "mnist", "DFNET_DATA_DIR": str(shared_data),
                "DFNET_CLASSES": ",".join(map(str, JUPYTER_CLASSES)), "DFNET_EPOCHS": str(JUPYTER_EPOCHS),
                "DFNET_HIDDEN": "32", "DFNET_MASTER": "local[2]", "DFNET_WAREHOUSE": str(warehouse),
                "DFNET_DATABASE": database, "DFNET_MODEL_DIR": str(model_dir)}
    connect_session = None
    if session_kind == "connect":
        url = request.getfixturevalue("connect_url")
        connect_session = request.getfixturevalue("connect")
        connect_session.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
        request.addfinalizer(lambda: connect_session.sql(f"DROP DATABASE IF EXISTS {database} CASCADE"))
        settings["SPARK_REMOTE"] = url  # as a user would point the notebook at a Connect server

    nb = nbformat.read(JUPYTER_NOTEBOOK, as_version=4)
    run = execute_notebook(nb, workdir, kernel_env(**settings))
    cells = {c.id: c for c in run.nb.cells}
    print(f"notebook: {run.seconds:.1f} s on kernel pid {run.kernel_pid}; "
          + ", ".join(f"{c.id} {cell_seconds(c):.1f} s" for c in run.nb.cells if c.cell_type == "code"))

    # Every code cell ran, once, in order, with no error.
    code = [c for c in run.nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [c.id for c in code for o in c.outputs if o.output_type == "error"]

    # The kernel: this venv's Python and the dfnet under test; the session the settings asked for.
    assert sys.prefix != sys.base_prefix  # the tests run in a virtual environment ...
    assert Path(sys.executable).parent == Path(sys.prefix) / "bin"  # ... and this is its python
    session_text = cell_stdout(cells["session"])
    assert f"Python {platform.python_version()} at {sys.executable}\n" in session_text, session_text
    assert f"dfnet {dfnet.__version__} from {Path(dfnet.__file__).parent}\n" in session_text, session_text
    if connect_session is None:
        assert f", master local[2], warehouse file:{warehouse / 'tables'}\n" in session_text, session_text
        assert (warehouse / "metastore_db").is_dir()  # the catalog is in the folder given, too
        assert len(run.processes) >= 2  # the kernel and its Spark JVM, both ended with the kernel
    else:
        assert f"over Spark Connect: {settings['SPARK_REMOTE']}\n" in session_text, session_text
        assert not warehouse.exists()  # the server's warehouse, not one of the client's
    assert cell_stdout(cells["stop"]) == "Spark session stopped\n"

    # The truth, from the IDX files: the test split's rows of the three classes, relabelled 0, 1, 2 in order.
    images, raw_labels = load_arrays("mnist", "test", shared_data)
    ids = np.flatnonzero(np.isin(raw_labels, JUPYTER_CLASSES))
    truth = np.array([JUPYTER_CLASSES.index(v) for v in raw_labels[ids]])
    _, raw_train = load_arrays("mnist", "train", shared_data)
    n_train, n, k = int(np.isin(raw_train, JUPYTER_CLASSES).sum()), len(ids), len(JUPYTER_CLASSES)
    names = [str(c) for c in JUPYTER_CLASSES]
    assert cell_stdout(cells["data"]) == f"mnist: {n_train} training rows, {n} test rows, classes {names}\n"

    # The training: one line per epoch, as fit recorded them; the model it saved.
    model = TrainedModel.load(model_dir)
    assert model.num_classes == k and list(model.class_names) == names and len(model.history) == JUPYTER_EPOCHS
    train_text = cell_stdout(cells["train"])
    assert train_text.startswith("Schedule ") and train_text.endswith(f"run {model.run_id}\n")
    epoch_lines = re.findall(r"^Epoch (\d+)/(\d+) \| Loss (\S+) \| Acc (\S+) \| Batchsize \d+ \| \S+ s "
                             r"\| Val loss (\S+) \| Val acc (\S+)$", train_text, re.MULTILINE)
    assert [tuple(line) for line in epoch_lines] == [
        (str(h["epoch"]), str(JUPYTER_EPOCHS), f"{h['loss']:.4f}", f"{h['accuracy']:.4f}", f"{h['val_loss']:.4f}",
         f"{h['val_accuracy']:.4f}") for h in model.history]
    assert [h["epoch"] for h in model.history] == list(range(1, JUPYTER_EPOCHS + 1))

    # The tables the notebook wrote, against the truth and the saved model's numpy forward pass.
    tables = _read_tables(database, warehouse, connect_session)
    predictions = tables["predictions"].sort_values("id").reset_index(drop=True)
    assert set(predictions.run_id) == {model.run_id}
    assert np.array_equal(predictions.id, ids) and np.array_equal(predictions.label, truth)
    pixels = np.stack(predictions.image.to_numpy()).astype(np.float32)
    assert np.array_equal(pixels, np.divide(images[ids].reshape(n, -1), 255.0, dtype=np.float32))
    probability = np.stack(predictions.probability.to_numpy())
    np.testing.assert_allclose(probability, _numpy_probabilities(model, pixels), atol=1e-5)
    predicted = probability.argmax(axis=1)
    assert np.array_equal(predictions.prediction, predicted)

    correct = predicted == truth
    accuracy = float(correct.mean())
    assert accuracy > 0.85  # the notebook's settings still train a useful model
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted_as = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(tp, predicted_as, out=np.zeros(k), where=predicted_as > 0)
    recall = tp / support
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)

    metrics = tables["class_metrics"].sort_values("class").reset_index(drop=True)
    assert set(metrics.run_id) == {model.run_id} and list(metrics["class"]) == list(range(k))
    assert list(metrics.class_name) == names
    assert np.array_equal(metrics[["tp", "fp", "fn", "tn", "support"]].to_numpy(),
                          np.stack([tp, predicted_as - tp, support - tp, n - support - predicted_as + tp, support],
                                   axis=1))
    np.testing.assert_allclose(metrics[["precision", "recall", "f1"]].to_numpy(), np.stack([precision, recall, f1], 1),
                               rtol=0, atol=1e-12)
    history = tables["history"].sort_values("epoch").reset_index(drop=True)
    assert set(history.run_id) == {model.run_id}
    for column in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history[column], [h[column] for h in model.history], rtol=1e-12, err_msg=column)

    # The notebook's SQL answers (the JSON of the DataFrames it shows: 10 decimals), against numpy.
    approx = lambda x: pytest.approx(x, abs=1e-9)  # noqa: E731
    assert shown_table(cells["sql-test-accuracy"]) == [{"run_id": model.run_id, "accuracy": approx(accuracy), "n": n}]
    per_class_acc = [tp[c] / support[c] for c in range(k)]
    assert shown_table(cells["sql-accuracy-per-class"]) == [
        {"label": c, "n": int(support[c]), "correct": int(tp[c]), "accuracy": approx(per_class_acc[c])}
        for c in sorted(range(k), key=lambda c: (per_class_acc[c], c))]
    confusions = [(int(i), int(j), int(confusion[i, j])) for i, j in zip(*np.nonzero(confusion)) if i != j]
    assert confusions  # there are mistakes to list
    assert shown_table(cells["sql-confusions"]) == [
        {"label": i, "prediction": j, "n": m} for i, j, m in sorted(confusions, key=lambda p: (-p[2], p[0], p[1]))]
    assert shown_table(cells["sql-per-class-f1"]) == [
        {"class": c, "class_name": names[c], "precision": approx(precision[c]), "recall": approx(recall[c]),
         "f1": approx(f1[c]), "support": int(support[c])} for c in sorted(range(k), key=lambda c: (f1[c], c))]
    confidence = probability[np.arange(n), predicted]
    mistakes = np.flatnonzero(~correct)
    worst = sorted(mistakes, key=lambda i: (-confidence[i], ids[i]))[:10]
    assert shown_table(cells["sql-confident-mistakes"]) == [
        {"id": int(ids[i]), "label": int(truth[i]), "prediction": int(predicted[i]),
         "confidence": approx(confidence[i])} for i in worst]
    assert shown_table(cells["sql-history"]) == [
        {"epoch": h["epoch"], "run_id": model.run_id, "loss": approx(h["loss"]), "accuracy": approx(h["accuracy"]),
         "val_loss": approx(h["val_loss"]), "val_accuracy": approx(h["val_accuracy"])} for h in model.history]

    # The figures: one plotly bundle per figure shown, in model.report's order, drawing these numbers.
    figures = [o.data[PLOTLY_MIME] for o in cells["figures"].outputs if PLOTLY_MIME in o.get("data", {})]
    assert len(figures) == len(FIGURE_HEADINGS)
    assert [o.output_type for o in cells["figures"].outputs] == ["display_data"] * len(FIGURE_HEADINGS)
    titles = [fig["layout"]["title"]["text"] for fig in figures]
    assert [t.split(":")[0] for t in titles] == FIGURE_HEADINGS, titles
    by_heading = dict(zip(FIGURE_HEADINGS, figures))
    [heatmap] = by_heading["Confusion matrix"]["data"]
    assert np.array_equal(plotly_array(heatmap["z"]), confusion)
    np.testing.assert_allclose([plotly_array(bar["y"]) for bar in by_heading["Per-class metrics"]["data"]],
                               [precision, recall, f1], rtol=0, atol=1e-12)
    assert f"({len(mistakes)} of {n} test rows)" in titles[-1]
    curves = {(trace["name"], trace["yaxis"]): list(plotly_array(trace["y"]))
              for trace in by_heading["Training history"]["data"]}
    assert curves == {(name, axis): approx([h[prefix + key] for h in model.history])
                      for name, prefix in (("train", ""), ("validation", "val_"))
                      for axis, key in (("y", "loss"), ("y2", "accuracy"))}

    # The partitions sweep: its rows in the bench table, a line per point, its figure, the fastest count by SQL.
    bench = tables["bench"].sort_values("partitions").reset_index(drop=True)
    [sweep_run] = set(bench.run_id)
    assert list(bench.partitions) == SWEPT_PARTITIONS and set(bench.sweep) == {"partitions"}
    # The notebook's config, validation split included: the rows an epoch of its fit trained on.
    assert set(bench.rows) == {h["rows"] for h in model.history} and set(bench.epochs) == {2}
    assert bench.error.isna().all()
    assert (0 < bench.seconds_min).all() and (bench.seconds_min <= bench.seconds_per_epoch).all()
    assert (bench.seconds_per_epoch <= bench.seconds_max).all()
    seconds = dict(zip(bench.partitions, bench.seconds_per_epoch))
    assert re.findall(r"^point (\d)/2: partitions=(\d) \| (\S+) s/epoch", cell_stdout(cells["bench"]), re.MULTILINE) \
        == [(str(i), str(p), f"{seconds[p]:.2f}") for i, p in enumerate(SWEPT_PARTITIONS, start=1)]
    [sweep_figure] = [o.data[PLOTLY_MIME] for o in cells["bench"].outputs if PLOTLY_MIME in o.get("data", {})]
    [trace] = sweep_figure["data"]
    assert sweep_run in trace["name"]  # the series of this sweep
    assert list(plotly_array(trace["x"])) == SWEPT_PARTITIONS
    assert list(plotly_array(trace["y"])) == approx([seconds[p] for p in SWEPT_PARTITIONS])
    fastest = min(seconds, key=seconds.get)
    assert shown_table(cells["sql-bench-fastest"]) == [
        {"run_id": sweep_run, "fastest_partitions": fastest, "seconds_per_epoch": approx(seconds[fastest]),
         "points": len(SWEPT_PARTITIONS)}]
