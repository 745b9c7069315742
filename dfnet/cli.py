"""The ``dfnet`` command line.

``dfnet train`` loads a data set into Spark, trains (scoring a held-out
``--validation-split`` of the training rows after every epoch, and stopping
early with ``--early-stopping N``), evaluates on the test split and
writes the run folder: ``model/`` (architecture + weights), ``history.json``,
``metrics.json`` and ``report.html`` (one offline page of plotly figures, see
:func:`dfnet.report.run_figures`; left out with ``--no-report``). The folder is
assembled under a temporary name and renamed into place at the end, so a
failed run leaves nothing half-written and an existing folder is never
overwritten without ``--overwrite``. The run itself is :class:`dfnet.run.TrainRun`
(:func:`dfnet.train_run` from Python): this module reads the options and the
data into DataFrames and hands them over.

With ``--checkpoint-dir D`` a checkpoint is written to D (any path Spark can
write) every ``--checkpoint-every`` epochs; ``--resume`` continues a killed run
from the newest good checkpoint there, to the same weights as an uninterrupted
run (see :mod:`dfnet.checkpoint`). D must lie outside the run folder, which
still appears only whole, at the end.

Tables for Spark SQL: ``dfnet train --history-table H --metrics-table M
--predictions-table P`` appends the run's epochs to H and its per-class test
metrics to M (rows carry the run id) and writes the test predictions to P;
``dfnet predict --model RUN --table P`` scores a data set or a table with a
saved model. An existing predictions table is replaced or added to only with
``--mode overwrite|append``. ``--warehouse DIR`` keeps the tables and their
Derby metastore under DIR (default: ``spark-warehouse/`` and ``metastore_db/``
in the working directory), where a later ``dfnet`` or Spark session finds them
(see :mod:`dfnet.tables`).

``dfnet bench partitions|slots|engines|schedules|aggregations`` runs that sweep of
:mod:`dfnet.bench` on one session (a line per point as it goes, then the table;
``--table`` and ``--output``); ``dfnet bench clusters --master URL --sizes 1,2``
runs one application per size, each a ``dfnet bench clusters --application SIZE``
process of its own that hands its row back as one JSON line. ``dfnet bench script
NAME [ARGS]`` (or ``dfnet bench NAME`` for a name that is no sweep) runs
``benchmarks/NAME.py`` of a source checkout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .config import (HIDDEN_ACTIVATIONS, AGGREGATES, PARTIAL_DTYPES, DEFAULT_LR, ENGINES, LR_SCHEDULES, MODELS, OPTIMIZERS, PADDINGS, PATCHES, PATCH_ROWS,
                     PRESET_DATA, PRESETS, SCHEDULES, TrainConfig)
from .datasets import DATASETS
from .errors import DFNetError
from .nn.layers import INITIALIZERS
from .nn.losses import LOSSES
from .tables import WRITE_MODES

DATASET_NAMES = sorted(DATASETS)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _pool(text: str) -> int | str:
    if text.lower() == "none":
        return "none"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pooling window size or 'none', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfnet", description="Train neural networks on Spark DataFrames.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _predict_parser(sub)
    _bench_parser(sub)
    return parser


def _train_parser(sub) -> None:
    """``dfnet train``: data, model, convolutions, optimisation, regularization, run, checkpoints, tables."""
    t = sub.add_parser("train", help="train a network, evaluate it on the test split, save the run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # Every training option defaults to None so that a preset, then dfnet's own
    # defaults, fill in only what the user did not say.
    data = t.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                      help="data set (default: digits, which needs no download)")
    data.add_argument("--data-dir", default=None,
                      help="folder with the IDX files (else $DFNET_DATA_DIR, else ./data with download)")
    data.add_argument("--classes", type=_int_list, default=None, help="keep these classes, relabelled 0..k-1, e.g. 0,1")
    data.add_argument("--partitions", type=int, default=None, help="partitions of the cached training data")
    _image_options(data, train=True)
    model = t.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="named configuration (classic: 784-64-2 sigmoid/MSE on MNIST 0/1; digits-cnn: "
                            "10 3x3 sigmoid maps, 2x2 max-pool, 128 ReLU, on the 8x8 digits)")
    model.add_argument("--model", choices=MODELS, default=None, help="mlp (default) or cnn")
    model.add_argument("--engine", choices=ENGINES, default=None,
                       help="dataframe (default), or the RDD baselines rdd (per record) and rdd-batched")
    model.add_argument("--hidden", type=_int_list, default=None,
                       help="dense hidden layer sizes, e.g. 64 or 128,64 (after the convolutions of a cnn)")
    model.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default=None)
    conv = t.add_argument_group("convolutions (--model cnn)")
    conv.add_argument("--kernels", type=_int_list, default=None,
                      help="filters of each convolution block, e.g. 10 or 16,32 (default: 16,32 for images of "
                           "24 pixels and more on a side, 10 below)")
    conv.add_argument("--kernel-size", type=int, default=None, help="square kernel side (default 3)")
    conv.add_argument("--pool", type=_pool, default=None,
                      help="max-pooling window after each convolution, or none (default 2)")
    conv.add_argument("--conv-activation", choices=HIDDEN_ACTIVATIONS, default=None,
                      help="activation of the convolution maps (default: --activation)")
    conv.add_argument("--padding", choices=PADDINGS, default=None, help="valid (default) or same")
    conv.add_argument("--image-shape", type=_int_list, default=None,
                      help="H,W,C of the images (default: square, one channel)")
    conv.add_argument("--patches", choices=PATCHES, default=None,
                      help="inline (default): each step cuts the first convolution's patches; explode: a UDF "
                           "and posexplode cache them as rows (dataframe engine)")
    conv.add_argument("--patch-rows", choices=PATCH_ROWS, default=None,
                      help="explode: one cached row per output row of an image (default) or per position")
    model.add_argument("--loss", choices=sorted(LOSSES), default=None)
    model.add_argument("--init", choices=["auto", *INITIALIZERS], default=None)
    model.add_argument("--dtype", choices=["float32", "float64"], default=None)
    opt = t.add_argument_group("optimisation")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    opt.add_argument("--lr", type=float, default=None, help=f"learning rate (default per optimizer: {DEFAULT_LR})")
    opt.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                     help="constant, or cosine decay from --lr towards 0 over the epochs")
    opt.add_argument("--epochs", type=int, default=None)
    opt.add_argument("--schedule", choices=SCHEDULES, default=None,
                     help="auto (default): model averaging planned from the rows, partitions and task slots, a "
                          "few Spark jobs per epoch; classic: one full-batch step per epoch; minibatch: exact "
                          "synchronous SGD, one job per --batch-size rows; average: every partition trains "
                          "locally, the driver averages their weights")
    opt.add_argument("--local-steps", type=int, default=None,
                     help="average schedule: local steps per partition between averages (default: an epoch)")
    opt.add_argument("--sample", type=float, default=None, help="fraction of rows sampled per epoch")
    opt.add_argument("--batch-size", type=int, default=None,
                     help="rows per (local) step (default: 32-128 from the rows per model, see auto_batch_size)")
    opt.add_argument("--seed", type=int, default=None)
    opt.add_argument("--aggregate", choices=AGGREGATES, default=None,
                     help="how the dataframe engine adds the tasks' partial sums: collect (every task's vector "
                          "streamed to the driver as Arrow and added there), agg (groupBy().agg on one reduce "
                          "task), sharded (each vector cut into chunks, each chunk added on its own reduce task: "
                          "no link carries more than a task's vector) or auto (default: collect while tasks x "
                          "weights is small, else sharded; the run's first line says which and why)")
    opt.add_argument("--partial-dtype", choices=PARTIAL_DTYPES, default=None,
                     help="type of the partial sums on the wire (default float64; float32 halves the bytes, "
                          "the adding stays float64)")
    reg = t.add_argument_group("validation, early stopping and regularization")
    reg.add_argument("--validation-split", type=float, default=None,
                     help="hold this fraction of the training rows out (a seeded hash of the row id, never the "
                          "test split) and score it after every epoch (one Spark job each)")
    reg.add_argument("--early-stopping", type=int, default=None, metavar="N",
                     help="stop after N epochs without a lower validation loss and keep the best epoch's "
                          "weights (needs --validation-split)")
    reg.add_argument("--min-delta", type=float, default=None,
                     help="a validation loss counts as lower only when it beats the best by more than this (0)")
    reg.add_argument("--weight-decay", type=float, default=None,
                     help="weight decay of the weights (not biases): decoupled (AdamW) for adam, L2 for sgd and "
                          "momentum (default 0)")
    reg.add_argument("--dropout", type=float, default=None, metavar="P",
                     help="inverted dropout of rate P after every hidden activation, dense and convolutional; "
                          "off at prediction (dataframe engine; default 0)")
    run = t.add_argument_group("run")
    run.add_argument("--master", default=None, help="Spark master, e.g. local[2] (default local[*])")
    run.add_argument("--remote", default=None, metavar="URL",
                     help="Spark Connect server, e.g. sc://host:15002 (default: $SPARK_REMOTE; neither: a classic session on --master)")
    run.add_argument("--output", default=None, help="run folder (default runs/<dataset>-<time>)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    run.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    run.add_argument("--verbose", action="store_true",
                     help="show Spark's own start-up notes and warnings on the console")
    run.add_argument("--no-report", action="store_true", help="do not write report.html into the run folder")
    run.add_argument("--mlflow", action="store_true",
                     help="log the run to MLflow: params, per-epoch metrics, test metrics, report.html, "
                          "history.json, metrics.json and the model (pip install 'dfnet[mlflow]'; where to: "
                          "$MLFLOW_TRACKING_URI, else MLflow's default ./mlflow.db)")
    run.add_argument("--mlflow-experiment", default=None, metavar="NAME",
                     help="MLflow experiment (created if missing; default: MLflow's active or Default one)")
    ckpt = t.add_argument_group("checkpoints")
    ckpt.add_argument("--checkpoint-dir", default=None,
                      help="write a checkpoint here (any path Spark can write: local, hdfs://, dbfs:/, s3a://); "
                           "the newest 3 are kept; must not lie inside --output")
    ckpt.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    ckpt.add_argument("--resume", action="store_true",
                      help="continue from the newest good checkpoint in --checkpoint-dir (from scratch if none)")
    _table_options(t, predictions="--predictions-table", history=True)


def _predict_parser(sub) -> None:
    """``dfnet predict``: the model, the rows to score, the session and the predictions table."""
    p = sub.add_parser("predict", help="score a data set or a table with a saved model into a predictions table",
                       description="Writes run_id, id, label, prediction, probability, image and path per row with "
                                   "saveAsTable (see dfnet.tables).")
    p.add_argument("--model", required=True,
                   help="a run folder of `dfnet train` (its model/ and the data set it was trained on) or a "
                        "model folder")
    source = p.add_argument_group("rows to score (default: the test split of the run's data set)")
    source.add_argument("--dataset", choices=DATASET_NAMES, default=None)
    source.add_argument("--split", choices=["train", "test"], default="test")
    source.add_argument("--data-dir", default=None, help="folder of the IDX files")
    source.add_argument("--classes", type=_int_list, default=None,
                        help="keep these classes, relabelled 0..k-1 (default: the run's)")
    source.add_argument("--input-table", default=None,
                        help="score this Spark table instead (columns --features-col, --label-col, --id-col)")
    source.add_argument("--features-col", default="image")
    source.add_argument("--label-col", default="label", help="'' for unlabelled rows")
    source.add_argument("--id-col", default="id", help="'' to number the rows")
    _image_options(source, train=False)
    p.add_argument("--run-id", default=None, help="run_id column (default: the model's training run)")
    p.add_argument("--no-image", action="store_true", help="leave the image column null (a smaller table)")
    p.add_argument("--master", default=None, help="Spark master, e.g. local[2] (default local[*])")
    p.add_argument("--remote", default=None, metavar="URL",
                   help="Spark Connect server, e.g. sc://host:15002 (default: $SPARK_REMOTE; neither: a classic session on --master)")
    p.add_argument("--verbose", action="store_true", help="show Spark's own start-up notes and warnings")
    _table_options(p, predictions="--table", history=False)


def _image_options(group, *, train: bool) -> None:
    group.add_argument("--image-folder", default=None, metavar="PATH",
                       help="train on image files instead of a data set: PATH/<class>/*.png|jpg|bmp|gif, or "
                            "PATH/train/<class>/ and PATH/test/<class>/ (any path Spark reads)" if train else
                            "score the image files under PATH (PATH/<class>/... gives labels when the classes "
                            "are the model's; images straight under PATH are scored unlabelled)")
    if train:
        group.add_argument("--image-size", type=_int_list, default=None, metavar="H,W",
                           help="resize every image to H,W (bilinear; default: the images' common size, "
                                "and images of different sizes are refused)")
        group.add_argument("--channels", type=int, choices=[1, 3], default=None,
                           help="1 (grayscale) or 3 (RGB) (default: 3 if any image is in colour, else 1)")
        group.add_argument("--test-fraction", type=float, default=0.2,
                           help="fraction of an image folder without train/ and test/ held out for the test, "
                                "by a seeded hash of each file's path")
    group.add_argument("--skip-bad-images", action="store_true",
                       help="skip files that are no image or are truncated (reported, and counted in "
                            "metrics.json) instead of refusing the folder")


def _table_options(parser: argparse.ArgumentParser, *, predictions: str, history: bool) -> None:
    tables = parser.add_argument_group("tables for Spark SQL")
    tables.add_argument(predictions, dest="predictions_table", default=None, required=predictions == "--table",
                        help="write the test predictions to this table (name, db.name or catalog.db.name)")
    tables.add_argument("--mode", choices=WRITE_MODES, default="error",
                        help="if the predictions table exists: error (default), overwrite (replaced only once the "
                             "new rows are complete) or append"
                             + ("; history and metrics tables are always appended to" if history else ""))
    if history:
        tables.add_argument("--history-table", default=None,
                            help="append one row per epoch (run_id, epoch, loss, accuracy, rows, seconds, "
                                 "val_loss, val_accuracy)")
        tables.add_argument("--metrics-table", default=None,
                            help="append one row per class (run_id, class, class_name, tp, fp, fn, tn, support, "
                                 "precision, recall, f1)")
    tables.add_argument("--warehouse", default=None,
                        help="folder for the tables and their Derby metastore (default: Spark's, in the working "
                             "directory); ignored by a session that is already running")
    tables.add_argument("--conf", action="append", default=[], type=_spark_setting, metavar="KEY=VALUE",
                        help="a Spark setting for the session dfnet starts, as spark-submit's --conf (repeat it), "
                             "e.g. spark.hadoop.hive.metastore.uris=thrift://host:9083 for a shared metastore")


def _spark_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a Spark setting), got {text!r}")
    return key.strip(), value


# --- dfnet bench -----------------------------------------------------------------------------

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"

#: The sweeps of :mod:`dfnet.bench` that ``dfnet bench SWEEP`` runs, and what each one varies.
BENCH_SWEEPS = {"partitions": "partitions of the training rows, on one Spark session",
                "slots": "task slots the session lends the sweep, 1 up to all of them",
                "engines": "the engines (dataframe, rdd, rdd-batched), on one Spark session",
                "schedules": "the schedules (auto, minibatch, average, classic), on one Spark session",
                "aggregations": "how a job adds the partitions' sums (agg, collect, sharded), on one Spark session",
                "clusters": "cluster sizes: one Spark application per size on --master, started and stopped "
                            "by dfnet"}
#: What follows ``dfnet bench``: a sweep, or ``script`` for the scripts of a source checkout. Any other
#: first word is a script's name (``dfnet bench aggregation ...`` is ``dfnet bench script aggregation ...``).
BENCH_COMMANDS = (*BENCH_SWEEPS, "script")
#: Options of ``dfnet bench SWEEP`` that become the training configuration (see :func:`_bench_config`).
BENCH_MODEL_OPTIONS = ("preset", "model", "hidden", "activation", "engine", "schedule", "batch_size", "optimizer",
                       "lr", "dtype", "seed", "partitions")
#: The line prefix by which one application of ``dfnet bench clusters`` hands its row to the parent.
ROW_LINE = "dfnet-bench-row "
#: The master's web UI port on a standalone cluster, where its JSON status is read (Spark's default).
STANDALONE_UI_PORT = 8080


def _counts(flag: str):
    """An argparse type: comma-separated positive integers, at least one, for ``flag``."""
    def parse(text: str) -> tuple[int, ...]:
        values = _int_list(text)
        bad = [v for v in values if v < 1]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad[0]} is not a positive count; expected integers >= 1, e.g. 1,2,4")
        return values
    return parse


def _names(what: str, allowed: Sequence[str]):
    """An argparse type: comma-separated names of ``allowed``, at least one."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in text.split(",") if v.strip())
        if not names:
            raise argparse.ArgumentTypeError(f"expected at least one {what} of {', '.join(allowed)}")
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown[0]!r}; allowed: {', '.join(allowed)}")
        return names
    return parse


class _GivenDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one (not None, not a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmark sweeps (partitions, slots, engines, cluster sizes) into a table, "
                                     "and the benchmark scripts of a source checkout",
                       description="Times training over one varied setting, one point after another (a line per "
                                   "point as it goes), prints the table of the points and writes it to a Spark "
                                   "table (--table) and to JSON + an HTML figure (--output). A point that fails "
                                   "is reported in its row and the sweep goes on. `dfnet bench script NAME` runs "
                                   "benchmarks/NAME.py of a source checkout; `dfnet bench` lists both.")
    sweeps = b.add_subparsers(dest="sweep", metavar="{" + ",".join(BENCH_COMMANDS) + "}")
    formatter = _GivenDefaults
    p = sweeps.add_parser("partitions", help=BENCH_SWEEPS["partitions"], formatter_class=formatter,
                          description="Seconds per epoch for each partition count of the training rows, on one "
                                      "session (--master, --remote or $SPARK_REMOTE).")
    p.add_argument("--partitions", dest="bench_partitions", type=_counts("--partitions"), default="1,2,4",
                   metavar="N,N,...", help="partition counts, each at most the training rows")
    _sweep_options(p)
    s = sweeps.add_parser("slots", help=BENCH_SWEEPS["slots"], formatter_class=formatter,
                          description="Seconds per epoch for each number of task slots of one session.")
    s.add_argument("--slots", dest="bench_slots", type=_counts("--slots"), default=None, metavar="N,N,...",
                   help="task slots, each at most the session's (default: 1 up to all of them)")
    _sweep_options(s, partitions=True)
    e = sweeps.add_parser("engines", help=BENCH_SWEEPS["engines"], formatter_class=formatter,
                          description="Seconds per epoch of each engine on the same rows and session.")
    e.add_argument("--engines", dest="bench_engines", type=_names("engine", ENGINES), default=",".join(ENGINES),
                   metavar="NAME,NAME,...", help=f"engines, of {', '.join(ENGINES)}")
    _sweep_options(e, engine=False, partitions=True)
    for name, flag, allowed, default, fixed in (
            ("schedules", "--schedules", SCHEDULES, ("auto", "minibatch", "average", "classic"), "schedule"),
            ("aggregations", "--aggregations", AGGREGATES, ("agg", "collect", "sharded"), "aggregate")):
        q = sweeps.add_parser(name, help=BENCH_SWEEPS[name], formatter_class=formatter,
                              description=f"Seconds per epoch of each {fixed} on the same rows and session.")
        q.add_argument(flag, dest=f"bench_{name}", type=_names(fixed, allowed), default=",".join(default),
                       metavar="NAME,NAME,...", help=f"of {', '.join(allowed)}")
        _sweep_options(q, schedule=name != "schedules", partitions=True)
    c = sweeps.add_parser("clusters", help=BENCH_SWEEPS["clusters"], formatter_class=formatter,
                          description="One Spark application per size, each in a process of its own, started and "
                                      "stopped by dfnet one after another: spark.cores.max=SIZE (and "
                                      "spark.executor.cores=1) on a standalone spark:// master, "
                                      "spark.executor.instances=SIZE on yarn and k8s://, local[SIZE] on a local "
                                      "master. Each times one point (--partitions, default one per core) and "
                                      "reports its row; this process gathers them.")
    c.add_argument("--sizes", type=_counts("--sizes"), required=True, metavar="N,N,...",
                   help="cluster sizes: executor cores on standalone (one-core executors), executors on YARN "
                        "and Kubernetes, threads on local")
    c.add_argument("--master-ui", default=None, metavar="URL",
                   help="a standalone master's web UI, whose /json/ status gives the cluster's cores (default: "
                        f"http://MASTER-HOST:{STANDALONE_UI_PORT})")
    c.add_argument("--executor-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long an application waits for its executors; a size that gets fewer is a failed "
                        "point")
    c.add_argument("--application", type=int, default=None, help=argparse.SUPPRESS)  # one size's process
    _sweep_options(c, session=False, partitions=True)
    script = sweeps.add_parser("script", help="run benchmarks/NAME.py of a source checkout",
                               description="Runs benchmarks/<name>.py with the remaining arguments; see each "
                                           "script's --help. Results go to benchmarks/results/.")
    script.add_argument("name", nargs="?", help="benchmark name; omit to list them")
    script.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")


def _sweep_options(parser: argparse.ArgumentParser, *, engine: bool = True, schedule: bool = True,
                   session: bool = True, partitions: bool = False) -> None:
    """The options every sweep shares: the rows, the network, the measurement, the session and the outputs."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASET_NAMES, default="digits", help="data set")
    data.add_argument("--data-dir", default=None,
                      help="folder with the IDX files (else $DFNET_DATA_DIR, else ./data with download)")
    data.add_argument("--classes", type=_int_list, default=None, help="keep these classes, relabelled 0..k-1")
    model = parser.add_argument_group("network (default: dfnet.bench's)")
    model.add_argument("--preset", choices=sorted(PRESETS), default=None)
    model.add_argument("--model", choices=MODELS, default=None)
    model.add_argument("--hidden", type=_int_list, default=None, help="dense hidden layer sizes, e.g. 64 or 128,64")
    model.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default=None)
    if engine:
        model.add_argument("--engine", choices=ENGINES, default=None)
    if schedule:
        model.add_argument("--schedule", choices=SCHEDULES, default=None)
    model.add_argument("--batch-size", type=int, default=None)
    model.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    model.add_argument("--lr", type=float, default=None)
    model.add_argument("--dtype", choices=["float32", "float64"], default=None)
    model.add_argument("--seed", type=int, default=None)
    if partitions:
        model.add_argument("--partitions", type=int, default=None,
                           help="partitions of the training rows" + (" in every application (default: the size)"
                                                                     if not session else ""))
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--epochs", type=int, default=3, help="timed epochs per point")
    measure.add_argument("--warmup", type=int, default=1, help="untimed epochs per point before them")
    measure.add_argument("--no-accuracy", action="store_true", help="do not score the test split at each point")
    run = parser.add_argument_group("run")
    if session:
        run.add_argument("--master", default=None, help="Spark master, e.g. local[2] (default local[*])")
        run.add_argument("--remote", default=None, metavar="URL",
                         help="Spark Connect server, e.g. sc://host:15002 (default: $SPARK_REMOTE)")
    else:
        run.add_argument("--master", required=True,
                         help="spark://host:port (standalone), yarn, k8s://https://host:port, or local[N]")
    run.add_argument("--run-id", default=None, help="the run_id column (default: a new id)")
    run.add_argument("--output", default=None, metavar="PATH", help="write PATH.json (the rows) and PATH.html "
                                                                   "(the figure)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    run.add_argument("--verbose", action="store_true", help="show Spark's own start-up notes and warnings")
    tables = parser.add_argument_group("tables for Spark SQL")
    tables.add_argument("--table", default=None, help="write the rows to this table (name, db.name or "
                                                     "catalog.db.name)")
    tables.add_argument("--mode", choices=WRITE_MODES, default="append",
                        help="if the table exists: append, overwrite or error")
    tables.add_argument("--warehouse", default=None,
                        help="folder for the tables and their Derby metastore (default: Spark's, in the working "
                             "directory)")
    tables.add_argument("--conf", action="append", default=[], type=_spark_setting, metavar="KEY=VALUE",
                        help="a Spark setting for the session(s) dfnet starts (repeat it)")


def available_benchmarks() -> list[str]:
    return sorted(p.stem for p in BENCHMARKS_DIR.glob("*.py") if p.stem != "common") if BENCHMARKS_DIR.is_dir() else []


def _bench_argv(argv: list[str]) -> list[str]:
    """``dfnet bench NAME ...`` where NAME is no sweep: the script NAME (``dfnet bench script NAME ...``)."""
    if len(argv) > 1 and argv[0] == "bench" and argv[1] not in BENCH_COMMANDS and not argv[1].startswith("-"):
        return ["bench", "script", *argv[1:]]
    return argv


def bench_command(args: argparse.Namespace) -> int:
    """``dfnet bench``: the list, a script, a sweep on one session, or one application per cluster size."""
    if args.sweep is None:
        scripts = available_benchmarks()
        print("sweeps (dfnet bench SWEEP --help):\n" + "".join(f"  {name:<13} {what}\n" for name, what in
                                                               BENCH_SWEEPS.items())
              + (f"scripts (dfnet bench script NAME --help, in {BENCHMARKS_DIR}): " + ", ".join(scripts) if scripts
                 else "scripts: none here (they come with a source checkout, not the installed package)"))
        return 0
    if args.sweep == "script":
        return bench_script_command(args)
    if args.sweep == "clusters":
        return bench_application_command(args) if args.application is not None else bench_clusters_command(args)
    return bench_sweep_command(args)


def bench_script_command(args: argparse.Namespace) -> int:
    import subprocess

    names = available_benchmarks()
    if not names:
        raise DFNetError(f"no benchmark scripts found in {BENCHMARKS_DIR}: `dfnet bench script` runs the scripts of "
                         f"a source checkout (pip install -e .), which an installed wheel does not include; the "
                         f"sweeps ({', '.join(BENCH_SWEEPS)}) need none")
    if args.name is None:
        print("benchmarks: " + ", ".join(names) + f"\n(scripts in {BENCHMARKS_DIR}; `dfnet bench script NAME --help`)")
        return 0
    name = args.name.replace("-", "_")
    if name not in names:
        raise DFNetError(f"unknown benchmark {args.name!r}; sweeps: {', '.join(BENCH_SWEEPS)}; scripts: "
                         f"{', '.join(names)}")
    return subprocess.call([sys.executable, str(BENCHMARKS_DIR / f"{name}.py"), *args.args])


class BenchRows:
    """The training (and test) rows of a sweep as numpy arrays, read before any Spark session so that
    counts can be checked against them first; :meth:`frames` makes the DataFrames."""

    def __init__(self, args: argparse.Namespace):
        import numpy as np

        from .datasets import check_classes, get_dataset, load_arrays

        self.dataset, self.data_dir = args.dataset, args.data_dir
        self.classes = check_classes(args.dataset, args.classes) if args.classes else None
        self.max_value = get_dataset(args.dataset).max_value
        self.train = load_arrays(args.dataset, "train", args.data_dir)
        self.test = None if args.no_accuracy else load_arrays(args.dataset, "test", args.data_dir)
        labels = self.train[1]
        self.rows = int(np.isin(labels, self.classes).sum()) if self.classes else len(labels)

    def check_partitions(self, flag: str, counts) -> None:
        too_many = [n for n in counts if n > self.rows]
        if too_many:
            raise DFNetError(f"{flag} {too_many[0]}: more partitions than the {self.rows} training rows of "
                             f"{self.dataset}; allowed: 1 to {self.rows}")

    def frames(self, spark):
        from .datasets import to_dataframe

        make = lambda arrays: to_dataframe(spark, *arrays, max_value=self.max_value,  # noqa: E731
                                           classes=self.classes)
        return make(self.train), None if self.test is None else make(self.test)


def _bench_config(args: argparse.Namespace) -> TrainConfig | None:
    """The network the user asked for, or None for dfnet.bench's own default."""
    if not any(getattr(args, name, None) is not None for name in BENCH_MODEL_OPTIONS):
        return None
    chosen = {k: v for k, v in vars(args).items() if k in BENCH_MODEL_OPTIONS and k != "preset" and v is not None}
    return TrainConfig(**{**(PRESETS.get(args.preset, {}) if args.preset else {}), **chosen}).validate()


def _check_measurement(args: argparse.Namespace) -> None:
    if args.epochs < 1:
        raise DFNetError(f"--epochs {args.epochs}: expected at least 1 timed epoch")
    if args.warmup < 0:
        raise DFNetError(f"--warmup {args.warmup}: expected 0 or more untimed epochs")


def _sweep_values(args: argparse.Namespace):
    return getattr(args, f"bench_{args.sweep}")


def bench_sweep_command(args: argparse.Namespace) -> int:
    """``dfnet bench partitions|slots|engines``: the library's sweep on one session, printed as it goes."""
    import dfnet.bench as bench

    from .session import get_or_create_spark

    _check_measurement(args)
    config = _bench_config(args)
    rows = BenchRows(args)
    values = _sweep_values(args)
    if args.sweep == "partitions":
        rows.check_partitions("--partitions", values)
    elif config is not None and config.partitions is not None:
        rows.check_partitions("--partitions", [config.partitions])
    _check_table_name(args)
    print(_describe_sweep(args, rows, values, config), flush=True)
    spark = get_or_create_spark(args.master, app_name=f"dfnet-bench-{args.sweep}", warehouse=args.warehouse,
                                conf=dict(args.conf), verbose=args.verbose, remote=args.remote)
    train_df, test_df = rows.frames(spark)
    sweep_kwargs = {} if values is None else {args.sweep: list(values)}
    sweep = getattr(bench, args.sweep)(train_df, **sweep_kwargs, config=config, epochs=args.epochs,
                                       warmup=args.warmup, test_df=test_df, table=args.table, mode=args.mode,
                                       progress=_progress(args), run_id=args.run_id)
    return _finish_sweep(sweep, args)


def _describe_sweep(args: argparse.Namespace, rows: BenchRows, values, config: TrainConfig | None) -> str:
    """The line that says what the sweep times, on what, before the session starts."""
    shown = "default" if values is None else ",".join(map(str, values))
    network = "dfnet.bench's default network" if config is None else _describe_model(config, None)
    return (f"dfnet bench {args.sweep}: {shown} | {rows.dataset} {rows.rows} training rows"
            f"{'' if rows.test is None else ', accuracy on the test split'} | {network} | {args.epochs} timed "
            f"epoch(s) after {args.warmup} warm-up per point")


def _check_table_name(args: argparse.Namespace) -> None:
    if args.table is not None:
        from .tables import check_table_name

        check_table_name(args.table)


def _progress(args: argparse.Namespace):
    """What dfnet.bench's ``progress`` takes: a line per point always; the bar on a terminal, unless
    --no-progress."""
    from .bench.progress import SweepPrinter

    return SweepPrinter(bar=False) if args.no_progress else None


def _finish_sweep(sweep, args: argparse.Namespace) -> int:
    """Print the table of the points; save --output; exit 1 if a point failed (its row says why)."""
    print(format_rows(sweep.rows), flush=True)
    if args.output:
        sweep.save(args.output)
        print(f"Wrote {args.output}.json and {args.output}.html", flush=True)
    if args.table:
        print(f"Table {args.table} ({args.mode}): {len(sweep.rows)} rows of run_id {sweep.rows[0]['run_id']}",
              flush=True)
    failed = [row for row in sweep.rows if row.get("error")]
    if failed:
        print(f"dfnet: {len(failed)} of {len(sweep.rows)} points failed (see the error column)", file=sys.stderr)
        return 1
    return 0


#: Columns of the console table, in this order, when some row has a value there.
TABLE_COLUMNS = ("point", "partitions", "slots", "engine", "rows", "executors", "hosts", "seconds_per_epoch",
                 "seconds_min", "seconds_max", "jobs_per_epoch", "accuracy", "error")


def format_rows(rows: list[dict]) -> str:
    """The points as a plain-text table: the columns of :data:`TABLE_COLUMNS` that some row fills."""
    columns = [c for c in TABLE_COLUMNS if any(row.get(c) not in (None, "") for row in rows)]

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


# --- dfnet bench clusters: one application per size ----------------------------------------------

def cluster_kind(master: str) -> str:
    """``local``, ``standalone``, ``yarn`` or ``k8s`` for a master URL; anything else is refused."""
    if master == "local" or master.startswith("local["):
        return "local"
    if master.startswith("spark://"):
        return "standalone"
    if master == "yarn":
        return "yarn"
    if master.startswith("k8s://"):
        return "k8s"
    raise DFNetError(f"--master {master}: dfnet bench clusters starts applications on spark://host:port "
                     f"(standalone), yarn, k8s://... or local[N]")


#: What sets an application's size, per kind of master (local: the master itself, local[SIZE]).
SIZE_SETTINGS = {"standalone": ("spark.cores.max", "spark.executor.cores"),
                 "yarn": ("spark.executor.instances", "spark.dynamicAllocation.enabled"),
                 "k8s": ("spark.executor.instances", "spark.dynamicAllocation.enabled")}


def application_settings(master: str, size: int, executor_timeout: float) -> tuple[str, dict[str, str]]:
    """The master and Spark settings of the application of ``size``: one-core executors up to ``size``
    cores on standalone (and ``size`` task slots), ``size`` executors on YARN and Kubernetes (no dynamic allocation), ``local[size]``;
    on a cluster no job starts before every executor registered or ``executor_timeout`` passed."""
    kind = cluster_kind(master)
    if kind == "local":
        return f"local[{size}]", {}
    # defaultParallelism (the task slots dfnet.bench reports) is max(cores, 2) on standalone unless set.
    conf = ({"spark.cores.max": str(size), "spark.executor.cores": "1", "spark.default.parallelism": str(size)}
            if kind == "standalone" else
            {"spark.executor.instances": str(size), "spark.dynamicAllocation.enabled": "false"})
    conf.update({"spark.scheduler.minRegisteredResourcesRatio": "1.0",
                 "spark.scheduler.maxRegisteredResourcesWaitingTime": f"{executor_timeout:g}s"})
    return master, conf


def cluster_capacity(master: str, master_ui: str | None = None) -> tuple[int | None, str]:
    """The largest size the cluster can hold and where that figure comes from; None when dfnet cannot
    know (YARN, Kubernetes, a standalone master whose web UI does not answer), with the reason."""
    import os

    kind = cluster_kind(master)
    if kind == "local":
        return os.cpu_count() or 1, "the cores of this machine"
    if kind != "standalone":
        return None, (f"dfnet cannot ask {kind} how many executors it would grant (queues, quotas and "
                      f"autoscaling decide)")
    from urllib.parse import urlsplit

    hosts = [h.rsplit(":", 1)[0] for h in master[len("spark://"):].split(",")]  # HA: several masters
    urls = [master_ui.rstrip("/")] if master_ui else [f"http://{h}:{STANDALONE_UI_PORT}" for h in hosts]
    problems = []
    for url in urls:
        try:
            state = _read_json(url + "/json/")
        except (OSError, ValueError) as e:
            problems.append(f"{url}/json/: {e}")
            continue
        if state.get("status", "ALIVE") != "ALIVE":  # a standby master of an HA pair
            continue
        cores = sum(int(w.get("cores", 0)) for w in state.get("workers", []) if w.get("state") == "ALIVE")
        return cores, f"the alive workers' cores at {url} ({urlsplit(url).netloc})"
    return None, "the master's status could not be read (" + "; ".join(problems or ["no master is ALIVE"]) + \
        "; --master-ui URL names its web UI)"


def _read_json(url: str) -> dict:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return json.load(response)


def bench_clusters_command(args: argparse.Namespace) -> int:
    """``dfnet bench clusters``: check every size first, then one application (a process of its own) per
    size, one after another; gather their rows, print, and write --table and --output."""
    import os

    from .bench.progress import point_line
    from .bench.result import Sweep
    from .train import new_run_id

    _check_measurement(args)
    if os.environ.get("SPARK_REMOTE"):
        raise DFNetError(f"dfnet bench clusters starts its own applications on --master, and SPARK_REMOTE="
                         f"{os.environ['SPARK_REMOTE']} names a Spark Connect server (one application already): "
                         f"unset it, or time that server's task slots with `dfnet bench slots`")
    kind = cluster_kind(args.master)
    given = [key for key, _ in args.conf if key in SIZE_SETTINGS.get(kind, ())]
    if given:
        raise DFNetError(f"--conf {given[0]}: dfnet bench clusters sets it for each --sizes value; leave it out")
    _bench_config(args)
    rows = BenchRows(args)
    rows.check_partitions("--partitions", [args.partitions] if args.partitions else args.sizes)
    capacity, source = cluster_capacity(args.master, args.master_ui)
    if capacity is None:
        print(f"Cluster size not checked: {source}. Each application waits up to {args.executor_timeout:g} s "
              f"for its executors; a size that gets fewer is reported as a failed point.", flush=True)
    else:
        too_big = [size for size in args.sizes if size > capacity]
        if too_big:
            unit = "threads" if kind == "local" else "cores"
            raise DFNetError(f"--sizes {too_big[0]}: larger than the cluster, which has {capacity} {unit} "
                             f"({source}); allowed: 1 to {capacity}")
    _check_table_name(args)
    run_id = args.run_id or new_run_id()
    writer, started = _table_session(args, run_id) if args.table else (None, False)
    print(f"dfnet bench clusters on {args.master}: sizes {', '.join(map(str, args.sizes))}, one application each "
          f"(run_id {run_id})", flush=True)
    try:
        points = []
        for index, size in enumerate(args.sizes, start=1):
            points.append(_run_application(args, size, run_id))
            print(point_line(index, len(args.sizes), points[-1]), flush=True)
        sweep = Sweep("clusters", points, writer, {"master": args.master, "sizes": list(args.sizes),
                                                    "capacity": capacity, "capacity_source": source})
        if writer is not None:
            sweep.write_table(args.table, mode=args.mode)
    finally:
        if started:
            writer.stop()
    return _finish_sweep(sweep, args)


def _table_session(args: argparse.Namespace, run_id: str):
    """A local[1] session of this process for --table (or the one already running here), and whether
    it was started here: the table is checked with it before any application starts and written with
    it after the last, in --warehouse's or --conf's catalog as for the other commands."""
    from pyspark.sql import SparkSession

    from .bench.schema import BENCH_SCHEMA
    from .session import get_or_create_spark
    from .tables import check_can_write

    running = SparkSession.getActiveSession()
    spark = get_or_create_spark("local[1]", app_name="dfnet-bench-clusters-table", warehouse=args.warehouse,
                                conf=dict(args.conf), verbose=args.verbose)
    try:
        check_can_write(spark, args.table, args.mode, BENCH_SCHEMA, run_id=run_id)
    except BaseException:
        if running is None:
            spark.stop()
        raise
    return spark, running is None


def _run_application(args: argparse.Namespace, size: int, run_id: str) -> dict:
    """Run the application of ``size`` in a process of its own (``dfnet bench clusters --application
    SIZE``) and return its row; a process that ends without one gives a row naming the failure. The
    process (its group: the driver's JVM too) is stopped if this one is interrupted."""
    import subprocess
    from collections import deque
    from datetime import datetime

    from .bench.schema import empty_row
    from .local_spark import stop_process_group

    argv = [sys.executable, "-m", "dfnet.cli", *args.argv, "--application", str(size), "--run-id", run_id]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    row, tail = None, deque(maxlen=10)
    try:
        for line in proc.stdout:
            if line.startswith(ROW_LINE):
                row = json.loads(line[len(ROW_LINE):])
            else:  # the application's own messages (Spark's warnings and errors)
                tail.append(line.rstrip("\n"))
                sys.stderr.write(line)
        proc.wait()
    finally:
        if proc.poll() is None:
            stop_process_group(proc)
    if row is None:
        last = f": {tail[-1]}" if tail else ""
        row = {**empty_row(), "run_id": run_id, "sweep": "clusters", "point": f"size={size}", "slots": size,
               "error": f"the application of size {size} exited with code {proc.returncode} without a row{last}"}
    elif row.get("timestamp"):
        row["timestamp"] = datetime.fromisoformat(row["timestamp"])
    return row


def bench_application_command(args: argparse.Namespace) -> int:
    """One size of ``dfnet bench clusters`` (a process the parent started): a new session of that size,
    its executors awaited, one point timed; the row goes to standard output as one JSON line."""
    import dfnet.bench as bench

    from .bench.schema import empty_row
    from .session import get_or_create_spark

    size = args.application
    master, conf = application_settings(args.master, size, args.executor_timeout)
    rows = BenchRows(args)
    spark = get_or_create_spark(master, app_name=f"dfnet-bench-clusters-{size}", warehouse=args.warehouse,
                                conf={**conf, **dict(args.conf)}, verbose=args.verbose)
    try:
        row = {**empty_row(), "run_id": args.run_id, "partitions": args.partitions or size, "slots": size,
               "master": master}
        try:
            if cluster_kind(args.master) != "local":
                _wait_for_executors(spark, size, args.executor_timeout)
            train_df, test_df = rows.frames(spark)
            sweep = bench.partitions(train_df, partitions=[args.partitions or size], config=_bench_config(args),
                                     epochs=args.epochs, warmup=args.warmup, test_df=test_df, progress=False,
                                     run_id=args.run_id)
            row = dict(sweep.rows[0])
        except DFNetError as e:
            row["error"] = str(e)
        row.update(sweep="clusters", point=f"size={size}")
        print(ROW_LINE + json.dumps(row, default=lambda v: v.isoformat()), flush=True)
    finally:
        spark.stop()
    return 0


def _wait_for_executors(spark, size: int, timeout: float) -> None:
    import time

    def registered() -> int:  # block managers, the driver's own left out
        return spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1

    deadline = time.monotonic() + timeout
    while registered() < size:
        if time.monotonic() > deadline:
            raise DFNetError(f"only {registered()} of {size} executors registered within {timeout:g} s: the "
                             f"cluster has too few free cores or too little memory for this size")
        time.sleep(0.5)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict]:
    """Merge dfnet defaults <- preset <- explicit options into a validated config and data choice."""
    fields = {"model", "engine", "hidden", "activation", "loss", "init", "dtype", "optimizer", "lr", "lr_schedule",
              "epochs", "schedule", "sample", "batch_size", "local_steps", "seed", "partitions", "kernels",
              "kernel_size", "pool", "conv_activation", "padding", "image_shape", "patches", "patch_rows", "aggregate", "partial_dtype",
              "validation_split", "early_stopping", "min_delta", "weight_decay", "dropout"}
    chosen = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if chosen.get("pool") == "none":
        chosen["pool"] = None
    preset = PRESETS.get(args.preset, {}) if args.preset else {}
    config = TrainConfig(**{**preset, **chosen}).validate()
    data = {"dataset": "digits", "classes": None, **(PRESET_DATA.get(args.preset, {}) if args.preset else {})}
    if args.dataset is not None:
        data["dataset"] = args.dataset
    if args.classes is not None:
        data["classes"] = args.classes
    return config, data


#: How refusals of dfnet.run name the run's options on the command line.
FLAGS = {"output": "--output", "overwrite": "--overwrite", "checkpoint_dir": "--checkpoint-dir",
         "checkpoint_every": "--checkpoint-every", "resume": "--resume"}


def _check_image_options(args: argparse.Namespace) -> str | None:
    """The image folder to train on, with its options checked; None for a data set."""
    folder = args.image_folder
    if folder is None:
        given = [flag for flag, value in (("--image-size", args.image_size), ("--channels", args.channels),
                                          ("--skip-bad-images", args.skip_bad_images)) if value]
        if args.test_fraction != 0.2:
            given.append("--test-fraction")
        if given:
            raise DFNetError(f"{', '.join(given)} apply to --image-folder, which was not given")
        return None
    if args.dataset is not None or args.data_dir is not None or args.classes is not None:
        raise DFNetError("--image-folder trains on its own images; --dataset, --data-dir and --classes choose a "
                         "data set instead: give one or the other")
    if args.image_shape is not None:
        raise DFNetError("--image-shape describes array data; an --image-folder's shape comes from its images, "
                         "or from --image-size H,W and --channels 1|3")
    if args.image_size is not None and (len(args.image_size) != 2 or min(args.image_size) < 1):
        raise DFNetError(f"--image-size {','.join(map(str, args.image_size))}: expected H,W, two positive integers")
    if not 0 < args.test_fraction < 1:
        raise DFNetError(f"--test-fraction {args.test_fraction}: expected a fraction between 0 and 1")
    return folder


def _describe_images(images) -> str:
    from .images import IMAGE_EXTENSIONS

    h, w, c = images.image_shape
    names = ", ".join(images.class_names[:10]) + (", ..." if len(images.class_names) > 10 else "")
    text = (f"Images: {images.train_rows} train, {images.test_rows} test "
            f"({'train/ and test/ folders' if images.split_folders else 'seeded split'}), "
            f"{len(images.class_names)} classes ({names}), {h}x{w} {'RGB' if c == 3 else 'grayscale'}")
    if images.ignored_count:
        text += f"; {images.ignored_count} other file(s) ignored (not {', '.join(IMAGE_EXTENSIONS)}, or outside " \
                f"the class folders)"
    if images.skipped_count:
        first = "; ".join(f"{path}: {error}" for path, error in images.skipped[:3])
        text += f"\nSkipped {images.skipped_count} unreadable file(s) (--skip-bad-images): {first}" + \
            (" ..." if images.skipped_count > 3 else "")
    return text


def _image_metrics(images, folder: str) -> dict:
    return {"image_folder": folder, "image_shape": list(images.image_shape),
            "images": {"train": images.train_rows, "test": images.test_rows, "ignored_files": images.ignored_count},
            "skipped_images": {"count": images.skipped_count,
                               "first": [{"path": p, "error": e} for p, e in images.skipped]}}


def _describe_model(config: TrainConfig, image_shape: tuple[int, ...] | None) -> str:
    dense = f"hidden {list(config.hidden)} {config.activation}/{config.loss}"
    if config.model != "cnn":
        return f"{config.model} {dense}"
    shape = config.image_shape or image_shape
    kernels = config.resolve_kernels(shape) if shape else "auto"
    return (f"cnn kernels {kernels if isinstance(kernels, str) else list(kernels)} {config.kernel_size}x{config.kernel_size} "
            f"{config.conv_activation_name} pool {config.pool} patches {config.patches}, {dense}")


def train_command(args: argparse.Namespace) -> int:
    """Parse -> the rows as DataFrames -> :class:`dfnet.run.TrainRun`, which prints as it goes."""
    from .datasets import check_classes
    from .run import RunTables, TrainRun, default_output, is_local_path
    from .session import get_or_create_spark

    config, data = config_from_args(args)
    folder = _check_image_options(args)
    output = args.output or default_output(Path(folder).name if folder else data["dataset"])
    run = TrainRun(output, overwrite=args.overwrite, report=not args.no_report,
                   tables=RunTables(args.predictions_table, args.history_table, args.metrics_table, args.mode),
                   mlflow=_mlflow_logger(args, Path(output)), checkpoint_dir=args.checkpoint_dir,
                   checkpoint_every=args.checkpoint_every, resume=args.resume,
                   progress_bar=False if args.no_progress else None, option_names=FLAGS)
    if folder and is_local_path(folder):
        _check_apart(folder, run.folder)
    classes = check_classes(data["dataset"], data["classes"]) if data["classes"] and not folder else None
    print(_describe_run(args, config, folder, data["dataset"], classes), flush=True)
    spark = get_or_create_spark(args.master, app_name="dfnet-train", warehouse=args.warehouse, conf=dict(args.conf),
                                verbose=args.verbose, remote=args.remote)
    run.check_tables(spark)
    if folder:
        config, inputs = _image_folder_inputs(spark, args, folder, config)
        inputs["title"] = f"dfnet {config.model}: {folder} ({run.folder.name})"
    else:
        inputs = _dataset_inputs(spark, args.data_dir, data["dataset"], classes)
    run.train(spark, config=config, key_cols=["id"], **inputs)
    return 0


def _check_apart(folder: str, target: Path) -> None:
    images, output = Path(folder).resolve(), target.resolve()
    if images == output or output in images.parents or images in output.parents:
        raise DFNetError(f"the run folder {target} and --image-folder {folder} overlap: a run folder is written "
                         f"(or, with --overwrite, replaced) whole, so it must lie outside the images; "
                         f"choose another --output")


def _describe_run(args: argparse.Namespace, config: TrainConfig, folder: str | None, dataset: str,
                  classes: list[int] | None) -> str:
    """The line that says what this run trains, on what, and how."""
    from .datasets import get_dataset

    extras = [f"{name} {value}" for name, value in (("validation split", config.validation_split),
                                                     ("early stopping", config.early_stopping),
                                                     ("weight decay", config.weight_decay),
                                                     ("dropout", config.dropout)) if value]
    if folder:
        source = f"image folder {folder}"
        shape = None if args.image_size is None else (*args.image_size, args.channels or 1)
    else:
        source, shape = f"{dataset} classes {list(classes) if classes else 'all'}", get_dataset(dataset).image_shape
    return (f"dfnet: {source} | {_describe_model(config, shape)} | "
            f"{config.optimizer} lr {config.learning_rate} {config.lr_schedule} | {config.schedule} x {config.epochs} "
            f"epochs" + "".join(f" | {e}" for e in extras))


def _dataset_inputs(spark, data_dir: str | None, dataset: str, classes: list[int] | None) -> dict:
    """A data set's splits, class names and name, as TrainRun.train takes them."""
    from .datasets import get_dataset, load_dataframe

    names = get_dataset(dataset).class_names
    return {"train_df": load_dataframe(spark, dataset, "train", data_dir=data_dir, classes=classes),
            "test_df": load_dataframe(spark, dataset, "test", data_dir=data_dir, classes=classes),
            "class_names": [names[c] for c in classes] if classes else list(names),
            "dataset": dataset, "classes": classes}


def _image_folder_inputs(spark, args: argparse.Namespace, folder: str,
                         config: TrainConfig) -> tuple[TrainConfig, dict]:
    """An image folder's splits (described on the console) as TrainRun.train takes them, with the config
    given their image shape."""
    from .images import read_image_folder

    images = read_image_folder(spark, folder, image_size=args.image_size, channels=args.channels,
                               test_fraction=args.test_fraction, seed=config.seed,
                               skip_bad_images=args.skip_bad_images)
    config = config.replace(image_shape=tuple(images.image_shape))
    print(_describe_images(images), flush=True)
    empty = [split for split, rows in (("training", images.train_rows), ("test", images.test_rows)) if not rows]
    if empty:
        raise DFNetError(f"--image-folder {folder}: the {' and '.join(empty)} split holds no images; add "
                         f"images, or change --test-fraction {args.test_fraction}")
    return config, {"train_df": images.train, "test_df": images.test, "class_names": images.class_names,
                    "dataset": "image-folder", "metrics": _image_metrics(images, folder)}


def _mlflow_logger(args: argparse.Namespace, target: Path):
    """An :class:`~dfnet.tracking.MLflowLogger` for ``--mlflow`` (MLflow's own INFO lines kept off the
    console unless ``--verbose``), else None; fails before training when MLflow is not installed."""
    if not args.mlflow:
        if args.mlflow_experiment:
            raise DFNetError("--mlflow-experiment names where --mlflow logs; pass --mlflow too")
        return None
    import logging

    from .tracking import MLflowLogger

    if not args.verbose:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MLflowLogger(experiment=args.mlflow_experiment, run_name=target.name)


def predict_command(args: argparse.Namespace) -> int:
    from pyspark.sql import functions as F

    from .datasets import check_classes, load_dataframe
    from .model import TrainedModel
    from .session import get_or_create_spark
    from .metastore import wait_for_catalog
    from .tables import PREDICTIONS_SCHEMA, check_can_write, check_table_name, quote_table_name, write_predictions

    folder = Path(args.model)
    run = {}
    if (folder / "model" / "model.json").is_file():
        run = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
        folder = folder / "model"
    model = TrainedModel.load(folder)
    if args.input_table and (args.dataset or args.classes):
        raise DFNetError("--input-table scores a table; --dataset and --classes choose a data set instead")
    if args.image_folder and (args.input_table or args.dataset or args.classes or args.data_dir):
        raise DFNetError("--image-folder scores image files; --input-table, --dataset, --data-dir and --classes "
                         "choose other rows instead")
    if args.skip_bad_images and not args.image_folder:
        raise DFNetError("--skip-bad-images applies to --image-folder, which was not given")
    dataset = args.dataset or (None if args.image_folder else run.get("dataset"))
    if dataset == "image-folder" and not args.dataset:
        raise DFNetError(f"{args.model} was trained on the image folder {run.get('image_folder')}: name the images "
                         f"to score with --image-folder PATH (or a table with --input-table)")
    if not args.input_table and not args.image_folder and not dataset:
        what = "a run folder whose metrics.json names no data set" if run else \
            "a model folder without the run's metrics.json"
        raise DFNetError(f"{args.model} is {what}: name the rows to score with --dataset or --input-table")
    run_id = args.run_id or model.run_id
    if not run_id:
        raise DFNetError(f"{args.model}: the model has no run id (saved by an older dfnet); pass --run-id")
    spark = get_or_create_spark(args.master, app_name="dfnet-predict", warehouse=args.warehouse, conf=dict(args.conf),
                                verbose=args.verbose, remote=args.remote)
    check_can_write(spark, args.predictions_table, args.mode, PREDICTIONS_SCHEMA, run_id=run_id)
    if args.input_table:
        input_table = quote_table_name(check_table_name(args.input_table))
        wait_for_catalog(spark)
        if not spark.catalog.tableExists(input_table):
            raise DFNetError(f"--input-table {args.input_table}: no such table")
        df = spark.table(input_table)
        source = f"table {args.input_table}"
    elif args.image_folder:
        from .images import read_images

        found = read_images(spark, args.image_folder, image_shape=model.image_shape(),
                            class_names=model.class_names, skip_bad_images=args.skip_bad_images)
        df = found.frame
        source = f"{found.rows} images in {args.image_folder}" + \
            (f" ({found.labelled_rows} labelled by their class folder)" if found.labelled_rows else
             " (unlabelled: no folder is named as one of the model's classes)")
        if found.skipped_count:
            source += f"; skipped {found.skipped_count} unreadable file(s): " + \
                "; ".join(f"{p}: {e}" for p, e in found.skipped[:3])
    else:
        classes = args.classes if args.classes is not None else run.get("classes")
        if classes:
            classes = check_classes(dataset, classes)
        df = load_dataframe(spark, dataset, args.split, data_dir=args.data_dir, classes=classes)
        source = f"{dataset} {args.split}" + (f" classes {list(classes)}" if classes else "")
    label_col, id_col = args.label_col or None, args.id_col or None
    table = write_predictions(model, df, args.predictions_table, mode=args.mode, run_id=run_id,
                              features_col=args.features_col, label_col=label_col, id_col=id_col,
                              keep_image=not args.no_image)
    summary = table.where(F.col("run_id") == run_id).agg(F.count(F.lit(1)).alias("rows"),
                        F.avg((F.col("label") == F.col("prediction")).cast("double")).alias("accuracy")).first()
    print(f"Wrote {summary['rows']} rows of predictions (run_id {run_id}) for {source} to table "
          f"{args.predictions_table}"
          + (f" (accuracy {summary['accuracy']:.4f})" if label_col and summary["accuracy"] is not None else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = _bench_argv(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    args.argv = argv  # dfnet bench clusters runs each size as `dfnet ARGV --application SIZE`
    try:
        if args.command == "train":
            return train_command(args)
        if args.command == "predict":
            return predict_command(args)
        if args.command == "bench":
            return bench_command(args)
    except DFNetError as e:
        print(f"dfnet: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
