"""Data-file cases of tests/test_reliability.py: IDX files, CIFAR-10 pickles, image files and archives
given to `cnnlab explore` (which reads a dataset and nothing else), each in its own case folder."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from reliability_cases import _System, Case, payload, write

class _Eval:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


class _HugeArray:
    """A pickle of allowed globals only (numpy's array reconstruction) that asks for 2 TiB."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return (_reconstruct, (np.ndarray, (2 ** 41,), np.dtype(np.uint8)))


MNIST_FILES = {"train-images-idx3-ubyte.gz": (3, (20, 28, 28)), "train-labels-idx1-ubyte.gz": (1, (20,)),
               "t10k-images-idx3-ubyte.gz": (3, (10, 28, 28)), "t10k-labels-idx1-ubyte.gz": (1, (10,))}
CIFAR_FILES = [*(f"data_batch_{number}" for number in range(1, 6)), "test_batch", "batches.meta"]


def idx_bytes(dimensions: tuple[int, ...], payload_bytes: bytes | None = None, magic: int = 0x0800) -> bytes:
    header = struct.pack(">I", magic | len(dimensions)) + b"".join(struct.pack(">I", size) for size in dimensions)
    return header + (payload_bytes if payload_bytes is not None else bytes(int(np.prod(dimensions))))


def mnist_folder(folder: Path, replace: dict[str, bytes]) -> None:
    """A valid small MNIST in folder/inputs/mnist, with some files replaced (raw bytes, as written)."""
    for name, (_, shape) in MNIST_FILES.items():
        write(folder / "inputs" / "mnist" / name, replace.get(name, gzip.compress(idx_bytes(shape))))


def gzip_bomb() -> bytes:
    """A 64 MiB stream of zeros compressed to about 64 KiB behind a header declaring 10^12 bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(idx_bytes((1_000_000, 1000, 1000), b""))]
    zeros = bytes(1 << 20)
    parts += [compressor.compress(zeros) for _ in range(64)]
    return b"".join(parts) + compressor.flush()


def explore(name: str, dataset: str, setup: Callable[[Path], None], expect: str = "refused") -> Case:
    """`cnnlab explore DATASET --data-dir inputs`; ``expect`` "either" where skipping a bad file with a warning
    is as right as refusing the dataset (an unreadable image among good ones)."""
    def build(folder: Path, template: Path) -> list[str]:
        setup(folder)
        return ["explore", dataset, "--data-dir", "inputs", "--out", "out"]
    return Case(name, "bad data files", build, expect)


def cifar_folder(folder: Path, content: Callable[[Path], bytes]) -> None:
    for name in CIFAR_FILES:
        write(folder / "inputs" / "cifar10" / "cifar-10-batches-py" / name, content(folder))


def image_tree(folder: Path, odd: dict[str, bytes], classes: tuple[str, ...] = ("cat", "dog")) -> None:
    """inputs/tree/<class>/*.png, valid images plus the ``odd`` files (relative paths) given."""
    for name in classes:
        for index in range(4):
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8), (index * 50, 90, 30)).save(buffer, format="PNG")
            write(folder / "inputs" / "tree" / name / f"{index}.png", buffer.getvalue())
    for relative, content in odd.items():
        write(folder / "inputs" / "tree" / relative, content)


def png_bomb() -> bytes:
    """A PNG header declaring 100,000 x 100,000 pixels with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + data


def png_bytes(size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n"


def archive_case(name: str, make: Callable[[Path, Path], str]) -> Case:
    """imagefolder:ARCHIVE, the archive written by ``make(folder, outside)`` (it returns the archive's name)."""
    def build(folder: Path, template: Path) -> list[str]:
        return ["explore", f"imagefolder:{make(folder, folder.parent / 'outside')}", "--out", "out"]
    return Case(name, "bad data files", build)


def zip_with(folder: Path, members: dict[str, bytes], name: str = "tree.zip") -> str:
    with zipfile.ZipFile(folder / name, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(3):
            for label in ("cat", "dog"):
                archive.writestr(f"{label}/{index}.png", png_bytes())
        for member, content in members.items():
            archive.writestr(member, content)
    return name


def tar_with(folder: Path, extra: Callable[[tarfile.TarFile], None], name: str = "tree.tar") -> str:
    with tarfile.open(folder / name, "w") as archive:
        for index in range(3):
            for label in ("cat", "dog"):
                info = tarfile.TarInfo(f"{label}/{index}.png")
                data = png_bytes()
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        extra(archive)
    return name


def tar_member(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        archive.addfile(info)
    return add


def evil_file(name: str) -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))
    return add


def huge_zip(folder: Path, outside: Path) -> str:
    """A 300 MiB member of zeros in an archive of about 300 KiB."""
    with zipfile.ZipFile(folder / "tree.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/0.png", png_bytes())
        with archive.open("dog/0.png", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(300):
                member.write(zeros)
    return "tree.zip"


def truncated_tgz(folder: Path, outside: Path) -> str:
    tar_with(folder, lambda archive: None)
    data = gzip.compress((folder / "tree.tar").read_bytes())
    (folder / "tree.tar").unlink()
    write(folder / "tree.tar.gz", data[: len(data) // 2])
    return "tree.tar.gz"


NOISE = np.random.default_rng(0).integers(0, 256, 20 * 28 * 28, dtype=np.uint8).tobytes()  # does not compress
DATA_CASES = [
    explore("idx-truncated", "mnist", lambda folder: mnist_folder(folder, {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes((20, 28, 28), NOISE))[:2000]})),
    explore("idx-gzip-bomb", "mnist", lambda folder: mnist_folder(folder, {"train-images-idx3-ubyte.gz": gzip_bomb()})),
    explore("idx-wrong-magic", "mnist", lambda folder: mnist_folder(folder, {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes((20, 28, 28), magic=0x0D00))})),
    explore("idx-labels-count-mismatch", "mnist", lambda folder: mnist_folder(folder, {
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes((7,)))})),
    explore("idx-not-gzip", "mnist", lambda folder: mnist_folder(folder, {"train-images-idx3-ubyte.gz": b"x" * 500})),
    explore("idx-header-only", "mnist", lambda folder: mnist_folder(folder, {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes((20, 28, 28), b""))})),
    explore("idx-huge-dimensions-uncompressed", "mnist", lambda folder: mnist_folder(folder, {
        "train-images-idx3-ubyte.gz": b"", "train-images-idx3-ubyte": idx_bytes((4_000_000_000, 28, 28), b"")})),
    explore("cifar-pickle-os-system", "cifar10", lambda folder: cifar_folder(
        folder, lambda f: pickle.dumps({b"data": _System(payload(f))}, protocol=2))),
    explore("cifar-pickle-builtins-eval", "cifar10", lambda folder: cifar_folder(
        folder, lambda f: pickle.dumps({b"data": _Eval(payload(f))}, protocol=2))),
    explore("cifar-pickle-2-tib-array", "cifar10", lambda folder: cifar_folder(
        folder, lambda f: pickle.dumps({b"data": _HugeArray(), b"labels": [0]}, protocol=2))),
    explore("cifar-garbage-batches", "cifar10", lambda folder: cifar_folder(folder, lambda f: b"garbage" * 50)),
    explore("cifar-archive-truncated", "cifar10", lambda folder: write(
        folder / "inputs" / "cifar10" / "cifar-10-python.tar.gz", gzip.compress(b"x" * 5000)[:100])),
    explore("image-eps-named-png", "imagefolder:inputs/tree", lambda folder: image_tree(
        folder, {"cat/eps.png": EPS}), "either"),
    explore("image-truncated-png", "imagefolder:inputs/tree", lambda folder: image_tree(
        folder, {"cat/cut.png": png_bytes(64)[:60]}), "either"),
    explore("image-zero-bytes", "imagefolder:inputs/tree", lambda folder: image_tree(
        folder, {"dog/empty.png": b""}), "either"),
    explore("image-text-named-jpg", "imagefolder:inputs/tree", lambda folder: image_tree(
        folder, {"dog/notes.jpg": b"just some text\n"}), "either"),
    explore("image-png-decompression-bomb", "imagefolder:inputs/tree", lambda folder: image_tree(
        folder, {"cat/bomb.png": png_bomb()}), "either"),
    explore("image-svg-named-png", "imagefolder:inputs/tree", lambda folder: image_tree(
        folder, {"cat/vector.png": b'<svg xmlns="http://www.w3.org/2000/svg"/>'}), "either"),
    explore("imagefolder-one-class", "imagefolder:inputs/tree", lambda folder: image_tree(
        folder, {}, ("cat",)), "either"),
    explore("imagefolder-empty", "imagefolder:inputs/tree", lambda folder: (folder / "inputs" / "tree").mkdir(
        parents=True)),
    explore("imagefolder-missing", "imagefolder:inputs/nowhere", lambda folder: None),
    explore("data-dir-is-a-file", "mnist", lambda folder: write(folder / "inputs", b"a file, not a folder")),
    archive_case("zip-path-escape", lambda folder, outside: zip_with(folder, {"../../outside/evil.png": b"evil"})),
    archive_case("zip-absolute-path", lambda folder, outside: zip_with(folder, {str(outside / "abs.png"): b"evil"})),
    archive_case("zip-huge-member", huge_zip),
    archive_case("zip-garbage", lambda folder, outside: write(folder / "tree.zip", b"PK\x03\x04garbage" * 30).name),
    archive_case("tar-path-escape", lambda folder, outside: tar_with(folder, evil_file("../../outside/evil.png"))),
    archive_case("tar-absolute-path", lambda folder, outside: tar_with(folder, evil_file(str(outside / "abs.png")))),
    archive_case("tar-symlink-outside", lambda folder, outside: tar_with(
        folder, tar_member("cat/link.png", tarfile.SYMTYPE, str(outside / "target.png")))),
    archive_case("tar-symlink-then-write-through", lambda folder, outside: tar_with(folder, lambda archive: (
        tar_member("cat/escape", tarfile.SYMTYPE, str(outside))(archive), evil_file("cat/escape/evil.png")(archive)))),
    archive_case("tar-hardlink-outside", lambda folder, outside: tar_with(
        folder, tar_member("cat/hard.png", tarfile.LNKTYPE, "/etc/hostname"))),
    archive_case("tar-device-member", lambda folder, outside: tar_with(
        folder, tar_member("cat/device.png", tarfile.CHRTYPE))),
    archive_case("tar-gz-truncated", truncated_tgz),
]
