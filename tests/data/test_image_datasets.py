"""Tests for the image datasets of cnnlab.data: the restricted unpickler and cifar10,
safe archive extraction, imagefolder:PATH, cifar10-jpeg, and the new DatasetConfig fields."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import os
import pickle
import re
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pydantic
import pytest
from PIL import Image

from cnnlab.data import DatasetConfig, cache_root, load_dataset, load_restricted_pickle
from cnnlab.data import cifar10 as cifar10_module
from cnnlab.data.archives import extract_archive, iter_archive_files
from cnnlab.data.cifar10 import ARCHIVE, BATCHES_FOLDER, CIFAR10_CLASSES, META, TEST_BATCH, TRAIN_BATCHES
from cnnlab.data.image_tree import stratified_split
from cnnlab.errors import DataError


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Only what a test puts in place is found: no $CNNLAB_DATA."""
    monkeypatch.delenv("CNNLAB_DATA", raising=False)


# --- building test files --------------------------------------------------------------


class Python2Pickler(pickle._Pickler):  # the pure-Python pickler lets us choose opcodes
    """Writes bytes and str as Python 2 strings (SHORT_BINSTRING), as the real CIFAR-10
    batches, pickled by Python 2, hold them; Python 3 would call _codecs.encode instead."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_string(self, value):
        raw = value.encode("latin-1") if isinstance(value, str) else value
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(value)

    dispatch[bytes] = save_python2_string
    dispatch[str] = save_python2_string


def python2_pickle(value) -> bytes:
    """``value`` pickled as Python 2 with numpy 1 would: protocol 2, numpy.core names."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


class RunsCode:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def fake_cifar10_batches(per_batch: int = 3) -> dict[str, bytes]:
    """The files of cifar-10-batches-py, tiny, in the real format; image k of the
    whole set has pixel values k, k+1, ... so the order can be checked."""
    files, start = {}, 0
    for name in [*TRAIN_BATCHES, TEST_BATCH]:
        data = (np.arange(per_batch * 3072).reshape(per_batch, 3072) // 3072 + start).astype(np.uint8)
        labels = [(start + row) % 10 for row in range(per_batch)]
        files[name] = python2_pickle({b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * per_batch})
        start += per_batch
    files[META] = python2_pickle({b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072})
    return files


def add_file(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            add_file(tar, name, content)
    return path


def save_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (24, 20), value=(200, 40, 10)) -> Path:
    """An image of one colour; size is Pillow's (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def make_pets(root: Path) -> Path:
    """train/test folders, two classes, 20x24 images: colour, grey, transparent, one
    file of random bytes and one truncated PNG, plus files that must be ignored."""
    save_image(root / "train" / "cat" / "cat0.png")
    save_image(root / "train" / "cat" / "cat1.jpg", value=(10, 200, 10))
    save_image(root / "train" / "cat" / "cat2.PNG", value=(10, 10, 200))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1")
    save_image(root / "train" / "dog" / "dog0.png", value=(0, 0, 0))
    save_image(root / "train" / "dog" / "dog1.png", mode="L", value=90)
    transparent = save_image(root / "train" / "dog" / "dog2.png", mode="RGBA", value=(0, 0, 255, 0))
    (root / "train" / "dog" / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(300))
    (root / "train" / "dog" / "truncated.png").write_bytes(transparent.read_bytes()[:60])
    save_image(root / "test" / "cat" / "c.png")
    save_image(root / "test" / "dog" / "d.jpg")
    return root


def make_class_folders(root: Path, counts: dict[str, int]) -> Path:
    """PATH/<class>/ layout, grey 8x8 images whose value is the image's number."""
    number = 0
    for name, count in counts.items():
        for index in range(count):
            save_image(root / name / f"{index:03d}.png", mode="L", size=(8, 8), value=number)
            number += 1
    return root


def stderr_lines(capsys, word: str) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if word in line]


# --- restricted unpickler ---------------------------------------------------------------


def test_restricted_unpickler_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(RunsCode(f"touch {marker}"))
    with pytest.raises(DataError) as caught:
        load_restricted_pickle(payload, "evil_batch")
    assert f"{os.system.__module__}.system" in str(caught.value) and "evil_batch" in str(caught.value)
    assert "refused" in str(caught.value).lower()
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes do run code when unpickled without restriction
    assert marker.exists()


def test_restricted_unpickler_refuses_builtins_and_reads_only_pickles():
    class Evaluates:
        def __reduce__(self):
            return (eval, ("1+1",))

    with pytest.raises(DataError, match="it asks to call builtins.eval"):
        load_restricted_pickle(pickle.dumps([Evaluates()]), "x")
    with pytest.raises(DataError, match="not a readable pickle"):
        load_restricted_pickle(pickle.dumps([1, 2, 3])[:-3], "cut.pkl")


def test_restricted_unpickler_reads_a_python2_cifar_batch():
    data = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    batch = load_restricted_pickle(python2_pickle({b"data": data, b"labels": [3, 7]}), "batch")
    assert set(batch) == {b"data", b"labels"} and batch[b"labels"] == [3, 7]
    np.testing.assert_array_equal(batch[b"data"], data)
    modern = load_restricted_pickle(pickle.dumps({b"data": data}, protocol=4), "batch")  # numpy 2 names
    np.testing.assert_array_equal(modern[b"data"], data)


# --- cifar10 (the python batches) -------------------------------------------------------


def test_cifar10_from_a_fake_archive(tmp_path):
    files = fake_cifar10_batches(per_batch=3)
    write_tar(tmp_path / "cifar10" / ARCHIVE, {f"{BATCHES_FOLDER}/{name}": content for name, content in files.items()})
    dataset = load_dataset("cifar10", data_dir=tmp_path)
    assert dataset.name == "cifar10" and dataset.classes == CIFAR10_CLASSES
    assert dataset.train_images.shape == (15, 3, 32, 32) and dataset.test_images.shape == (3, 3, 32, 32)
    assert dataset.train_images.dtype == np.uint8 and dataset.train_labels.dtype == np.int64
    assert [int(image[0, 0, 0]) for image in dataset.train_images] == list(range(15))  # batches in order
    assert dataset.train_labels.tolist() == [k % 10 for k in range(15)]
    assert dataset.source == str(tmp_path / "cifar10" / ARCHIVE)


def test_cifar10_from_an_extracted_folder_in_cnnlab_data(monkeypatch, tmp_path):
    for name, content in fake_cifar10_batches(per_batch=2).items():
        (tmp_path / "cifar10" / BATCHES_FOLDER).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cifar10" / BATCHES_FOLDER / name).write_bytes(content)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))
    dataset = load_dataset("cifar10")
    assert dataset.train_images.shape == (10, 3, 32, 32) and dataset.test_labels.tolist() == [0, 1]


def test_cifar10_refuses_a_batch_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    files = fake_cifar10_batches()
    files["data_batch_2"] = pickle.dumps(RunsCode(f"touch {marker}"), protocol=2)
    write_tar(tmp_path / ARCHIVE, {f"{BATCHES_FOLDER}/{name}": content for name, content in files.items()})
    with pytest.raises(DataError, match=r"Refused to load .*data_batch_2: it asks to call \w+\.system"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_cifar10_missing_offline_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(caught.value)
    assert "https://www.cs.toronto.edu/~kriz/" in message and ARCHIVE in message
    assert str(tmp_path / "cifar10") in message and "CNNLAB_OFFLINE" in message and "cifar10-jpeg" in message


def test_cifar10_download_is_checked_against_its_md5(monkeypatch, tmp_path):
    archive = write_tar(tmp_path / "server" / ARCHIVE, {f"{BATCHES_FOLDER}/{n}": c for n, c in fake_cifar10_batches().items()})
    content = archive.read_bytes()
    remote = dataclasses.replace(cifar10_module.CIFAR10_REMOTE, checksums={ARCHIVE: hashlib.md5(content).hexdigest()})
    monkeypatch.setattr(cifar10_module, "CIFAR10_REMOTE", remote)
    monkeypatch.setattr("cnnlab.data.locate.fetch_url", lambda url: content)
    monkeypatch.delenv("CNNLAB_OFFLINE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # not the session's: other tests expect no cifar10
    dataset = load_dataset("cifar10", data_dir=tmp_path / "nothing-here")
    assert dataset.source == str(cache_root() / "cifar10" / ARCHIVE) and len(dataset.train_labels) == 15


def test_cifar10_md5_matches_torchvision():
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        pytest.skip("torchvision not installed")
    source = (Path(spec.origin).parent / "datasets" / "cifar.py").read_text()
    assert re.search(r'tgz_md5 = "([0-9a-f]{32})"', source).group(1) == cifar10_module.CIFAR10_REMOTE.checksums[ARCHIVE]


# --- safe extraction --------------------------------------------------------------------


def tar_with(path: Path, member: tarfile.TarInfo, content: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        add_file(tar, "good/ok.txt", b"fine")
        tar.addfile(member, io.BytesIO(content) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member, problem",
    [
        (_member("../evil.txt"), "outside"),
        (_member("good/../../evil.txt"), "outside"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (_member("hard", tarfile.LNKTYPE, "good/ok.txt"), "hard link"),
        (_member("/tmp/cnnlab-test-absolute.txt"), "absolute"),
    ],
)
def test_extraction_refuses_dangerous_tar_members(tmp_path, member, problem):
    archive = tar_with(tmp_path / "bad.tar", member, b"evil")
    target = tmp_path / "out" / "target"
    with pytest.raises(DataError, match=problem) as caught:
        extract_archive(archive, target)
    assert str(archive) in str(caught.value) and f'"{member.name}"' in str(caught.value)
    assert not any(target.iterdir())  # not even the good member
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["bad.tar", "out", "target"]
    assert not Path("/tmp/cnnlab-test-absolute.txt").exists()
    with pytest.raises(DataError, match=problem):
        list(iter_archive_files(archive))


def test_extraction_refuses_zip_climbing_out_and_zip_symlinks(tmp_path):
    climbing = tmp_path / "climb.zip"
    with zipfile.ZipFile(climbing, "w") as zipped:
        zipped.writestr("ok/a.txt", b"fine")
        zipped.writestr("../x", b"evil")
    with pytest.raises(DataError, match=r'member "\.\./x" would be written outside'):
        extract_archive(climbing, tmp_path / "target")
    assert not (tmp_path / "x").exists() and not any((tmp_path / "target").iterdir())
    linked = tmp_path / "link.zip"
    with zipfile.ZipFile(linked, "w") as zipped:
        info = zipfile.ZipInfo("cat/link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=r'"cat/link.jpg" is a symbolic link'):
        extract_archive(linked, tmp_path / "target2")


def test_extraction_of_a_good_archive_and_of_a_damaged_one(tmp_path):
    archive = write_tar(tmp_path / "good.tar.gz", {"top/a.txt": b"A", "top/sub/b.txt": b"B"})
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "sub" / "b.txt").read_bytes() == b"B"
    assert list(iter_archive_files(archive)) == [("top/a.txt", b"A"), ("top/sub/b.txt", b"B")]
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataError, match="Cannot read the archive .*cut.tar.gz"):
        extract_archive(tmp_path / "cut.tar.gz", tmp_path / "out2")


# --- imagefolder ------------------------------------------------------------------------


def test_imagefolder_with_train_and_test_folders(tmp_path, capsys):
    root = make_pets(tmp_path / "pets")
    dataset = load_dataset(f"imagefolder:{root}")
    assert dataset.name == f"imagefolder:{root}" and dataset.classes == ["cat", "dog"]
    assert dataset.train_images.shape == (6, 3, 20, 24) and dataset.test_images.shape == (2, 3, 20, 24)
    assert dataset.train_images.dtype == np.uint8
    assert dataset.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and dataset.test_labels.tolist() == [0, 1]
    cat0, grey, transparent = dataset.train_images[0], dataset.train_images[4], dataset.train_images[5]
    assert cat0[:, 0, 0].tolist() == [200, 40, 10]
    assert grey[:, 0, 0].tolist() == [90, 90, 90]
    assert transparent[:, 0, 0].tolist() == [255, 255, 255]  # alpha composited on white
    warnings = stderr_lines(capsys, "unreadable")
    assert warnings == ["imagefolder:" + str(root) + ": warning: skipped 2 unreadable images: train/dog/broken.jpg, train/dog/truncated.png"]


def test_imagefolder_class_folders_get_a_stratified_seeded_split(tmp_path):
    root = make_class_folders(tmp_path / "shapes", {"a": 10, "b": 5, "c": 2})
    dataset = load_dataset(f"imagefolder:{root}")
    assert dataset.train_images.shape[1:] == (1, 8, 8)  # all grey: one channel
    assert np.bincount(dataset.test_labels).tolist() == [2, 1, 1]
    assert np.bincount(dataset.train_labels).tolist() == [8, 4, 1]
    numbers = sorted(int(image[0, 0, 0]) for image in [*dataset.train_images, *dataset.test_images])
    assert numbers == list(range(17))
    again = load_dataset(f"imagefolder:{root}")
    np.testing.assert_array_equal(again.test_images, dataset.test_images)
    other = load_dataset(DatasetConfig(name=f"imagefolder:{root}", split_seed=1, test_fraction=0.5))
    assert np.bincount(other.test_labels).tolist() == [5, 2, 1]
    assert not np.array_equal(other.test_images[:2], dataset.test_images[:2])


def test_stratified_split_is_disjoint_and_keeps_a_singleton_class_for_training():
    labels = np.array([0] * 6 + [1] * 3 + [2])
    train, test = stratified_split(labels, 0.34, seed=0)
    assert sorted([*train, *test]) == list(range(10)) and np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_imagefolder_from_an_archive_equals_the_folder(tmp_path, capsys, suffix):
    root = make_pets(tmp_path / "pets")
    from_folder = load_dataset(f"imagefolder:{root}")
    archive = tmp_path / f"pets{suffix}"
    files = sorted(path for path in root.rglob("*") if path.is_file())
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in files:
                zipped.write(path, path.relative_to(tmp_path).as_posix())
    else:
        write_tar(archive, {path.relative_to(tmp_path).as_posix(): path.read_bytes() for path in files})
    capsys.readouterr()
    from_archive = load_dataset(DatasetConfig(name=f"imagefolder:{archive.name}"), data_dir=tmp_path)
    np.testing.assert_array_equal(from_archive.train_images, from_folder.train_images)
    np.testing.assert_array_equal(from_archive.test_labels, from_folder.test_labels)
    assert len(stderr_lines(capsys, "skipped 2 unreadable images")) == 1
    assert not [path for path in (cache_root() / "imagefolder").iterdir() if path.is_dir()]  # extraction removed


def test_imagefolder_archive_with_a_dangerous_member_is_refused(tmp_path):
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("pets/cat/a.png", b"x")
        zipped.writestr("../../escape.png", b"x")
    with pytest.raises(DataError, match=r"Refused to extract .*pets.zip: its member \"../../escape.png\""):
        load_dataset(f"imagefolder:{archive}")


def test_imagefolder_second_load_comes_from_the_cache(tmp_path, monkeypatch, capsys):
    root = make_pets(tmp_path / "pets")
    first = load_dataset(f"imagefolder:{root}")
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    with monkeypatch.context() as patch:
        patch.setattr(Image, "open", refuse)
        second = load_dataset(f"imagefolder:{root}")
    np.testing.assert_array_equal(second.train_images, first.train_images)
    assert len(stderr_lines(capsys, "skipped 2 unreadable")) == 1  # the warning is shown each time
    save_image(root / "train" / "cat" / "new.png")
    assert len(load_dataset(f"imagefolder:{root}").train_labels) == 7  # a changed folder is decoded again


def test_imagefolder_sizes_default_and_configured(tmp_path, capsys):
    save_image(tmp_path / "mixed" / "a" / "1.png", size=(10, 10))
    save_image(tmp_path / "mixed" / "a" / "2.png", size=(30, 20))
    save_image(tmp_path / "mixed" / "b" / "1.png", size=(10, 10))
    save_image(tmp_path / "mixed" / "b" / "2.png", size=(10, 10))
    dataset = load_dataset(f"imagefolder:{tmp_path / 'mixed'}")
    assert dataset.input_shape == (3, 64, 64)
    assert len(stderr_lines(capsys, "resizing all to 64x64")) == 1
    sized = load_dataset(DatasetConfig(name=f"imagefolder:{tmp_path / 'mixed'}", image_size=[12, 16]))
    assert sized.input_shape == (3, 12, 16) and not stderr_lines(capsys, "resizing")


def test_imagefolder_layout_errors_name_the_folder(tmp_path):
    root = make_class_folders(tmp_path / "data", {"a": 2, "b": 2})
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=f"class folder {re.escape(str(root / 'empty'))} is empty"):
        load_dataset(f"imagefolder:{root}")
    (root / "empty").rmdir()
    (root / "c").mkdir()
    (root / "c" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"No image in the class folder {re.escape(str(root / 'c'))} .* could be read"):
        load_dataset(f"imagefolder:{root}")
    save_image(tmp_path / "loose" / "a.png")
    with pytest.raises(DataError, match="1 images lie directly in it, not in class folders"):
        load_dataset(f"imagefolder:{tmp_path / 'loose'}")
    with pytest.raises(DataError, match="were not found .*nowhere"):
        load_dataset("imagefolder:nowhere", data_dir=tmp_path)


def test_imagefolder_train_and_test_classes_must_agree(tmp_path):
    make_class_folders(tmp_path / "d" / "train", {"cat": 1, "dog": 1})
    make_class_folders(tmp_path / "d" / "test", {"cat": 1, "cow": 1})
    with pytest.raises(DataError, match=r"different classes \(only in .*train: dog; only in .*test: cow\)"):
        load_dataset(f"imagefolder:{tmp_path / 'd'}")


# --- DatasetConfig fields and resizing -------------------------------------------------


def test_dataset_config_image_options():
    config = DatasetConfig(name="digits")
    assert (config.image_size, config.test_fraction, config.split_seed) == (None, 0.2, 0)
    assert DatasetConfig(name="x", image_size=[24, 32]).image_height_width == (24, 32)
    for bad in ({"image_size": 0}, {"test_fraction": 1.0}, {"test_fraction": 0}, {"resize": 32}):
        with pytest.raises(pydantic.ValidationError):
            DatasetConfig(name="x", **bad)


def test_image_size_resizes_any_dataset():
    dataset = load_dataset(DatasetConfig(name="digits", image_size=16, subset=50))
    assert dataset.train_images.shape == (50, 1, 16, 16) and dataset.test_images.shape[1:] == (1, 16, 16)


# --- cifar10-jpeg -----------------------------------------------------------------------


def test_cifar10_jpeg_from_a_small_fake_archive_and_folder(tmp_path):
    files = {}
    for split in ("train", "test"):
        for label, name in enumerate(CIFAR10_CLASSES):
            buffer = io.BytesIO()
            Image.new("RGB", (32, 32), (label * 20, 0, 0)).save(buffer, format="JPEG")
            files[f"cifar10-jpeg/{split}/{name}/0000.jpg"] = buffer.getvalue()
    write_tar(tmp_path / "cifar10-jpeg.tar.gz", files)
    dataset = load_dataset("cifar10-jpeg", data_dir=tmp_path)
    assert dataset.name == "cifar10-jpeg" and dataset.train_labels.tolist() == list(range(10))
    assert dataset.train_images.shape == (10, 3, 32, 32) and abs(int(dataset.test_images[9, 0, 5, 5]) - 180) <= 3
    extract_archive(tmp_path / "cifar10-jpeg.tar.gz", tmp_path / "extracted")
    from_folder = load_dataset("cifar10-jpeg", data_dir=tmp_path / "extracted")
    assert from_folder.source == str(tmp_path / "extracted" / "cifar10-jpeg")
    np.testing.assert_array_equal(from_folder.train_images, dataset.train_images)


def test_cifar10_jpeg_missing_says_it_is_the_offline_copy(tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset("cifar10-jpeg", data_dir=tmp_path)
    message = str(caught.value)
    assert "offline JPEG copy" in message and "never downloaded" in message and "use the dataset cifar10" in message
    assert str(tmp_path / "cifar10-jpeg") in message and "cifar10-jpeg.tar.gz" in message


@pytest.mark.slow
def test_cifar10_jpeg_from_the_shared_data_then_from_the_cache(datasets_dir, monkeypatch):
    if not (datasets_dir / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip(f"no cifar10-jpeg.tar.gz in {datasets_dir}")
    dataset = load_dataset("cifar10-jpeg", data_dir=datasets_dir)  # decodes once per test session
    assert dataset.name == "cifar10-jpeg" and dataset.classes == CIFAR10_CLASSES
    assert dataset.train_images.shape == (50000, 3, 32, 32) and dataset.test_images.shape == (10000, 3, 32, 32)
    assert dataset.train_images.dtype == np.uint8 and dataset.input_shape == (3, 32, 32)
    assert np.bincount(dataset.train_labels).tolist() == [5000] * 10
    assert np.bincount(dataset.test_labels).tolist() == [1000] * 10
    assert list((cache_root() / "cifar10-jpeg").glob("decoded-*.npz"))
    monkeypatch.setenv("CNNLAB_DATA", str(datasets_dir))
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("decoded again instead of using the cache"))
    cached = load_dataset(DatasetConfig(name="cifar10-jpeg", test_subset=100))
    from cnnlab.data.registry import take_subsets
    np.testing.assert_array_equal(cached.test_images, take_subsets(dataset, None, 100).test_images)
    assert cached.source == str(datasets_dir / "cifar10-jpeg.tar.gz")
