"""``imagefolder:PATH``: your own images, one folder per class.

PATH is a folder laid out as ``PATH/<class>/*`` (a seeded, stratified test split is then
held out: ``test_fraction``, ``split_seed``) or ``PATH/train/<class>/*`` with
``PATH/test/<class>/*``; or a .zip/.tar/.tar.gz/.tgz/.tar.bz2/.tar.xz archive of such a
folder (one top folder inside is fine), which is checked and extracted into the cache.
Images are decoded once to one size and colour mode (see `cnnlab.data.images`) and the
arrays cached, keyed by the archive's SHA-256 or by the files' names, sizes and times.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnlab.data.archives import ARCHIVE_SUFFIXES, extracted_archive, is_archive
from cnnlab.data.decoded_cache import cache_file, folder_fingerprint, load_cached, save_cached, text_array
from cnnlab.data.image_tree import ImageTree, decode_tree, scan_image_tree, show_notes, single_top_folder, stratified_split
from cnnlab.data.images import HeightWidth
from cnnlab.data.locate import DATA_ENV, cache_root
from cnnlab.data.registry import Dataset, DatasetConfig, register_dataset
from cnnlab.errors import DataError, shorten
from cnnlab.runs import file_digest

NAME = "imagefolder"
CACHED_KEYS = ("classes", "notes")  # and the images and labels of train and test, or of all
_USAGE = (
    "Give a folder of your images (PATH/<class>/*.jpg, or PATH/train/<class>/* with PATH/test/<class>/*) "
    f"or an archive of one ({', '.join(ARCHIVE_SUFFIXES)}) as imagefolder:PATH; a relative PATH is looked "
    f"for in the current folder, then in --data-dir and ${DATA_ENV}."
)


@register_dataset(NAME, takes_argument=True, takes_config=True)
def load_imagefolder(data_dir: Path | None, argument: str, *, config: DatasetConfig) -> Dataset:
    """Your own images: a folder PATH/<class>/* or PATH/{train,test}/<class>/*, or an archive of one."""
    path = resolve_image_path(argument, data_dir)
    size = config.image_height_width
    if is_archive(path):
        cache = cache_file(NAME, ["archive", file_digest(path), size])
        arrays = load_cached(cache, CACHED_KEYS) or _decode_archive(path, size, cache)
    elif path.is_dir():
        tree = scan_image_tree(path)
        cache = cache_file(NAME, ["folder", str(path.resolve()), folder_fingerprint(tree.files(), tree.root), size])
        arrays = load_cached(cache, CACHED_KEYS) or _decode_and_save(tree, size, cache, path.name)
    else:
        raise DataError(f"{path} is a file but not an archive cnnlab can read. {_USAGE}")
    show_notes([str(note) for note in arrays["notes"]], f"{NAME}:{argument}")
    return _as_dataset(f"{NAME}:{argument}", path, arrays, config)


def resolve_image_path(argument: str, data_dir: Path | None) -> Path:
    """The folder or archive ``argument`` names: as given (``~`` expanded), else, when
    relative, inside ``data_dir`` or ``$CNNLAB_DATA``. Raises DataError listing where it
    looked when it is nowhere."""
    if not argument.strip():
        raise DataError(f"imagefolder needs the path of your images after the colon. {_USAGE}")
    given = Path(argument.strip()).expanduser()
    candidates = [given]
    if not given.is_absolute():
        roots = [data_dir, os.environ.get(DATA_ENV)]
        candidates += [Path(root).expanduser() / given for root in roots if root]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = ", ".join(str(candidate) for candidate in dict.fromkeys(candidates))
    raise DataError(f'The images "{shorten(argument)}" were not found (looked at {shorten(looked, 600)}). {_USAGE}')


def _decode_archive(archive: Path, size: HeightWidth | None, cache: Path) -> dict[str, np.ndarray]:
    with extracted_archive(archive, cache_root() / NAME) as folder:
        tree = scan_image_tree(single_top_folder(folder))
        return _decode_and_save(tree, size, cache, archive.name)


def _decode_and_save(tree: ImageTree, size: HeightWidth | None, cache: Path, label: str) -> dict[str, np.ndarray]:
    arrays, notes = decode_tree(tree, size, colour=None, description=f"{NAME}: decoding {label}")
    arrays.update(classes=text_array(tree.classes), notes=text_array(notes))
    save_cached(cache, arrays)
    return arrays


def _as_dataset(name: str, path: Path, arrays: dict[str, np.ndarray], config: DatasetConfig) -> Dataset:
    classes = [str(label) for label in arrays["classes"]]
    if "test_images" in arrays:
        return Dataset(
            name=name, classes=classes, source=f"{path} (train and test folders)",
            train_images=arrays["train_images"], train_labels=arrays["train_labels"],
            test_images=arrays["test_images"], test_labels=arrays["test_labels"],
        )
    images, labels = arrays["all_images"], arrays["all_labels"]
    train, test = stratified_split(labels, config.test_fraction, config.split_seed)
    if len(test) == 0:
        raise DataError(
            f"{path} has too few images to hold out a test split: each class needs at least two images. "
            "Add images, or give separate PATH/train/<class>/ and PATH/test/<class>/ folders."
        )
    return Dataset(
        name=name, classes=classes,
        source=f"{path} (class folders; stratified {config.test_fraction:g} test split, seed {config.split_seed})",
        train_images=images[train], train_labels=labels[train],
        test_images=images[test], test_labels=labels[test],
    )


__all__ = ["load_imagefolder", "resolve_image_path"]
