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

``dfnet bench NAME [ARGS]`` runs ``benchmarks/NAME.py`` of a source checkout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .config import (HIDDEN_ACTIVATIONS, AGGREGATES, DEFAULT_LR, ENGINES, LR_SCHEDULES, MODELS, OPTIMIZERS, PADDINGS, PATCHES, PATCH_ROWS,
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
                     help="how the dataframe engine adds the partitions' sums: agg (groupBy().agg, the driver "
                          "receives one vector) or collect (every partition's vector streamed to the driver "
                          "as Arrow and summed there: faster in every case measured; the driver then holds "
                          "partitions x parameters values)")
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
    b = sub.add_parser("bench", help="run one of the benchmarks in benchmarks/ (source checkout only)",
                       description="Runs benchmarks/<name>.py with the remaining arguments; see each "
                                   "script's --help. Results go to benchmarks/results/.")
    b.add_argument("name", nargs="?", help="benchmark name; omit to list them")
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    return parser


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


BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def available_benchmarks() -> list[str]:
    return sorted(p.stem for p in BENCHMARKS_DIR.glob("*.py") if p.stem != "common") if BENCHMARKS_DIR.is_dir() else []


def bench_command(args: argparse.Namespace) -> int:
    import subprocess

    names = available_benchmarks()
    if not names:
        raise DFNetError(f"no benchmarks found in {BENCHMARKS_DIR}: `dfnet bench` runs the scripts of a source "
                         f"checkout (pip install -e .), which an installed wheel does not include")
    if args.name is None:
        print("benchmarks: " + ", ".join(names) + f"\n(scripts in {BENCHMARKS_DIR}; `dfnet bench NAME --help`)")
        return 0
    name = args.name.replace("-", "_")
    if name not in names:
        raise DFNetError(f"unknown benchmark {args.name!r}; available: {', '.join(names)}")
    return subprocess.call([sys.executable, str(BENCHMARKS_DIR / f"{name}.py"), *args.args])


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, dict]:
    """Merge dfnet defaults <- preset <- explicit options into a validated config and data choice."""
    fields = {"model", "engine", "hidden", "activation", "loss", "init", "dtype", "optimizer", "lr", "lr_schedule",
              "epochs", "schedule", "sample", "batch_size", "local_steps", "seed", "partitions", "kernels",
              "kernel_size", "pool", "conv_activation", "padding", "image_shape", "patches", "patch_rows", "aggregate",
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
    args = build_parser().parse_args(argv)
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
