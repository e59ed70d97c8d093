"""Reader for IDX files, the format of MNIST and Fashion-MNIST, gzip-compressed or raw.

An IDX file is a 4-byte magic number (two zero bytes, a type byte, the number of
dimensions), one big-endian uint32 per dimension, then the values. Only unsigned bytes
(type 0x08) occur in the MNIST family, so only they are accepted.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnlab.errors import DataError, require_memory

UNSIGNED_BYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
MAX_IDX_BYTES = 2**31  # 2 GiB: the largest MNIST-family file (EMNIST's) holds under 1 GiB
MAX_GZIP_RATIO = 1100  # deflate expands at most about 1032 times
CHUNK_BYTES = 1 << 20
_REMEDY = "Delete it and let cnnlab download it again, or copy a good copy in its place."


def read_idx(path: Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a uint8 array shaped by its header.

    The header is read and checked first: the magic number (equal to ``expected_magic`` when given) and the
    size it declares, against `MAX_IDX_BYTES`, this machine's memory and what a file of this size can hold
    (a gzip stream expands at most `MAX_GZIP_RATIO` times). Only then is the payload read, in chunks, never
    beyond the declared size. Raises DataError naming the file, what is wrong and what to do when it is
    truncated, corrupt, of another kind or larger than its header says."""
    path = Path(path)
    try:
        compressed = _is_gzip(path)
        with (gzip.open(path, "rb") if compressed else path.open("rb")) as handle:
            shape, header_size = _read_header(handle, path, expected_magic)
            payload_size = math.prod(shape)
            _check_declared_size(path, shape, header_size + payload_size, compressed)
            payload = _read_payload(handle, path, shape, header_size, payload_size)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is a damaged or truncated gzip file ({error}). {_REMEDY}") from None
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}. Check that it exists and is readable.") from None
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _read_header(handle: BinaryIO, path: Path, expected_magic: int | None) -> tuple[tuple[int, ...], int]:
    """The shape the header declares and the header's length in bytes."""
    start = handle.read(4)
    if len(start) < 4:
        raise DataError(f"{path} is {len(start)} bytes long, too short for an IDX header. {_REMEDY}")
    magic = int.from_bytes(start, "big")
    n_dimensions = start[3]
    if start[:2] != b"\x00\x00" or start[2] != UNSIGNED_BYTE or not 1 <= n_dimensions <= 4:
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
    sizes = handle.read(4 * n_dimensions)
    header_size = 4 + 4 * n_dimensions
    if len(sizes) < 4 * n_dimensions:
        raise DataError(f"{path} ends inside its IDX header ({4 + len(sizes)} bytes). {_REMEDY}")
    return tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(n_dimensions)), header_size


def _check_declared_size(path: Path, shape: tuple[int, ...], declared_size: int, compressed: bool) -> None:
    """Refuse a header that promises more than the cap, the memory or the file can hold, before reading on."""
    file_size = path.stat().st_size
    promise = f"its header promises shape {shape}, {declared_size:,} bytes in all"
    if declared_size > MAX_IDX_BYTES:
        raise DataError(f"{path}: {promise}, more than the {MAX_IDX_BYTES // 2**30} GiB cnnlab reads from one IDX "
                        f"file; it is damaged or not a dataset file. {_REMEDY}")
    if compressed and declared_size > file_size * MAX_GZIP_RATIO:
        raise DataError(f"{path}: {promise}, more than a gzip file of {file_size:,} bytes can expand to; it is "
                        f"damaged or made to exhaust memory. {_REMEDY}")
    if not compressed and declared_size != file_size:
        problem = "truncated" if file_size < declared_size else "longer than its header says"
        raise DataError(f"{path} is {problem}: {promise}, but it holds {file_size:,} bytes. {_REMEDY}")
    require_memory(declared_size, f"Reading {path}", _REMEDY, DataError)


def _read_payload(handle: BinaryIO, path: Path, shape: tuple[int, ...], header_size: int, size: int) -> bytearray:
    """Exactly ``size`` bytes, read in chunks; DataError when the file holds fewer or more."""
    payload = bytearray(size)
    view, filled = memoryview(payload), 0
    while filled < size:
        count = handle.readinto(view[filled : filled + CHUNK_BYTES])
        if not count:
            break
        filled += count
    extra = handle.read(1)
    if filled < size or extra:
        problem = "truncated" if filled < size else "longer than its header says"
        held = f"{header_size + filled:,} bytes" if filled < size else "more"
        raise DataError(f"{path} is {problem}: its header promises shape {shape}, {header_size + size:,} bytes "
                        f"in all, but it holds {held}. {_REMEDY}")
    return payload


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


def _is_gzip(path: Path) -> bool:
    """Decide by content, not name: some mirrors serve raw files under a .gz name."""
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"
