"""Decoding image files: a single-process Pillow loop against dfnet.images.read_image_folder, in one run.

    python benchmarks/decode.py [--images 10000] [--sizes 28,112] [--jpeg-share 0.5] [--rounds 3]

For each side length of --sizes, writes --images real Fashion-MNIST training images (grey; 28 is
the original, a larger side is the image upscaled with Pillow's bicubic filter, standing for
photos that cost more to decode; PNG, and JPEG for a --jpeg-share of them) into class folders
in a temporary folder (the files then sit in the page cache for both ways), then measures
images per second of:

  pillow-loop      one Python process: for each file Image.open, load, convert("L"), numpy
                   float32 / 255 (the features dfnet trains on), kept in a list
  pillow-2-procs   the same loop split over 2 processes (multiprocessing), the upper bound of
                   this machine's 2 cores for any decoder that uses Pillow
  dfnet-read       read_image_folder on local[2]: the listing job, then the one decoding pass
                   into the persisted intermediate with its check (image_shape, bad files)
  dfnet-read+features
                   then materializing the training frame's features over the persisted
                   intermediate (to_features, sum of the arrays' sizes)

Warm: one untimed round first (the JVM needs its first jobs), then --rounds timed rounds,
interleaved; medians count. The machine's load average is saved too: other processes on it
slow every way alike. Saves benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import default_data_dir, environment, save_results
from PIL import Image
from pyspark.sql import functions as F

from dfnet.datasets import DATASETS, read_idx
from dfnet.images import read_image_folder
from dfnet.session import get_or_create_spark

WAYS = ("pillow-loop", "pillow-2-procs", "dfnet-read", "dfnet-read+features")


def write_images(root: Path, data_dir: str, count: int, jpeg_share: float, side: int) -> list[str]:
    folder = Path(data_dir) / "fashion-mnist"
    pixels = read_idx(folder / "train-images-idx3-ubyte.gz")[:count]
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")[:count]
    names = [n.replace("/", "-") for n in DATASETS["fashion-mnist"].class_names]
    files = []
    every = round(1 / jpeg_share) if jpeg_share > 0 else 0
    for i, (image, label) in enumerate(zip(pixels, labels)):
        target = root / names[label]
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{i:05d}.{'jpg' if every and i % every == 0 else 'png'}"
        im = Image.fromarray(image)
        if side != image.shape[0]:
            im = im.resize((side, side), Image.Resampling.BICUBIC)
        im.save(path)
        files.append(str(path))
    return files


def pillow_features(files: list[str]) -> list[np.ndarray]:
    out = []
    for path in files:
        with Image.open(path) as im:
            im.load()
            out.append(np.divide(np.asarray(im.convert("L")).reshape(-1), 255.0, dtype=np.float32))
    return out


def pillow_count(files: list[str]) -> int:
    return sum(len(f) for f in pillow_features(files))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--sizes", default="28,112", help="image side lengths, one case each")
    parser.add_argument("--jpeg-share", type=float, default=0.5, help="share of the files written as JPEG")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="decode")
    args = parser.parse_args(argv)

    sides = [int(v) for v in args.sizes.split(",")]
    # The pool's processes are forked before the JVM starts.
    with multiprocessing.get_context("fork").Pool(2) as pool:
        spark = get_or_create_spark(args.master, app_name="dfnet-bench-decode")
        env = {**environment(spark), "load_average_at_start": os.getloadavg()}
        cases = [measure(spark, pool, args, side) for side in sides]
    env["load_average_at_end"] = os.getloadavg()

    table = ["| images | way | median seconds | images / s | vs the Pillow loop |", "|---|---|---|---|---|"]
    for case in cases:
        rate = case["images_per_second"]
        for w in WAYS:
            table.append(f"| {args.images:,} {case['side']}x{case['side']} | {w} | {case['median_seconds'][w]:.2f} | "
                         f"{rate[w]:,.0f} | {rate[w] / rate['pillow-loop']:.2f}x |")
    print("\n".join(table))
    path = save_results(args.name, {"environment": env, "options": vars(args), "results": cases, "table": table})
    print(f"saved {path}")
    return 0


def measure(spark, pool, args, side: int) -> dict:
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    check = None
    with tempfile.TemporaryDirectory(prefix="dfnet-bench-decode-") as tmp:
        root = Path(tmp) / "images"
        files = write_images(root, args.data_dir, args.images, args.jpeg_share, side)
        size_bytes = sum(os.path.getsize(f) for f in files)
        print(f"{len(files)} files of {side}x{side}, {size_bytes / 1e6:.1f} MB in {root}", flush=True)
        halves = [files[0::2], files[1::2]]
        values_per_image = side * side
        for r in range(args.rounds + 1):
            t = time.perf_counter()
            features = pillow_features(files)
            seconds["pillow-loop"].append(time.perf_counter() - t)

            t = time.perf_counter()
            values = sum(pool.map(pillow_count, halves))
            seconds["pillow-2-procs"].append(time.perf_counter() - t)
            assert values == len(files) * values_per_image

            t = time.perf_counter()
            folder = read_image_folder(spark, root, test_fraction=0.0)
            read = time.perf_counter() - t
            values = folder.train.agg(F.sum(F.size("image")).alias("n")).first()["n"]
            total = time.perf_counter() - t
            seconds["dfnet-read"].append(read)
            seconds["dfnet-read+features"].append(total)
            assert values == len(files) * values_per_image and folder.train_rows == len(files)
            if check is None:  # untimed: the same values both ways
                spark_sum = folder.train.agg(F.sum(F.aggregate("image", F.lit(0.0).cast("double"),
                                                               lambda acc, x: acc + x)).alias("s")).first()["s"]
                check = {"pillow_sum": float(sum(f.astype(np.float64).sum() for f in features)),
                         "dfnet_sum": float(spark_sum), "partitions": folder.decoded.rdd.getNumPartitions()}
            folder.unpersist()
            label = "warm-up" if r == 0 else f"round {r}"
            print(f"{side}x{side} {label}: " + "  ".join(f"{w} {seconds[w][-1]:.2f} s" for w in WAYS), flush=True)
    med = {w: statistics.median(seconds[w][1:]) for w in WAYS}
    rate = {w: args.images / med[w] for w in WAYS}
    return {"side": side, "images": args.images, "bytes": size_bytes, "median_seconds": med,
            "images_per_second": rate, "seconds": seconds,
            "dfnet_over_pillow_loop": rate["dfnet-read+features"] / rate["pillow-loop"],
            "dfnet_read_over_pillow_loop": rate["dfnet-read"] / rate["pillow-loop"], "check": check}


if __name__ == "__main__":
    sys.exit(main())
