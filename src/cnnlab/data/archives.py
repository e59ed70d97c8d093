"""Reading and extracting archives of images (zip and tar, compressed or not) without
letting any member write outside the folder it is extracted into.

Every member is checked before anything is written: links (symbolic or hard), device
files and pipes, absolute names, and names whose resolved path leaves the target
(``../``) are refused with a DataError naming the archive and the member. tar extraction
then also runs with Python's ``filter="data"``, a second, independent guard.
"""

from __future__ import annotations

import lzma
import posixpath
import stat
import tarfile
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cnnlab.errors import DataError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK_BYTES = 1 << 20
# What reading a damaged archive raises, besides the formats' own errors.
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)


def is_archive(path: Path) -> bool:
    """True when ``path`` is a file whose name ends in one of `ARCHIVE_SUFFIXES`."""
    return Path(path).is_file() and Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, target: Path) -> None:
    """Extract every member of ``archive`` (zip or tar, any compression) into ``target``.

    All members are checked first; when one is a link, a device, has an absolute name or
    would land outside ``target``, DataError names the archive and that member and
    nothing at all is written."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for info in zipped.infolist():
                    _check_zip_member(archive, info, target)
                zipped.extractall(target)
        else:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_tar_member(archive, member, target)
                tar.extractall(target, members=members, filter="data")
    except DataError:
        raise
    except _READ_ERRORS as error:
        raise _unreadable(archive, error) from None


def iter_archive_files(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, content)`` for each regular file of ``archive``, in the
    archive's order, reading it once from start to end and writing nothing to disk.

    Members are checked as `extract_archive` checks them; a refused member raises
    DataError before anything of it is yielded."""
    archive = Path(archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for info in zipped.infolist():
                    _check_zip_member(archive, info)
                    if not info.is_dir():
                        yield info.filename, zipped.read(info)
        else:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    _check_tar_member(archive, member)
                    if member.isfile():
                        yield member.name, tar.extractfile(member).read()  # type: ignore[union-attr]
    except DataError:
        raise
    except _READ_ERRORS as error:
        raise _unreadable(archive, error) from None


@contextmanager
def extracted_archive(archive: Path, parent: Path) -> Iterator[Path]:
    """Extract ``archive`` into a new temporary folder inside ``parent`` and yield it;
    the folder and everything in it is removed when the block ends."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=parent) as folder:
        extract_archive(archive, Path(folder))
        yield Path(folder)


def _check_tar_member(archive: Path, member: tarfile.TarInfo, target: Path | None = None) -> None:
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        _refuse(archive, member.name, f"is a {kind} link (to {member.linkname!r}), which an archive of images never needs")
    if not (member.isfile() or member.isdir()):
        _refuse(archive, member.name, "is a device file or pipe, not a plain file or folder")
    _check_name(archive, member.name, target)


def _check_zip_member(archive: Path, info: zipfile.ZipInfo, target: Path | None = None) -> None:
    if stat.S_ISLNK(info.external_attr >> 16):
        _refuse(archive, info.filename, "is a symbolic link, which an archive of images never needs")
    _check_name(archive, info.filename, target)


def _check_name(archive: Path, name: str, target: Path | None) -> None:
    """Refuse absolute names and names that climb out, by their text and, when
    ``target`` is given, by where they resolve inside it."""
    slashed = name.replace("\\", "/")  # archives made on Windows may use either
    if slashed.startswith("/") or (len(slashed) > 1 and slashed[1] == ":"):
        _refuse(archive, name, "has an absolute path")
    normal = posixpath.normpath(slashed)
    if normal == ".." or normal.startswith("../"):
        _refuse(archive, name, "would be written outside the folder it is extracted into")
    if target is not None:
        root = target.resolve()
        destination = (root / normal).resolve()
        if destination != root and not destination.is_relative_to(root):
            _refuse(archive, name, "would be written outside the folder it is extracted into")


def _refuse(archive: Path, name: str, problem: str) -> None:
    raise DataError(
        f'Refused to extract {archive}: its member "{name}" {problem}. Nothing was extracted. '
        "An archive of images needs only plain files in folders; this one is damaged or was made "
        "to write elsewhere on your disk. Re-create it from the image folder (e.g. `zip -r` or `tar czf`)."
    )


def _unreadable(archive: Path, error: BaseException) -> DataError:
    return DataError(
        f"Cannot read the archive {archive} ({type(error).__name__}: {error}); it is truncated, damaged "
        f"or not an archive. cnnlab reads {', '.join(ARCHIVE_SUFFIXES)}; re-create it or give the folder itself."
    )


__all__ = ["ARCHIVE_SUFFIXES", "extract_archive", "extracted_archive", "is_archive", "iter_archive_files"]
