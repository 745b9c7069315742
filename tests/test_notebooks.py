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
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession

from dfnet.session import is_connect

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


def write_earlier_run(spark: SparkSession) -> None:
    """The tables the notebook appends to, as an earlier run left them: history and per-class
    metrics (every class F1 0) of EARLIER_RUN, so "the newest run" queries have a run to leave out."""
    import dfnet

    dfnet.write_history(SimpleNamespace(run_id=EARLIER_RUN, history=EARLIER_HISTORY), f"{DATABASE}.history",
                        mode="append", spark=spark)
    per_class = [{"class": c, "tp": 0, "fp": 18, "fn": 18, "tn": 300, "support": 18, "precision": 0.0,
                  "recall": 0.0, "f1": 0.0} for c in range(10)]
    dfnet.write_class_metrics(SimpleNamespace(per_class=per_class, class_names=None), f"{DATABASE}.class_metrics",
                              run_id=EARLIER_RUN, mode="append", spark=spark)


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
    html = [s.value for s in run.shown_as("html")]
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

    # The session is the user's still: running, active, configured as before.
    assert ns["spark"] is spark
    assert is_connect(spark) or not spark.sparkContext._jsc.sc().isStopped()
    assert SparkSession.getActiveSession() is spark
    assert spark.range(3).count() == 3
    assert {key: spark.conf.get(key) for key in USER_CONF} == USER_CONF
    assert spark.conf.getAll == conf_before


@pytest.mark.parametrize("user_session", ["classic", "connect"], indirect=True)
def test_databricks_notebook_runs_end_to_end(user_session):
    spark = user_session
    conf_before = spark.conf.getAll
    run = run_databricks(DATABRICKS_NOTEBOOK, spark)
    print(run.timings())
    assert [c.kind for c, _ in run.skipped].count("pip") == 1
    check_notebook_run(run, spark, conf_before)


def test_zeppelin_note_runs_end_to_end(user_session):
    spark = user_session
    conf_before = spark.conf.getAll
    run = run_zeppelin(ZEPPELIN_NOTE, spark)
    print(run.timings())
    check_notebook_run(run, spark, conf_before)
