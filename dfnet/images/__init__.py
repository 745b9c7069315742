"""Images as training rows: folders of image files, and frames of Spark's ``binaryFile`` and
``image`` sources, become the frame :func:`dfnet.train.fit` takes,
``id long, image array<float>, label int, path string``.

Every way in goes through ONE intermediate, decoded once (and persisted by the readers here)::

    path string, pixels binary, height int, width int, channels int, error string

``pixels`` holds the image's uint8 values row-major over (height, width, channels), channels
last; ``channels`` is 1 (grey) or 3 (RGB) as decoded; ``error`` is null for a readable image
and a short reason otherwise (``pixels`` is then null). The modules, one job each:

- :mod:`~dfnet.images.decode`: :func:`decode_binary` (file bytes -> the intermediate, Pillow in
  the executors inside a vectorized Arrow UDF), :func:`from_image_source` (the struct of
  ``spark.read.format("image")`` -> the intermediate), :func:`to_features` (the intermediate ->
  ``array<float>`` of H*W*C values in [0, 1]).
- :mod:`~dfnet.images.checks`: :func:`check_decoded`, one aggregate job -> :class:`ImageCheck`
  (bad files, sizes, colour, the resolved shape), raising
  :class:`~dfnet.errors.ImageFolderError` naming the file; ``decode_and_check``, the one step
  that persists the intermediate, checks it and releases it when the check fails.
- :mod:`~dfnet.images.layout`: a folder's class folders (the one class-folder rule), row ids,
  the listing job.
- :mod:`~dfnet.images.folders`: :func:`read_image_folder` (``root/<class>/<image>`` or
  ``root/train|test/<class>/<image>`` -> :class:`ImageFolder` with lazy ``train`` / ``test``)
  and :func:`read_images` (every image under a folder, to score -> :class:`ImageFiles`).
- :mod:`~dfnet.images.frames`: :func:`as_training_frame` and :func:`is_image_column`, what
  ``fit`` and ``predict`` call on a user's frame.

Only the DataFrame API, Spark's readers and Arrow UDFs: the same code runs on a classic session
and on Spark Connect. Pillow is an optional extra (``pip install 'dfnet[images]'``), imported
only where images are decoded.

Example
-------
>>> from dfnet.images import read_image_folder
>>> folder = read_image_folder(spark, "/data/clothes", image_size=(28, 28))  # doctest: +SKIP
>>> folder.class_names, folder.image_shape, folder.train_rows  # doctest: +SKIP
(['Bag', 'Coat', 'Dress'], (28, 28, 1), 2400)
>>> model = fit(folder.train, TrainConfig(epochs=5))  # doctest: +SKIP
>>> folder.unpersist()  # doctest: +SKIP
"""

from dfnet.images.checks import MAX_EXAMPLES, ImageCheck, check_decoded
from dfnet.images.decode import (DECODED_COLUMNS, DECODED_TYPE, IMAGE_SOURCE_FIELDS, PILLOW_MISSING, decode_binary,
                                 from_image_source, to_features)
from dfnet.images.folders import (BYTES_PER_TASK, IMAGES_PER_TASK, ImageFiles, ImageFolder, read_image_folder,
                                  read_images)
from dfnet.images.frames import as_training_frame, is_image_column
from dfnet.images.layout import IMAGE_EXTENSIONS

__all__ = [
    "BYTES_PER_TASK", "DECODED_COLUMNS", "DECODED_TYPE", "IMAGES_PER_TASK", "IMAGE_EXTENSIONS", "IMAGE_SOURCE_FIELDS",
    "MAX_EXAMPLES", "PILLOW_MISSING", "ImageCheck", "ImageFiles", "ImageFolder", "as_training_frame", "check_decoded",
    "decode_binary", "from_image_source", "is_image_column", "read_image_folder", "read_images", "to_features",
]
