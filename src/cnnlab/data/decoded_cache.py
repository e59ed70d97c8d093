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
from cnnlab.runs import load_npz, log_line, write_bytes_atomic

CACHE_VERSION = 1  # bump when decoding changes, so caches written before are not used


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


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays saved at ``path``, or None when there are none or they are damaged
    (then they are decoded again)."""
    if not path.is_file():
        return None
    try:
        return load_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


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


__all__ = ["CACHE_VERSION", "cache_file", "folder_fingerprint", "load_cached", "save_cached", "text_array"]
