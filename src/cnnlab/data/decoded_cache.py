"""The cache of decoded images, so a folder or archive of images is decoded only once.

Decoded arrays are saved as an uncompressed .npz under ``cache_root()/<dataset>/``,
named by a hash of a key that changes whenever the result would (the archive's SHA-256,
or the files' names, sizes and modification times, plus the decoding options).
Uncompressed because the pixels of photographs barely compress: for CIFAR-10's 60,000
images zlib saves 8% but takes 7 s to write and 2 s to read instead of 0.4 s and 0.8 s.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.locate import cache_root
from cnnlab.errors import CnnlabError, shorten
from cnnlab.runs import load_npz, log_line, write_bytes_atomic

CACHE_VERSION = 2  # 2: EXIF orientation applied, 16-bit grey scaled. Bump when decoding changes, so caches written before are not used


def cache_file(dataset: str, key: Any) -> Path:
    """Where the decoded arrays for ``key`` (any JSON-able value) of ``dataset`` live."""
    text = json.dumps([CACHE_VERSION, key], default=str, separators=(",", ":"))
    return cache_root() / dataset / f"decoded-{hashlib.sha256(text.encode()).hexdigest()[:32]}.npz"


def folder_fingerprint(files: list[Path], root: Path) -> list[tuple[str, int, int]]:
    """(name relative to ``root``, size, modification time in ns) of each file: changes
    when a file is added, removed, renamed or rewritten."""
    fingerprint = []
    for path in files:
        status = path.stat()
        fingerprint.append((path.relative_to(root).as_posix(), status.st_size, status.st_mtime_ns))
    return fingerprint


def load_cached(path: Path, required: tuple[str, ...] = ("notes",), n_classes: int | None = None) -> dict[str, np.ndarray] | None:
    """The arrays saved at ``path``, or None when there are none, or they are damaged or not what cnnlab wrote
    (keys in ``required`` missing, images not uint8 (N, C, H, W), labels not int64 beside them or not below
    ``n_classes`` or the number of saved classes): then the images are decoded again, with a one-line warning."""
    if not path.is_file():
        return None
    try:
        arrays = load_npz(path)
    except (CnnlabError, OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # load_npz's own or numpy's
        problem: str | None = f"{type(error).__name__}: {error}"
    else:
        problem = cache_problem(arrays, required, n_classes)
    if problem is None:
        return arrays
    log_line(f"warning: the decoded-image cache {path} is damaged or was changed ({shorten(problem, 160)}); "
             "decoding the images again")
    return None


def cache_problem(arrays: dict[str, np.ndarray], required: tuple[str, ...], n_classes: int | None) -> str | None:
    """What is wrong with cached ``arrays`` (None when nothing is)."""
    missing = [key for key in required if key not in arrays]
    splits = sorted(key.removesuffix("_images") for key in arrays if key.endswith("_images"))
    if missing or splits not in (["test", "train"], ["all"]):
        return f"missing {', '.join(missing) or 'the images of its splits'}"
    for key in ("notes", "classes"):
        if key in arrays and (arrays[key].dtype.kind != "U" or arrays[key].ndim != 1):
            return f"{key} is not a list of text"
    if n_classes is None and "classes" in arrays:
        n_classes = len(arrays["classes"])
    shapes = set()
    for split in splits:
        images, labels = arrays[f"{split}_images"], arrays.get(f"{split}_labels")
        if images.dtype != np.uint8 or images.ndim != 4 or labels is None or labels.dtype != np.int64 \
                or labels.shape != (len(images),):
            return f"the {split} images or labels are not uint8 (N, C, H, W) with int64 (N,)"
        if len(labels) and (labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes)):
            return f"the {split} labels are outside 0..{(n_classes or 1) - 1}"
        shapes.add(images.shape[1:])
    return None if len(shapes) == 1 else "its splits' images differ in shape"


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save ``arrays`` at ``path`` atomically; a cache that cannot be written costs only
    time, so that is a warning, not an error."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        write_bytes_atomic(path, buffer.getvalue())
    except OSError as error:
        log_line(f"warning: could not cache the decoded images in {path} ({error.strerror or error}); "
                 "they will be decoded again next time")


def text_array(values: list[str]) -> np.ndarray:
    """Strings as a numpy unicode array (saved without pickling)."""
    return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")


__all__ = ["CACHE_VERSION", "cache_problem", "cache_file", "folder_fingerprint", "load_cached", "save_cached", "text_array"]
