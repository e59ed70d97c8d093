"""Hostile data files: bombs (gzip, pickle, archives), images of other formats, a --data-dir that is a file,
a tampered cache. Each is refused (or, for one image or the cache, passed over) with a message naming the
file, before anything large is allocated, decompressed or written; through the command line, exit code 2
and no traceback."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import errors
from cnnlab.cli import main
from cnnlab.data import archives, idx, load_dataset
from cnnlab.data.archives import extract_archive, iter_archive_files
from cnnlab.data.decoded_cache import cache_file, load_cached
from cnnlab.data.images import MAX_PIXELS, UnreadableImage, decode_image, survey_images
from cnnlab.data.safe_pickle import load_restricted_pickle
from cnnlab.errors import DataError

try:  # numpy >= 2 keeps it in numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)


def cli_refuses(capsys, *argv, fragments=()):
    code = main(list(argv))
    err = capsys.readouterr().err
    message = " ".join(err.split())
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error:"), err
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def idx_header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(size.to_bytes(4, "big") for size in shape)


# --------------------------------------------------------------------------- IDX

def test_an_idx_gzip_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header((60_000, 1000, 1000)) + bytes(1000)))  # promises 60 GB
    decompressed = []
    original_read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, size=-1: decompressed.append(size) or original_read(self, size))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: its header promises shape \(60000, 1000, 1000\)"):
        idx.read_idx(path)
    assert all(0 <= size <= 12 for size in decompressed), "only the header may be decompressed"


def test_an_idx_stream_longer_than_its_header_is_read_only_that_far(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_header((10,)) + bytes(20 << 20), compresslevel=1))  # 20 MiB more
    with pytest.raises(DataError, match="labels.gz is longer than its header says"):
        idx.read_idx(path)


def test_an_idx_file_over_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "MAX_IDX_BYTES", 1000)
    path = tmp_path / "raw-idx"
    path.write_bytes(idx_header((2000,)) + bytes(2000))
    with pytest.raises(DataError, match="more than the 0 GiB cnnlab reads from one IDX file"):
        idx.read_idx(path)


def test_an_idx_bomb_through_the_command_line(capsys, tmp_path):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name, shape in [("train-images-idx3-ubyte.gz", (60_000, 2000, 2000)), ("train-labels-idx1-ubyte.gz", (60_000,)),
                        ("t10k-images-idx3-ubyte.gz", (10_000, 28, 28)), ("t10k-labels-idx1-ubyte.gz", (10_000,))]:
        (folder / name).write_bytes(gzip.compress(idx_header(shape)))
    cli_refuses(capsys, "explore", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                fragments=("train-images-idx3-ubyte.gz", "header promises"))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- CIFAR pickles

class HugeArray:
    """Unpickles as numpy's own reconstruction of a 2 TiB array: only allowed globals, a huge allocation."""

    def __reduce__(self):
        return (_reconstruct, (np.ndarray, (2**41,), b"b"))


def cifar_batch(data) -> bytes:
    return pickle.dumps({b"data": data, b"labels": [0]}, protocol=4)


def test_a_pickled_2_tib_array_is_refused_before_allocating():
    with pytest.raises(DataError, match=r"Refused to load batch: it asks for an array of shape \(2199023255552,\)"):
        load_restricted_pickle(cifar_batch(HugeArray()), "batch")
    good = np.zeros((1, 3072), np.uint8)
    assert load_restricted_pickle(cifar_batch(good), "batch")[b"data"].shape == (1, 3072)


def test_a_cifar_pickle_bomb_through_the_command_line(capsys, tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    good = cifar_batch(np.zeros((1, 3072), np.uint8))
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (folder / name).write_bytes(good)
    (folder / "data_batch_3").write_bytes(cifar_batch(HugeArray()))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}, protocol=4))
    cli_refuses(capsys, "explore", "cifar10", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                fragments=("data_batch_3", "nothing was allocated"))


def test_an_oversized_cifar_batch_is_not_read(tmp_path, monkeypatch):
    from cnnlab.data import cifar10

    monkeypatch.setattr(cifar10, "MAX_BATCH_BYTES", 100)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, cifar10.META]:
        (folder / name).write_bytes(bytes(200))
    with pytest.raises(DataError, match="data_batch_1 is 200 bytes, more than"):
        cifar10.read_batch_files(folder)


# --------------------------------------------------------------------------- archives

def zip_bomb(path: Path, member_bytes: int = 80 << 20) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("pets/cat/a.png", png_bytes())
        zipped.writestr("pets/dog/zeros.bmp", bytes(member_bytes))
    return path


def test_a_zip_bomb_is_refused_from_its_headers(tmp_path):
    archive = zip_bomb(tmp_path / "bomb.zip")
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"Refused to extract .*bomb.zip: its [\d,]+ bytes would expand to more than"):
        extract_archive(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == [], "nothing may be extracted"
    with pytest.raises(DataError, match="would expand"):
        list(iter_archive_files(archive))


@pytest.mark.parametrize("limit, value, problem", [
    ("MAX_MEMBER_BYTES", 1000, r'member "pets/dog/big.bmp" would be 5,000 bytes'),
    ("MAX_MEMBERS", 2, "more than 2 members"),
    ("MAX_TOTAL_BYTES", 3000, "would take more than 0 GiB"),
])
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_limits_on_members_count_and_total(tmp_path, monkeypatch, limit, value, problem, kind):
    monkeypatch.setattr(archives, limit, value)
    files = {"pets/cat/a.png": png_bytes(), "pets/dog/b.png": png_bytes(), "pets/dog/big.bmp": bytes(5000)}
    archive = tmp_path / f"pets.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            for name, content in files.items():
                zipped.writestr(name, content)
    else:
        with tarfile.open(archive, "w:gz") as tar:
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    with pytest.raises(DataError, match=problem):
        extract_archive(archive, tmp_path / "out")
    assert not any(path.is_file() for path in (tmp_path / "out").rglob("*"))


def test_a_zip_member_larger_than_its_header_says_is_not_written_past_it(tmp_path):
    archive = tmp_path / "lying.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("pets/cat/a.bmp", bytes(4000))
    content = bytearray(archive.read_bytes())
    for offset in (18 + 4, ):  # local header: uncompressed size at 22
        content[offset:offset + 4] = struct.pack("<I", 100)
    central = content.rindex(b"PK\x01\x02")
    content[central + 24:central + 28] = struct.pack("<I", 100)  # central directory: uncompressed size
    archive.write_bytes(bytes(content))
    with pytest.raises(DataError) as caught:
        extract_archive(archive, tmp_path / "out")
    written = [path.stat().st_size for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert all(size <= 100 for size in written)
    assert "lying.zip" in str(caught.value)


def test_an_archive_bomb_through_the_command_line(capsys, tmp_path):
    archive = zip_bomb(tmp_path / "bomb.zip")
    cli_refuses(capsys, "explore", f"imagefolder:{archive}", "--out", str(tmp_path / "out"),
                fragments=("Refused to extract", "bomb.zip", "imagefolder:FOLDER"))
    extracted = [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]
    assert extracted == []


# --------------------------------------------------------------------------- image formats

def png_bytes(size=(8, 8), colour=(200, 40, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
       b"newpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n")


def test_an_eps_file_named_png_never_reaches_ghostscript(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: calls.append("looked") or True)
    path = tmp_path / "cat.png"
    path.write_bytes(EPS)
    with pytest.raises(UnreadableImage, match="cannot identify"):
        decode_image(path, (8, 8), colour=True)
    assert survey_images([path]).unreadable == [0]
    assert calls == []


def test_an_eps_in_a_class_folder_is_skipped_with_a_note(capsys, tmp_path):
    for index in range(3):
        for name in ("cat", "dog"):
            (tmp_path / "pets" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "pets" / name / f"{index}.png").write_bytes(png_bytes())
    (tmp_path / "pets" / "cat" / "evil.png").write_bytes(EPS)
    dataset = load_dataset(f"imagefolder:{tmp_path / 'pets'}")
    assert len(dataset.train_labels) + len(dataset.test_labels) == 6
    assert "skipped 1 unreadable image: cat/evil.png" in capsys.readouterr().err


def test_an_image_of_too_many_pixels_is_not_decoded(tmp_path):
    content = bytearray(png_bytes())
    side = int(MAX_PIXELS ** 0.5) + 1
    content[16:24] = struct.pack(">II", side, side)  # IHDR width and height
    content[29:33] = struct.pack(">I", zlib.crc32(bytes(content[12:29])))  # the chunk's CRC over type and data
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(content))
    with pytest.raises(UnreadableImage, match="more than the"):
        decode_image(path, (8, 8), colour=True)


# --------------------------------------------------------------------------- --data-dir and the cache

def test_a_data_dir_that_is_a_file_is_an_error(capsys, tmp_path):
    not_a_folder = tmp_path / "datasets.txt"
    not_a_folder.write_text("oops")
    cli_refuses(capsys, "train", "mlp", "--data-dir", str(not_a_folder), "--out", str(tmp_path / "run"),
                fragments=(f"--data-dir {not_a_folder} is a file, not a folder",))
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_dataset("digits", data_dir=not_a_folder)


@pytest.mark.parametrize("tamper", ["drop notes", "drop labels", "float images", "labels out of range", "garbage"])
def test_a_tampered_decoded_cache_is_a_miss_with_a_warning(capsys, tmp_path, tamper):
    for index in range(2):
        for name in ("cat", "dog"):
            (tmp_path / "pets" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "pets" / name / f"{index}.png").write_bytes(png_bytes(colour=(index * 50, 0, 0)))
    first = load_dataset(f"imagefolder:{tmp_path / 'pets'}")
    (cached,) = (tmp_path / "cache").rglob("decoded-*.npz")
    arrays = dict(np.load(cached))
    if tamper == "drop notes":
        del arrays["notes"]
    elif tamper == "drop labels":
        del arrays["all_labels"]
    elif tamper == "float images":
        arrays["all_images"] = arrays["all_images"].astype(np.float64)
    elif tamper == "labels out of range":
        arrays["all_labels"] = arrays["all_labels"] + 7
    if tamper == "garbage":
        cached.write_bytes(b"not an npz")
    else:
        np.savez(cached, **arrays)
    capsys.readouterr()
    second = load_dataset(f"imagefolder:{tmp_path / 'pets'}")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "decoded-image cache" in line]
    assert len(warnings) == 1 and str(cached) in warnings[0] and "decoding the images again" in warnings[0]
    np.testing.assert_array_equal(second.train_images, first.train_images)
    np.testing.assert_array_equal(second.test_labels, first.test_labels)
    assert load_cached(cached, ("classes", "notes")) is not None, "the cache was written again"


def test_load_cached_keys_and_class_bound(tmp_path):
    path = cache_file("x", ["key"])
    path.parent.mkdir(parents=True)
    images, labels = np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 9], np.int64)
    np.savez(path, train_images=images, train_labels=labels, test_images=images, test_labels=labels,
             notes=np.zeros(0, "<U1"))
    assert load_cached(path, ("notes",), n_classes=10) is not None
    assert load_cached(path, ("notes",), n_classes=9) is None


def test_memory_estimate_before_resizing(tmp_path, monkeypatch):
    monkeypatch.setattr(errors, "physical_memory_bytes", lambda: 1 << 20)
    with pytest.raises(errors.ConfigError, match="Resizing the 1,797 images of digits to 64x64 needs about"):
        load_dataset(__import__("cnnlab.data", fromlist=["DatasetConfig"]).DatasetConfig(name="digits", image_size=64))
