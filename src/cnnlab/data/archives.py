"""Reading and extracting archives of images (zip and tar, compressed or not) without
letting any member write outside the folder it is extracted into.

Every member is checked before anything is written: links (symbolic or hard), device
files and pipes, absolute names, and names whose resolved path leaves the target
(``../``) are refused with a DataError naming the archive and the member. tar extraction
then also runs with Python's ``filter="data"``, a second, independent guard.

Sizes are bounded the same way, from the headers before anything is written: at most
`MAX_MEMBERS` members, `MAX_MEMBER_BYTES` a member, `MAX_TOTAL_BYTES` in all, and an
archive may expand at most `MAX_EXPANSION` times its own size (past `EXPANSION_FLOOR_BYTES`).
While extracting, no zip member is written past the size its header declares (a tar
member's size is its header's by the format).
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
MAX_MEMBERS = 1_000_000  # ImageNet's training set has 1.28 million images: extract that one yourself
MAX_MEMBER_BYTES = 256 << 20  # one image file; photographs are a few MiB
MAX_TOTAL_BYTES = 16 << 30
MAX_EXPANSION = 100  # images barely compress (CIFAR-10's JPEGs: 1.1 times); a bomb expands a thousandfold
EXPANSION_FLOOR_BYTES = 64 << 20  # small archives of blank images may compress well: no ratio below this
# What reading a damaged archive raises, besides the formats' own errors.
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)


def is_archive(path: Path) -> bool:
    """True when ``path`` is a file whose name ends in one of `ARCHIVE_SUFFIXES`."""
    return Path(path).is_file() and Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, target: Path) -> None:
    """Extract every member of ``archive`` (zip or tar, any compression) into ``target``.

    All members are checked first; when one is a link, a device, has an absolute name or
    would land outside ``target``, or the sizes the headers declare pass the limits,
    DataError names the archive and that member and nothing at all is written."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                members = _checked_zip_members(archive, zipped, target)
                for info in members:
                    _extract_zip_member(archive, zipped, info, target)
        else:
            with tarfile.open(archive, "r:*") as tar:
                tally = SizeTally(archive)
                members = []
                for member in tar:  # headers only; stops at the first member over a limit
                    _check_tar_member(archive, member, target)
                    tally.add(member.name, member.size)
                    members.append(member)
                tar.extractall(target, members=members, filter="data")
    except DataError:
        raise
    except _READ_ERRORS as error:
        raise _unreadable(archive, error) from None


def iter_archive_files(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, content)`` for each regular file of ``archive``, in the
    archive's order, reading it once from start to end and writing nothing to disk.

    Members are checked as `extract_archive` checks them (a zip's all at once, a tar's
    each before it is read); a refused member raises DataError before anything of it is yielded."""
    archive = Path(archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for info in _checked_zip_members(archive, zipped):
                    if not info.is_dir():
                        yield info.filename, zipped.read(info)  # zipfile reads no more than file_size
        else:
            with tarfile.open(archive, "r:*") as tar:
                tally = SizeTally(archive)
                for member in tar:
                    _check_tar_member(archive, member)
                    tally.add(member.name, member.size)
                    if member.isfile():
                        yield member.name, tar.extractfile(member).read()  # type: ignore[union-attr]
    except DataError:
        raise
    except _READ_ERRORS as error:
        raise _unreadable(archive, error) from None


class SizeTally:
    """Counts an archive's members and the bytes their headers declare, refusing at the first over a limit."""

    def __init__(self, archive: Path):
        self.archive = archive
        self.archive_bytes = max(archive.stat().st_size, 1)
        self.count = 0
        self.total_bytes = 0

    def add(self, name: str, n_bytes: int) -> None:
        """Count one member of ``n_bytes``; DataError when a limit is passed."""
        self.count += 1
        self.total_bytes += n_bytes
        if n_bytes > MAX_MEMBER_BYTES:
            _refuse_size(self.archive, f'its member "{name}" would be {n_bytes:,} bytes, more than the '
                         f"{MAX_MEMBER_BYTES // 2**20} MiB cnnlab extracts for one file")
        if self.count > MAX_MEMBERS:
            _refuse_size(self.archive, f"it holds more than {MAX_MEMBERS:,} members")
        if self.total_bytes > MAX_TOTAL_BYTES:
            _refuse_size(self.archive, f"its members would take more than {MAX_TOTAL_BYTES // 2**30} GiB")
        if self.total_bytes > EXPANSION_FLOOR_BYTES and self.total_bytes > self.archive_bytes * MAX_EXPANSION:
            _refuse_size(self.archive, f"its {self.archive_bytes:,} bytes would expand to more than "
                         f"{self.total_bytes:,} (over {MAX_EXPANSION} times; images barely compress)")


def _checked_zip_members(archive: Path, zipped: zipfile.ZipFile, target: Path | None = None) -> list[zipfile.ZipInfo]:
    """Every member of ``zipped``, each checked by name, kind and declared size (the central directory holds
    them all, so nothing is read before every member has passed)."""
    tally = SizeTally(archive)
    members = zipped.infolist()
    for info in members:
        _check_zip_member(archive, info, target)
        tally.add(info.filename, info.file_size)
    return members


def _extract_zip_member(archive: Path, zipped: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Write one checked member in chunks, never past the size its header declares."""
    destination = target / posixpath.normpath(info.filename.replace("\\", "/"))
    if info.is_dir():
        destination.mkdir(parents=True, exist_ok=True)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zipped.open(info) as source, destination.open("wb") as sink:
        while chunk := source.read(CHUNK_BYTES):
            written += len(chunk)
            if written > info.file_size:
                _refuse_size(archive, f'its member "{info.filename}" expands past the {info.file_size:,} bytes '
                             "its header declares")
            sink.write(chunk)


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


def _refuse_size(archive: Path, problem: str) -> None:
    raise DataError(
        f"Refused to extract {archive}: {problem}. Nothing was extracted. An archive of images passing these "
        f"limits ({MAX_MEMBERS:,} files, {MAX_MEMBER_BYTES // 2**20} MiB a file, {MAX_TOTAL_BYTES // 2**30} GiB "
        "in all) is damaged or made to fill your disk; if it is genuine, extract it yourself and give the folder "
        "(imagefolder:FOLDER)."
    )


def _unreadable(archive: Path, error: BaseException) -> DataError:
    return DataError(
        f"Cannot read the archive {archive} ({type(error).__name__}: {error}); it is truncated, damaged "
        f"or not an archive. cnnlab reads {', '.join(ARCHIVE_SUFFIXES)}; re-create it or give the folder itself."
    )


__all__ = ["ARCHIVE_SUFFIXES", "MAX_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "SizeTally", "extract_archive", "extracted_archive", "is_archive", "iter_archive_files"]
