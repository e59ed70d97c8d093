"""Reader for IDX files, the format of MNIST and Fashion-MNIST, gzip-compressed or raw.

An IDX file is a 4-byte magic number (two zero bytes, a type byte, the number of
dimensions), one big-endian uint32 per dimension, then the values. Only unsigned bytes
(type 0x08) occur in the MNIST family, so only they are accepted.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError

UNSIGNED_BYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_REMEDY = "Delete it and let cnnlab download it again, or copy a good copy in its place."


def read_idx(path: Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a uint8 array shaped by its header.

    Checks the magic number (and that it equals ``expected_magic`` when given) and that
    the payload holds exactly the product of the dimensions; raises DataError naming the
    file, what is wrong and what to do when it is truncated, corrupt or of another kind.
    """
    path = Path(path)
    content = _read_bytes(path)
    if len(content) < 4:
        raise DataError(f"{path} is {len(content)} bytes long, too short for an IDX header. {_REMEDY}")
    magic = int.from_bytes(content[:4], "big")
    n_dimensions = content[3]
    if content[:2] != b"\x00\x00" or content[2] != UNSIGNED_BYTE or not 1 <= n_dimensions <= 4:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes: its magic number is 0x{magic:08x}, expected "
            f"0x{IMAGES_MAGIC:08x} (images) or 0x{LABELS_MAGIC:08x} (labels). {_REMEDY}"
        )
    if expected_magic is not None and magic != expected_magic:
        kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
        raise DataError(
            f"{path} should hold {kind} (magic 0x{expected_magic:08x}) but its magic number is "
            f"0x{magic:08x}; is it the wrong file under this name? {_REMEDY}"
        )
    header_size = 4 + 4 * n_dimensions
    if len(content) < header_size:
        raise DataError(f"{path} ends inside its IDX header ({len(content)} bytes). {_REMEDY}")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dimensions))
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(content) != expected_size:
        problem = "truncated" if len(content) < expected_size else "longer than its header says"
        raise DataError(
            f"{path} is {problem}: its header promises shape {shape}, {expected_size} bytes in all, "
            f"but it holds {len(content)} bytes. {_REMEDY}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def read_images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file; returns uint8 (N, 1, H, W) and int64 (N,).

    Raises DataError when the counts differ or a file is not what its role needs."""
    images = read_idx(images_path, expected_magic=IMAGES_MAGIC)
    labels = read_idx(labels_path, expected_magic=LABELS_MAGIC)
    if images.ndim != 3:
        raise DataError(f"{images_path} holds an array shaped {images.shape}; images need (N, H, W). {_REMEDY}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            f"the two files come from different copies or one is damaged. {_REMEDY}"
        )
    return images[:, np.newaxis, :, :].copy(), labels.astype(np.int64)


def _read_bytes(path: Path) -> bytes:
    try:
        if _is_gzip(path):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is a damaged or truncated gzip file ({error}). {_REMEDY}") from None
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}. Check that it exists and is readable.") from None


def _is_gzip(path: Path) -> bool:
    """Decide by content, not name: some mirrors serve raw files under a .gz name."""
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"
