"""Folders of images, one sub-folder per class: finding the layout, decoding it, and
holding out a stratified test split when the folder has none.

Two layouts are read: ``ROOT/train/<class>/*`` with ``ROOT/test/<class>/*`` (``val``,
``valid`` or ``validation`` may stand for ``test``), and ``ROOT/<class>/*``. Images may sit
in nested folders inside a class folder. Hidden files and folders (``.DS_Store``,
``__MACOSX``) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data.images import (
    IMAGE_SUFFIXES,
    HeightWidth,
    choose_size,
    decode_images,
    is_image_name,
    skipped_message,
    survey_images,
)
from cnnlab.errors import DataError
from cnnlab.runs import log_line

TRAIN_FOLDER = "train"
TEST_FOLDERS = ("test", "val", "valid", "validation")
_LAYOUT_HELP = (
    "cnnlab reads PATH/<class>/<image> (a test split is then held out at random), or "
    "PATH/train/<class>/<image> with PATH/test/<class>/<image>; images are "
    + " ".join(sorted(IMAGE_SUFFIXES))
    + " files."
)


@dataclass
class ImageTree:
    """The image files of a folder, by split (``train`` and ``test``, or ``all`` when the
    folder has no test split), each a list of (file, class index), sorted."""

    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[Path, int]]]

    @property
    def has_test_split(self) -> bool:
        return "test" in self.splits

    def files(self) -> list[Path]:
        return [path for split in self.splits.values() for path, _ in split]


def scan_image_tree(root: Path) -> ImageTree:
    """Find the layout of ``root`` and list its images. Raises DataError naming the
    folder when a class folder is empty or holds no images, when there are no class
    folders, or when train and test have different classes."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder. {_LAYOUT_HELP}")
    folders = {path.name: path for path in _visible_subfolders(root)}
    test_name = next((name for name in TEST_FOLDERS if name in folders), None)
    if TRAIN_FOLDER in folders and test_name is not None:
        train_classes = _read_class_folders(folders[TRAIN_FOLDER])
        test_classes = _read_class_folders(folders[test_name])
        _check_same_classes(folders[TRAIN_FOLDER], train_classes, folders[test_name], test_classes)
        classes = sorted(train_classes)
        return ImageTree(root, classes, {"train": _labelled(train_classes, classes), "test": _labelled(test_classes, classes)})
    class_root = folders[TRAIN_FOLDER] if list(folders) == [TRAIN_FOLDER] else root
    by_class = _read_class_folders(class_root)
    classes = sorted(by_class)
    return ImageTree(class_root, classes, {"all": _labelled(by_class, classes)})


def single_top_folder(folder: Path) -> Path:
    """``folder/top`` when ``top`` is the only thing in ``folder`` (as when an archive
    holds one folder), else ``folder``."""
    entries = [path for path in Path(folder).iterdir() if not _hidden(path.name)]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in (TRAIN_FOLDER, *TEST_FOLDERS):
        return entries[0]
    return Path(folder)


def decode_tree(tree: ImageTree, size: HeightWidth | None, colour: bool | None, description: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Decode every image of ``tree`` to ``size`` (chosen from the images when None) in
    RGB or grey (RGB when any image is in colour, when ``colour`` is None).

    Returns arrays ``<split>_images`` (N, C, H, W) uint8 and ``<split>_labels`` int64 per
    split, and the notes to show the user (the size chosen, the files skipped). Raises
    DataError when a class folder has no readable image."""
    files = tree.files()
    unreadable: set[int] = set()
    notes = []
    if size is None or colour is None:
        survey = survey_images(files)
        unreadable.update(survey.unreadable)
        size, note = choose_size(survey.sizes, size)
        colour = survey.colour if colour is None else colour
        notes += [note] if note else []
    readable = [position for position in range(len(files)) if position not in unreadable]
    images, failed = decode_images((files[position] for position in readable), len(readable), size, colour, description)
    unreadable.update(readable[index] for index in failed)
    # row_of[position]: where the file at ``position`` sits in ``images`` (-1: unreadable)
    row_of = np.full(len(files), -1, dtype=np.int64)
    decoded = [position for position in readable if position not in unreadable]
    row_of[decoded] = np.arange(len(decoded))
    all_labels = np.array([label for entries in tree.splits.values() for _, label in entries], dtype=np.int64)
    arrays: dict[str, np.ndarray] = {}
    start = 0
    for split, entries in tree.splits.items():
        rows = row_of[start : start + len(entries)]
        arrays[f"{split}_images"] = images[rows[rows >= 0]]
        arrays[f"{split}_labels"] = all_labels[start : start + len(entries)][rows >= 0]
        _check_every_class_read(tree, split, entries, arrays[f"{split}_labels"])
        start += len(entries)
    if unreadable:
        notes.append(skipped_message([_relative(files[position], tree.root) for position in sorted(unreadable)]))
    return arrays, notes


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(fraction * n)`` images of each class (at least one of a class
    with two or more, never all of one), chosen with ``seed``. Returns sorted int64
    positions (train, test)."""
    generator = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_test = min(max(int(round(fraction * len(members))), 1), len(members) - 1)
        test.append(generator.permutation(members)[:n_test])
    test_indices = np.sort(np.concatenate(test)) if test else np.empty(0, np.int64)
    train_indices = np.setdiff1d(np.arange(len(labels)), test_indices)
    return train_indices.astype(np.int64), test_indices.astype(np.int64)


def show_notes(notes: list[str], prefix: str) -> None:
    """Print each note as one line on stderr."""
    for note in notes:
        log_line(f"{prefix}: {note}")


def _read_class_folders(folder: Path) -> dict[str, list[Path]]:
    classes = _visible_subfolders(folder)
    if not classes:
        loose = [path.name for path in folder.iterdir() if path.is_file() and is_image_name(path.name)]
        where = f"{len(loose)} images lie directly in it, not in class folders" if loose else "it holds no class folders"
        raise DataError(f"{folder} has no images to read: {where}. {_LAYOUT_HELP}")
    by_class = {}
    for class_folder in classes:
        everything = sorted(path for path in class_folder.rglob("*") if path.is_file() and not _hidden_below(path, class_folder))
        images = [path for path in everything if is_image_name(path.name)]
        if not everything:
            raise DataError(
                f"The class folder {class_folder} is empty. Put that class's images in it, or delete the folder "
                "if the class is not wanted."
            )
        if not images:
            others = ", ".join(path.name for path in everything[:3])
            raise DataError(
                f"The class folder {class_folder} holds no images, only {len(everything)} other files ({others}). "
                f"Images must be {' '.join(sorted(IMAGE_SUFFIXES))} files; convert them, or delete the folder."
            )
        by_class[class_folder.name] = images
    return by_class


def _check_same_classes(train_folder: Path, train: dict, test_folder: Path, test: dict) -> None:
    if set(train) == set(test):
        return
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    parts = [f"only in {train_folder}: {', '.join(only_train)}" if only_train else "",
             f"only in {test_folder}: {', '.join(only_test)}" if only_test else ""]
    raise DataError(
        f"The train and test folders have different classes ({'; '.join(part for part in parts if part)}). "
        "Give both the same class folders, so that a label means the same class in both."
    )


def _check_every_class_read(tree: ImageTree, split: str, entries: list[tuple[Path, int]], labels: np.ndarray) -> None:
    present = set(labels.tolist())
    for label in sorted({label for _, label in entries} - present):
        folder = next(path for path, entry_label in entries if entry_label == label).parent
        raise DataError(
            f"No image in the class folder {folder} ({tree.classes[label]}) could be read: all are damaged or "
            "not really images of the kind their names say. Replace them, or delete the folder."
        )


def _labelled(by_class: dict[str, list[Path]], classes: list[str]) -> list[tuple[Path, int]]:
    return [(path, label) for label, name in enumerate(classes) for path in by_class[name]]


def _visible_subfolders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir() and not _hidden(path.name))


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _hidden_below(path: Path, top: Path) -> bool:
    return any(_hidden(part) for part in path.relative_to(top).parts)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


__all__ = ["ImageTree", "decode_tree", "scan_image_tree", "show_notes", "single_top_folder", "stratified_split"]
