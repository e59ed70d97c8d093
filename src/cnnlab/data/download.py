"""Downloading published dataset files, each checked against its MD5 before it is kept.

Files are fetched into memory, checked, then written with a temp file and a rename, so
an interrupted or corrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

from cnnlab.errors import DataError
from cnnlab.runs import progress_bar, write_bytes_atomic

Fetch = Callable[[str], bytes]
TIMEOUT_S = 30
CHUNK_BYTES = 1 << 16


def fetch_url(url: str) -> bytes:
    """The body of ``url``, with a progress bar on stderr; raises OSError on failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "cnnlab"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0)  # 0: unknown length, the bar counts bytes only
        chunks = []
        with progress_bar(total, url.rsplit("/", 1)[-1], unit="B") as bar:
            bar.unit_scale = True  # kB and MB rather than raw byte counts
            while chunk := response.read(CHUNK_BYTES):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def download_files(checksums: Mapping[str, str], mirrors: Sequence[str], target: Path, fetch: Fetch = fetch_url) -> None:
    """Download every file named in ``checksums`` into ``target``, trying ``mirrors``
    (URL prefixes) in order and keeping a file only when its MD5 matches. Files already
    in ``target`` with the right MD5 are kept. Raises DataError when a file cannot be got."""
    for filename, md5 in checksums.items():
        path = Path(target) / filename
        if path.is_file() and file_md5(path) == md5:
            continue
        write_bytes_atomic(path, _fetch_checked(filename, md5, mirrors, fetch))


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_checked(filename: str, md5: str, mirrors: Sequence[str], fetch: Fetch) -> bytes:
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            content = fetch(url)
        except (OSError, urllib.error.URLError, ValueError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', None) or error}")
            continue
        actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if actual == md5:
            return content
        failures.append(f"{url}: MD5 {actual} instead of {md5} ({len(content)} bytes)")
    raise DataError(f"could not get {filename} ({'; '.join(failures) or 'no mirrors'})")
