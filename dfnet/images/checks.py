"""Checking the decoded intermediate: one aggregate job finds the bad files, the sizes and the
colour, and resolves the shape every image becomes (:class:`ImageCheck`).

:func:`decode_and_check` is the one place that persists the intermediate, runs that job (which
is then also the decoding pass) and releases the cache again when the check fails; the readers
in :mod:`dfnet.images.folders` and :func:`dfnet.images.as_training_frame` all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dfnet.errors import ImageFolderError
from dfnet.files import first_line, spark_errors
from dfnet.images.decode import require_decoded, valid_channels, valid_image_size

#: How many bad files an :class:`ImageCheck` lists (it counts them all).
MAX_EXAMPLES = 10
_BAD_BUCKETS = 1024  # the bad files' examples are gathered in this many groups, so no group holds them all


@dataclass
class ImageCheck:
    """What one checking job (:func:`check_decoded`, :func:`decode_and_check`) found in the intermediate.

    Attributes
    ----------
    frame : DataFrame
        The intermediate that was checked, without its bad rows when ``skip_bad_images``.
    rows : int
        Rows checked, bad ones included.
    bad_count : int
        Rows whose file did not decode.
    bad : list of (path, error)
        The first :data:`MAX_EXAMPLES` of them, by path.
    sizes : list of (height, width, count, example path)
        Each distinct size of the readable images, most common first.
    colour : bool
        Whether any readable image decoded as RGB.
    image_shape : (height, width, channels)
        ``image_size`` or the common size; ``channels`` or 3 if any image is colour, else 1.
    skipped_count, skipped
        ``bad_count`` and ``bad`` when ``skip_bad_images`` left them out; else 0 and [].
    good_rows_by : dict
        Readable rows per value of the column :func:`decode_and_check` was asked to count by
        (``split`` when reading a folder, ``labelled`` when reading files to score); else empty.
    """

    frame: DataFrame
    rows: int
    bad_count: int
    bad: list[tuple[str, str]]
    sizes: list[tuple[int, int, int, str]]
    colour: bool
    image_shape: tuple[int, int, int]
    skipped_count: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    good_rows_by: dict = field(default_factory=dict)
    source: DataFrame | None = field(default=None, repr=False)  # the frame checked (what unpersist releases)

    @property
    def good_rows(self) -> int:
        return self.rows - self.bad_count

    def unpersist(self) -> None:
        """Release the decoded intermediate if it was persisted (as :func:`decode_and_check` does)."""
        (self.source if self.source is not None else self.frame).unpersist()


@dataclass
class _Summary:
    """The counts of :func:`_summarize`'s job, before they are resolved into an :class:`ImageCheck`."""

    rows: int = 0
    bad_count: int = 0
    bad: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict)  # (h, w) -> [count, example]
    colour: bool = False
    good_by: dict = field(default_factory=dict)  # the `by` key -> readable rows


def _summarize(df: DataFrame, by: str | None = None) -> _Summary:
    """One aggregate job: rows per (size, channels) of the readable images and the bad rows'
    examples (gathered in hash buckets, so no single group collects every bad file)."""
    bad = F.col("error").isNotNull()
    keys = [F.when(~bad, F.col("height")).alias("h"), F.when(~bad, F.col("width")).alias("w"),
            F.when(~bad, F.col("channels")).alias("c"),
            F.when(bad, F.pmod(F.xxhash64(F.coalesce(F.col("path"), F.lit(""))), F.lit(_BAD_BUCKETS))).alias("b")]
    if by is not None:
        keys.append(F.col(by).alias("by"))
    examples = F.collect_list(F.when(bad, F.struct(F.coalesce(F.col("path"), F.lit("<no path>")).alias("path"),
                                                   F.col("error").alias("error"))))
    groups = df.groupBy(*keys).agg(F.count(F.lit(1)).alias("n"), F.min("path").alias("example"),
                                   F.slice(F.sort_array(examples), 1, MAX_EXAMPLES).alias("bad")).collect()
    out = _Summary()
    for g in groups:
        out.rows += g["n"]
        if g["b"] is not None:
            out.bad_count += g["n"]
            out.bad.extend((e["path"], e["error"]) for e in g["bad"])
            continue
        size = out.sizes.setdefault((g["h"], g["w"]), [0, None])
        size[0] += g["n"]
        if g["example"] is not None and (size[1] is None or g["example"] < size[1]):
            size[1] = g["example"]
        out.colour |= g["c"] == 3
        if by is not None:
            out.good_by[g["by"]] = out.good_by.get(g["by"], 0) + g["n"]
    out.bad = sorted(out.bad)[:MAX_EXAMPLES]
    return out


def _bad_message(summary: _Summary) -> str:
    path, error = summary.bad[0]
    text = f"{path}: {error}"
    more = summary.bad_count - 1
    if more:
        listed = "; ".join(f"{p}: {e}" for p, e in summary.bad[1:4])
        text += f" (and {more} more bad file{'s' if more > 1 else ''}: {listed}{'; ...' if more > 3 else ''})"
    return text + "; pass skip_bad_images=True (--skip-bad-images) to leave bad files out"


def _sizes_message(sizes: list[tuple[int, int, int, str]]) -> str:
    shown = ", ".join(f"{n} {'is' if n == 1 else 'are'} {h}x{w} (e.g. {example})" for h, w, n, example in sizes[:5])
    if len(sizes) > 5:
        shown += f", and {len(sizes) - 5} more sizes"
    return (f"images differ in size (height x width): {shown}; pass image_size=(H, W) (--image-size H,W) "
            f"to resize them all")


def _resolve(df: DataFrame, summary: _Summary, image_size, channels, skip_bad_images: bool,
             what: str) -> ImageCheck:
    """The check a summary gives, or an ImageFolderError: a bad file (unless skipped), sizes that
    differ without ``image_size``, no readable image to give the shape."""
    if summary.bad_count and not skip_bad_images:
        raise ImageFolderError(_bad_message(summary))
    sizes = sorted(((h, w, n, ex) for (h, w), (n, ex) in summary.sizes.items()), key=lambda s: (-s[2], s[0], s[1]))
    if not sizes and (image_size is None or channels is None):
        found = f"; all {summary.bad_count} are bad, e.g. {summary.bad[0][0]}: {summary.bad[0][1]}" \
            if summary.bad_count else ""
        raise ImageFolderError(f"no readable images in {what}{found}")
    if image_size is None and len(sizes) > 1:
        raise ImageFolderError(_sizes_message(sizes))
    size = image_size or (sizes[0][0], sizes[0][1])
    shape = (int(size[0]), int(size[1]), channels or (3 if summary.colour else 1))
    skipped = summary.bad if skip_bad_images else []
    frame = df.where(F.col("error").isNull()) if skip_bad_images and summary.bad_count else df
    return ImageCheck(frame=frame, rows=summary.rows, bad_count=summary.bad_count, bad=summary.bad, sizes=sizes,
                      colour=summary.colour, image_shape=shape,
                      skipped_count=summary.bad_count if skip_bad_images else 0, skipped=skipped,
                      good_rows_by=summary.good_by, source=df)


def check_decoded(df: DataFrame, *, image_size: tuple[int, int] | None = None, channels: int | None = None,
                  skip_bad_images: bool = False) -> ImageCheck:
    """Check the intermediate in ONE aggregate job (persist ``df`` first and this job is its
    decoding pass, as :func:`decode_and_check` does).

    Raises
    ------
    ImageFolderError
        Naming the first bad file (and counting the rest) unless ``skip_bad_images``, which
        leaves the bad rows out of :attr:`ImageCheck.frame` and lists them in ``skipped``;
        when ``image_size`` is None and the images differ in size, naming one file of each
        size; when no readable image is left to give the shape.
    """
    require_decoded(df)
    return decode_and_check(df, image_size=valid_image_size(image_size), channels=valid_channels(channels),
                            skip_bad_images=skip_bad_images, persist=False)


def decode_and_check(decoded: DataFrame, *, image_size: tuple[int, int] | None, channels: int | None,
                     skip_bad_images: bool, persist: bool = True, folder: str | None = None,
                     by: str | None = None, no_rows: str | None = None) -> ImageCheck:
    """Decode the lazy intermediate once and check it: with ``persist``, the check's one job is
    also the pass that fills the cache, and a check that raises releases the cache again, so a
    failed read leaves nothing cached; after that the returned check owns it
    (:meth:`ImageCheck.unpersist`).

    ``image_size`` and ``channels`` are already checked (see ``valid_image_size``). ``folder``
    names the folder being read: Spark's errors in reading it become an
    :class:`~dfnet.errors.ImageFolderError` naming it (a user's frame, None, lets them through).
    ``by`` names a column whose readable rows are counted per value
    (:attr:`ImageCheck.good_rows_by`); ``no_rows`` is the error when there is no row at all.
    """
    if persist:
        decoded = decoded.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        summary = _summarize_folder(decoded, by, folder) if folder is not None else _summarize(decoded, by)
        if no_rows is not None and summary.rows == 0:
            raise ImageFolderError(no_rows)
        return _resolve(decoded, summary, image_size, channels, skip_bad_images, folder or "the frame")
    except BaseException:
        if persist:
            decoded.unpersist()
        raise


def _summarize_folder(decoded: DataFrame, by: str | None, folder: str) -> _Summary:
    try:
        return _summarize(decoded, by)
    except spark_errors() as exc:
        raise ImageFolderError(f"{folder}: cannot read its images: {first_line(exc)}") from exc
