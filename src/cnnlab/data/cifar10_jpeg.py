"""``cifar10-jpeg``: every CIFAR-10 image as a JPEG file (IJG quality 75), the copy kept
offline beside the project as ``cifar10-jpeg.tar.gz`` (``cifar10-jpeg/{train,test}/<class>/NNNN.jpg``).

Its pixels are not CIFAR-10's (JPEG drops detail), so results on it are always named
``cifar10-jpeg``; the original is the dataset ``cifar10``. It has no official source, so
it is never downloaded. The archive is read once, from start to end, with every member
checked (`cnnlab.data.archives`) and nothing written but the decoded arrays, which are
cached keyed by the archive's SHA-256: later loads take about a second.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from cnnlab.data.archives import iter_archive_files
from cnnlab.data.cifar10 import CIFAR10_CLASSES
from cnnlab.data.decoded_cache import cache_file, folder_fingerprint, load_cached, save_cached, text_array
from cnnlab.data.image_tree import ImageTree, decode_tree, scan_image_tree, show_notes
from cnnlab.data.images import UnreadableImage, decode_image, is_image_name, skipped_message
from cnnlab.data.locate import DATA_ENV, find_data_dirs
from cnnlab.data.registry import Dataset, register_dataset
from cnnlab.errors import DataError
from cnnlab.runs import file_digest, progress_bar

NAME = "cifar10-jpeg"
ARCHIVE = "cifar10-jpeg.tar.gz"
SIZE = (32, 32)
SPLITS = ("train", "test")
EXPECTED_IMAGES = 60_000  # for the progress bar only
CACHED_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "notes")
_CLASS_INDEX = {name: label for label, name in enumerate(CIFAR10_CLASSES)}


@register_dataset(NAME)
def load_cifar10_jpeg(data_dir: Path | None) -> Dataset:
    """CIFAR-10 as JPEGs (offline copy, not bit-identical), 32x32 colour, 50,000 train / 10,000 test."""
    source = find_cifar10_jpeg(data_dir)
    if source.is_file():
        cache = cache_file(NAME, ["archive", file_digest(source)])
        arrays = load_cached(cache, CACHED_KEYS, len(CIFAR10_CLASSES)) or _decode_archive(source, cache)
    else:
        tree = scan_image_tree(source)
        if tree.classes != CIFAR10_CLASSES or not tree.has_test_split:
            raise DataError(f"{source} is not the cifar10-jpeg folder: it needs train/ and test/ with the class folders {', '.join(CIFAR10_CLASSES)}.")
        cache = cache_file(NAME, ["folder", str(source.resolve()), folder_fingerprint(tree.files(), tree.root)])
        arrays = load_cached(cache, CACHED_KEYS, len(CIFAR10_CLASSES)) or _decode_folder(tree, cache)
    show_notes([str(note) for note in arrays["notes"]], NAME)
    return Dataset(
        name=NAME,
        classes=list(CIFAR10_CLASSES),
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
        source=str(source),
    )


def find_cifar10_jpeg(data_dir: Path | None) -> Path:
    """The archive, or an extracted ``{train,test}/<class>/`` folder, found first in:
    each search folder (`find_data_dirs`) and the root above a ``cifar10-jpeg/`` one.
    Raises DataError saying where it looked and how to get it."""
    looked: list[Path] = []
    for folder in find_data_dirs(NAME, data_dir):
        roots = [folder, folder.parent] if folder.name in (NAME, NAME.replace("-", "_")) else [folder]
        for root in roots:
            if root in looked:
                continue
            looked.append(root)
            if (root / ARCHIVE).is_file():
                return root / ARCHIVE
            if all((root / split / CIFAR10_CLASSES[0]).is_dir() for split in SPLITS):
                return root
    raise DataError(
        f'Dataset "{NAME}" was not found. Looked for {ARCHIVE} or an extracted {NAME}/{{train,test}}/<class>/ '
        f"folder in, in order: {', '.join(str(root) for root in looked)}. It is the offline JPEG copy of CIFAR-10 "
        "(kept beside the project in ../shared/datasets/) and is never downloaded, as it has no official source: "
        f"put {ARCHIVE} in a folder DIR (or DIR/{NAME}) and pass --data-dir DIR or set {DATA_ENV}=DIR. "
        "For the original CIFAR-10, which cnnlab downloads, use the dataset cifar10."
    )


def _decode_archive(archive: Path, cache: Path) -> dict[str, np.ndarray]:
    """Decode the JPEGs straight from the archive stream (faster than extracting 60,000
    small files and deleting them again), sorted by split, class and file name."""
    found: dict[str, list[tuple[int, str, np.ndarray]]] = {split: [] for split in SPLITS}
    unreadable: list[str] = []
    with progress_bar(EXPECTED_IMAGES, f"{NAME}: decoding the JPEGs once (cached afterwards)") as bar:
        for name, content in iter_archive_files(archive):
            parts = PurePosixPath(name).parts
            if len(parts) < 3 or parts[-3] not in SPLITS or not is_image_name(name):
                continue
            split, class_name = parts[-3], parts[-2]
            if class_name not in _CLASS_INDEX:
                raise DataError(f'{archive} holds a folder "{split}/{class_name}", which is not a CIFAR-10 class; is it the cifar10-jpeg archive?')
            try:
                found[split].append((_CLASS_INDEX[class_name], name, decode_image(content, SIZE, colour=True)))
            except UnreadableImage:
                unreadable.append(name)
            bar.update(1)
    arrays: dict[str, np.ndarray] = {}
    for split, entries in found.items():
        entries.sort(key=lambda entry: entry[:2])
        missing = sorted(set(CIFAR10_CLASSES) - {CIFAR10_CLASSES[label] for label, _, _ in entries})
        if missing:
            raise DataError(f"{archive} has no readable {split} images of {', '.join(missing)}; it is incomplete or damaged. Get a good copy.")
        arrays[f"{split}_images"] = np.stack([image for _, _, image in entries])
        arrays[f"{split}_labels"] = np.array([label for label, _, _ in entries], dtype=np.int64)
    arrays["notes"] = text_array([skipped_message(unreadable)] if unreadable else [])
    save_cached(cache, arrays)
    return arrays


def _decode_folder(tree: ImageTree, cache: Path) -> dict[str, np.ndarray]:
    arrays, notes = decode_tree(tree, SIZE, colour=True, description=f"{NAME}: decoding the JPEGs once (cached afterwards)")
    arrays["notes"] = text_array(notes)
    save_cached(cache, arrays)
    return arrays


__all__ = ["find_cifar10_jpeg", "load_cifar10_jpeg"]
