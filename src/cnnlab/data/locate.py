"""Where dataset files are looked for, and the message when they are nowhere.

Search order for dataset ``name``: the explicit ``data_dir`` (its ``name/`` folder, then
the folder itself), ``$CNNLAB_DATA/name``, the per-user cache
(``$XDG_CACHE_HOME/cnnlab/name`` or ``~/.cache/cnnlab/name``), then the system folders
the dataset registers (e.g. Debian's ``/usr/share/datasets/fashion-mnist``). Inside a
root, ``name`` is also tried with ``_`` for ``-`` and under the registered aliases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from cnnlab.data.download import Fetch, download_files, fetch_url
from cnnlab.data.registry import find_entry
from cnnlab.errors import DataError

DATA_ENV = "CNNLAB_DATA"
OFFLINE_ENV = "CNNLAB_OFFLINE"


@dataclass(frozen=True)
class RemoteFiles:
    """Files of one dataset as published: names with their MD5, and mirrors in order."""

    checksums: Mapping[str, str]
    mirrors: Sequence[str]
    how_to_get: str = ""


def cache_root() -> Path:
    """The per-user cache for downloaded datasets."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cnnlab"


def is_offline() -> bool:
    """True when ``CNNLAB_OFFLINE`` is set to a true value: never touch the network."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def find_data_dirs(name: str, data_dir: Path | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order, whether or not they exist."""
    entry, _ = find_entry(name)
    subfolders = list(dict.fromkeys([entry.name, entry.name.replace("-", "_"), *entry.folder_aliases]))
    candidates: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        candidates += [root / folder for folder in subfolders] + [root]
    if os.environ.get(DATA_ENV):
        root = Path(os.environ[DATA_ENV]).expanduser()
        candidates += [root / folder for folder in subfolders]
    candidates += [cache_root() / folder for folder in subfolders]
    candidates += list(entry.system_dirs)
    return list(dict.fromkeys(candidates))


def find_file(folder: Path, filename: str) -> Path | None:
    """``folder/filename``, or its uncompressed twin when ``filename`` ends in .gz."""
    for candidate in (filename, filename.removesuffix(".gz")):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def locate_files(
    name: str,
    data_dir: Path | None,
    remote: RemoteFiles,
    fetch: Fetch | None = None,
) -> dict[str, Path]:
    """Paths of every file in ``remote.checksums``, all from the first folder that has
    them all; when none has, download them into the cache (unless offline), checking
    each MD5. Raises DataError listing each folder searched and how to get the files."""
    filenames = list(remote.checksums)
    folders = find_data_dirs(name, data_dir)
    for folder in folders:
        found = {filename: find_file(folder, filename) for filename in filenames}
        if all(found.values()):
            return found  # type: ignore[return-value]
    if is_offline():
        raise missing_error(name, folders, remote, f"downloading was skipped because {OFFLINE_ENV} is set")
    entry, _ = find_entry(name)
    target = cache_root() / entry.name
    try:
        download_files(remote.checksums, remote.mirrors, target, fetch or fetch_url)
    except DataError as error:
        raise missing_error(name, folders, remote, f"downloading failed: {error}") from None
    return {filename: target / filename for filename in filenames}


def missing_error(name: str, folders: list[Path], remote: RemoteFiles, reason: str) -> DataError:
    """One paragraph: where we looked, why nothing was downloaded, how to get the files."""
    entry, _ = find_entry(name)
    looked = ", ".join(_describe_folder(folder, list(remote.checksums)) for folder in folders)
    urls = " or ".join(remote.mirrors)
    return DataError(
        f'Dataset "{entry.name}" was not found and {reason}. Looked in, in order: {looked} '
        "(folders not marked do not exist). "
        f"To get it, download {', '.join(remote.checksums)} from {urls} and put them in "
        f"{cache_root() / entry.name}, or in a folder DIR/{entry.name} and pass --data-dir DIR "
        f"(or set {DATA_ENV}=DIR); run once online without {OFFLINE_ENV} and cnnlab downloads "
        f"them itself.{' ' + remote.how_to_get if remote.how_to_get else ''}"
    )


def _describe_folder(folder: Path, filenames: list[str]) -> str:
    if not folder.is_dir():
        return str(folder)
    missing = [filename for filename in filenames if find_file(folder, filename) is None]
    if len(missing) == len(filenames):
        return f"{folder} (exists, none of the files)"
    return f"{folder} (exists, lacks {', '.join(missing)})"


__all__: list[str] = [
    "DATA_ENV",
    "OFFLINE_ENV",
    "RemoteFiles",
    "cache_root",
    "find_data_dirs",
    "find_file",
    "is_offline",
    "locate_files",
    "missing_error",
]
