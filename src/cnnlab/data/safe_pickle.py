"""Loading pickled dataset files without letting them run code.

A pickle is a small program: it may name any importable function (``os.system``,
``builtins.eval``) and call it while it is being loaded. Dataset files such as CIFAR-10's
batches need only plain containers (dict, list, bytes, int, which need no import) and
numpy's array reconstruction, so `RestrictedUnpickler` admits exactly those globals and
refuses every other one before it is imported, let alone called.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from typing import Any

import numpy as np

from cnnlab.errors import DataError


def _numpy_reconstruct() -> Any:
    try:  # numpy >= 2 keeps it in numpy._core; numpy 1 in numpy.core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


MAX_ARRAY_BYTES = 1 << 30  # 1 GiB: a CIFAR-10 batch's array is 30 MiB
_reconstruct = _numpy_reconstruct()


class ArrayTooLarge(ValueError):
    """A pickled array asks for more memory than any dataset file's array needs."""


def checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct`` (which allocates ``shape`` of ``dtype`` at once), refusing arrays over
    `MAX_ARRAY_BYTES` and anything but an ndarray before allocating. A pickled array's data arrive later
    (its state) and can be no larger than the file."""
    if subtype is not np.ndarray:
        raise ArrayTooLarge(f"an array of type {subtype!r} instead of numpy.ndarray")
    sizes = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(size, int) and size >= 0 for size in sizes):
        raise ArrayTooLarge(f"an array of shape {str(shape)[:80]}")
    n_bytes = math.prod(sizes) * np.dtype(dtype).itemsize
    if n_bytes > MAX_ARRAY_BYTES:
        raise ArrayTooLarge(f"an array of shape {sizes} ({n_bytes:,} bytes), more than the "
                            f"{MAX_ARRAY_BYTES // 2**30} GiB a dataset file's array may be")
    return _reconstruct(subtype, shape, dtype)


# (module, name) -> the object itself. Pickles written by numpy 1 (and by Python 2, as
# the CIFAR-10 batches are) name numpy.core; numpy 2 writes numpy._core. Both map to the
# same function, so the deprecated numpy.core module is never imported.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): checked_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `ALLOWED_GLOBALS`; any other global is refused
    with a DataError naming ``origin`` (the file) and the global it asked for.

    Strings written by Python 2 are read as bytes (``encoding="bytes"``), as numpy's
    array state and the CIFAR-10 dictionaries (keys ``b"data"``, ``b"labels"``) need."""

    def __init__(self, file: io.BufferedIOBase, origin: str) -> None:
        super().__init__(file, encoding="bytes")
        self.origin = origin

    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(
                f"Refused to load {self.origin}: it asks to call {module}.{name}, which a dataset file "
                "never needs (only numpy arrays, lists, dicts and strings are allowed), so it was not run. "
                "The file is damaged, of another kind, or made to run code on your machine: delete it "
                "and get the dataset again from its official source."
            )
        return allowed


def load_restricted_pickle(content: bytes, origin: str) -> Any:
    """Unpickle ``content`` with `RestrictedUnpickler`. Raises DataError naming
    ``origin`` when the pickle asks for a global that is not allowed, or is not a
    readable pickle at all (truncated, or another kind of file)."""
    try:
        return RestrictedUnpickler(io.BytesIO(content), origin).load()
    except DataError:
        raise
    except (ArrayTooLarge, MemoryError, OverflowError) as error:
        raise DataError(
            f"Refused to load {origin}: it asks for {error or 'more memory than this machine has'}; nothing was "
            "allocated. The file is damaged or made to exhaust memory: delete it and get the dataset again from "
            "its official source."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, struct.error) as error:
        raise DataError(
            f"{origin} is not a readable pickle ({type(error).__name__}: {error}); it is truncated or "
            "damaged. Delete it and get the dataset again."
        ) from None


__all__ = ["ALLOWED_GLOBALS", "MAX_ARRAY_BYTES", "checked_reconstruct", "RestrictedUnpickler", "load_restricted_pickle"]
