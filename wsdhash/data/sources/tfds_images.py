"""Materialising TFDS image datasets as files, so they use the same list pipeline.

The images are read with `tfds.decode.SkipDecoding()`, i.e. as the encoded bytes TFDS
stores (the original JPEG or PNG), and written unchanged to
`<output_dir>/images/<split>/<n>.<jpg|png>`. A file that already exists with the same
bytes is left alone, so an interrupted preparation can simply be run again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from wsdhash import atomic_files
from wsdhash.data import protocols

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_extension(data: bytes, where: str) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == _PNG_MAGIC:
        return "png"
    raise ValueError(f"{where}: the stored image is neither JPEG nor PNG.")


def examples(name: str, split: str, data_dir: str | None, download: bool) -> Iterator[dict]:
    """The examples of a TFDS split as numpy dicts, images as encoded bytes."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    try:
        dataset = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=download,
            shuffle_files=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
    except (AssertionError, FileNotFoundError, tfds.core.DatasetNotFoundError) as error:
        raise protocols.MissingDownloadError(
            f"TFDS dataset {name!r} (split {split!r}) is not prepared in "
            f"{data_dir or 'the default TFDS folder'}: {str(error).splitlines()[0]} "
            f"Run with --download (needs internet) or `tfds build {name}` first."
        ) from None
    yield from dataset.as_numpy_iterator()


def write_image(output_dir: str, split: str, number: int, data: bytes) -> str:
    """Writes one encoded image; returns its path relative to `output_dir`."""
    relative = f"images/{split}/{number:06d}.{image_extension(data, f'{split} item {number}')}"
    path = os.path.join(output_dir, relative)
    if os.path.isfile(path) and os.path.getsize(path) == len(data):
        with open(path, "rb") as f:
            if f.read() == data:
                return relative
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_files.write_bytes(path, data)
    return relative


def materialize(
    name: str,
    split: str,
    output_dir: str,
    *,
    data_dir: str | None,
    download: bool,
    label_fn,
    image_key: str = "image",
    progress=None,
) -> tuple[list[str], np.ndarray]:
    """Writes every image of a TFDS split; returns (relative paths, (N, C) labels).

    Args:
        label_fn: example -> (C,) 0/1 label vector.
        progress: wraps the example iterator (e.g. tqdm) to show progress.
    """
    names, labels = [], []
    iterator = examples(name, split, data_dir, download)
    if progress is not None:
        iterator = progress(iterator)
    for number, example in enumerate(iterator):
        names.append(write_image(output_dir, split.replace("+", "_"), number, example[image_key]))
        labels.append(label_fn(example))
    return names, np.asarray(labels, np.uint8)


def train_test_classification(
    name: str,
    num_classes: int,
    output_dir: str,
    *,
    data_dir: str | None,
    download: bool,
    progress=None,
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """A single-label TFDS dataset's `train` then `test` split written as files.

    Returns:
        (relative paths, (N, C) one-hot labels, train positions, test positions).
    """
    parts = [
        materialize(
            name,
            split,
            output_dir,
            data_dir=data_dir,
            download=download,
            label_fn=lambda example: one_hot(example["label"], num_classes),
            progress=progress,
        )
        for split in ("train", "test")
    ]
    names = parts[0][0] + parts[1][0]
    train = np.arange(len(parts[0][0]))
    return (
        names,
        np.concatenate([parts[0][1], parts[1][1]]),
        train,
        np.arange(len(train), len(names)),
    )


def one_hot(label: int, num_classes: int) -> np.ndarray:
    row = np.zeros(num_classes, np.uint8)
    row[int(label)] = 1
    return row
