"""CIFAR-10 as published: ``cifar-10-python.tar.gz``, 50,000 train and 10,000 test 32x32
colour images in 10 classes, as pickled batches.

The archive (or its extracted ``cifar-10-batches-py/`` folder) is looked for in the usual
folders (`cnnlab.data.locate`) and, when absent and online, downloaded and checked
against its MD5 (the one torchvision's ``datasets/cifar.py`` lists, ``CIFAR10.tgz_md5``).
The batches are Python 2 pickles; they are read with `RestrictedUnpickler`, which admits
numpy's array reconstruction and nothing else, so a tampered file cannot run code.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.locate import RemoteFiles, find_data_dirs, locate_files
from cnnlab.data.registry import Dataset, register_dataset
from cnnlab.data.safe_pickle import load_restricted_pickle
from cnnlab.errors import DataError

NAME = "cifar10"
ARCHIVE = "cifar-10-python.tar.gz"
BATCHES_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{number}" for number in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MAX_BATCH_BYTES = 256 << 20  # a batch file is 30 MiB; larger ones are refused before they are read
IMAGE_SHAPE = (3, 32, 32)  # each row of a batch: 1024 red, 1024 green, 1024 blue values, row-major

CIFAR10_REMOTE = RemoteFiles(
    checksums={ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
    mirrors=["https://www.cs.toronto.edu/~kriz/"],
    how_to_get=(
        f"The extracted {BATCHES_FOLDER}/ folder works as well as the archive. Offline, the JPEG copy "
        "of CIFAR-10 (cifar10-jpeg.tar.gz) loads as the dataset cifar10-jpeg."
    ),
)
_REMEDY = "Delete it and let cnnlab download the archive again, or put a good copy in its place."


@register_dataset(NAME, folder_aliases=("cifar-10",))
def load_cifar10(data_dir: Path | None) -> Dataset:
    """CIFAR-10, 32x32 colour, 10 classes, 50,000 train / 10,000 test (the original pickled batches)."""
    source = find_local_copy(data_dir) or locate_files(NAME, data_dir, CIFAR10_REMOTE)[ARCHIVE]
    contents = read_batch_files(source)
    train = [parse_batch(contents[name], f"{source}: {name}") for name in TRAIN_BATCHES]
    test_images, test_labels = parse_batch(contents[TEST_BATCH], f"{source}: {TEST_BATCH}")
    return Dataset(
        name=NAME,
        classes=parse_class_names(contents[META], f"{source}: {META}"),
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
        source=str(source),
    )


def find_local_copy(data_dir: Path | None) -> Path | None:
    """The first archive or extracted batches folder in the search folders, or None."""
    for folder in find_data_dirs(NAME, data_dir):
        if (folder / ARCHIVE).is_file():
            return folder / ARCHIVE
        if (folder / BATCHES_FOLDER).is_dir():
            return folder / BATCHES_FOLDER
    return None


def read_batch_files(source: Path) -> dict[str, bytes]:
    """The content of every batch and of the metadata file, from the archive (read in
    memory, nothing extracted) or from the extracted folder. Raises DataError naming
    ``source`` and the files it lacks."""
    wanted = [*TRAIN_BATCHES, TEST_BATCH, META]
    contents: dict[str, bytes] = {}
    if source.is_dir():
        for name in wanted:
            if (source / name).is_file():
                _check_batch_size(source / name, (source / name).stat().st_size)
                contents[name] = (source / name).read_bytes()
    else:
        members = {f"{BATCHES_FOLDER}/{name}": name for name in wanted}
        try:
            with tarfile.open(source, "r:*") as archive:
                for member in archive:
                    if member.isfile() and member.name in members:  # plain files only: links are ignored
                        _check_batch_size(f"{source}: {member.name}", member.size)  # before reading it
                        contents[members[member.name]] = archive.extractfile(member).read()  # type: ignore[union-attr]
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise DataError(f"{source} is not a readable tar.gz archive ({error}). {_REMEDY}") from None
    missing = [name for name in wanted if name not in contents]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)} ({BATCHES_FOLDER}/...); it is incomplete or another archive. {_REMEDY}")
    return contents


def _check_batch_size(origin: Path | str, n_bytes: int) -> None:
    if n_bytes > MAX_BATCH_BYTES:
        raise DataError(f"{origin} is {n_bytes:,} bytes, more than the {MAX_BATCH_BYTES // 2**20} MiB a CIFAR-10 "
                        f"batch file may be (each is about 30 MiB); it is not a CIFAR-10 batch. {_REMEDY}")


def parse_batch(content: bytes, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch as uint8 images (N, 3, 32, 32) and int64 labels (N,). Raises DataError
    naming ``origin`` when it is not a CIFAR-10 batch."""
    batch = load_restricted_pickle(content, origin)
    data, labels = _field(batch, "data", origin), _field(batch, "labels", origin)
    size = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        described = f"{data.dtype} shaped {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{origin}: its data is {described}, not uint8 rows of {size} values. {_REMEDY}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{origin}: its labels are not a list of integers. {_REMEDY}") from None
    if labels.shape != (len(data),):
        raise DataError(f"{origin} holds {len(data)} images but {labels.size} labels. {_REMEDY}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise DataError(f"{origin} holds label {int(labels.max())}, outside 0..{len(CIFAR10_CLASSES) - 1}. {_REMEDY}")
    return data.reshape(-1, *IMAGE_SHAPE).copy(), labels


def parse_class_names(content: bytes, origin: str) -> list[str]:
    """The ten class names from ``batches.meta``."""
    names = _field(load_restricted_pickle(content, origin), "label_names", origin)
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES):
        raise DataError(f"{origin} does not list the {len(CIFAR10_CLASSES)} CIFAR-10 class names. {_REMEDY}")
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]


def _field(batch: Any, key: str, origin: str) -> Any:
    """``batch[key]``: Python 2 wrote the keys as byte strings; accept text keys too."""
    if isinstance(batch, dict):
        for candidate in (key.encode(), key):
            if candidate in batch:
                return batch[candidate]
    raise DataError(f'{origin} is not a CIFAR-10 batch: it has no "{key}" entry. {_REMEDY}')


__all__ = ["CIFAR10_CLASSES", "CIFAR10_REMOTE", "load_cifar10", "parse_batch", "read_batch_files"]
