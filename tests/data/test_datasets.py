"""Tests for cnnlab.data: registry, digits, IDX reading, locating files, downloads, splits."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pydantic
import pytest

from cnnlab.data import (
    Dataset,
    DatasetConfig,
    dataset_names,
    find_data_dirs,
    load_dataset,
    read_idx,
    split_validation,
)
from cnnlab.data import registry
from cnnlab.data.locate import RemoteFiles, cache_root, locate_files
from cnnlab.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATASETS = Path(os.environ.get("CNNLAB_DATA") or REPO_ROOT.parent / "shared" / "datasets")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
IDX_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

needs_mnist = pytest.mark.skipif(
    not (SHARED_DATASETS / "mnist" / IDX_FILES[0]).is_file(), reason=f"no MNIST copy under {SHARED_DATASETS}"
)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Never download; the cache is an empty temporary folder; no CNNLAB_DATA."""
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    content = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def write_fake_mnist(folder: Path, n_train: int = 20, n_test: int = 10, compress: bool = True) -> None:
    """Four small, valid IDX files; pixel values encode the image index."""
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = np.arange(count) % 10
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)


# --- registry and config ---------------------------------------------------------------


def test_registry_lists_builtin_datasets():
    assert {"digits", "mnist", "fashion-mnist"} <= set(dataset_names())


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(ConfigError) as caught:
        load_dataset("mnsit")
    message = str(caught.value)
    assert 'Did you mean "mnist"?' in message
    assert "digits" in message and "fashion-mnist" in message


def test_dataset_config_accepts_a_bare_name_and_forbids_extra_fields():
    assert DatasetConfig.model_validate("digits") == DatasetConfig(name="digits")
    with pytest.raises(pydantic.ValidationError):
        DatasetConfig(name="digits", shuffle=True)
    with pytest.raises(pydantic.ValidationError):
        DatasetConfig(name="digits", subset=0)
    with pytest.raises(pydantic.ValidationError):
        DatasetConfig(name="digits", normalize="minmax")


def test_dataset_rejects_inconsistent_arrays():
    images = np.zeros((3, 1, 2, 2), np.uint8)
    with pytest.raises(DataError, match="labels"):
        Dataset("x", ["a"], images, np.zeros(2, np.int64), images, np.zeros(3, np.int64), "test")
    with pytest.raises(DataError, match="uint8"):
        Dataset("x", ["a"], images.astype(np.float32), np.zeros(3, np.int64), images, np.zeros(3, np.int64), "test")


# --- digits ---------------------------------------------------------------------------


def test_digits_loads_with_a_stratified_deterministic_split():
    dataset = load_dataset("digits")
    assert dataset.name == "digits"
    assert dataset.classes == [str(digit) for digit in range(10)]
    assert dataset.train_images.shape == (1437, 1, 8, 8) and dataset.test_images.shape == (360, 1, 8, 8)
    assert dataset.train_images.dtype == np.uint8 and dataset.train_labels.dtype == np.int64
    assert dataset.input_shape == (1, 8, 8) and dataset.n_classes == 10
    assert dataset.train_images.max() == 255 and dataset.train_images.min() == 0
    test_counts = np.bincount(dataset.test_labels, minlength=10)
    assert test_counts.min() >= 35 and test_counts.max() <= 37  # 20% of each class's ~180
    again = load_dataset(DatasetConfig(name="digits"))
    np.testing.assert_array_equal(dataset.test_images, again.test_images)
    np.testing.assert_array_equal(dataset.train_labels, again.train_labels)


def test_subsets_are_seeded_samples_that_keep_every_class():
    from cnnlab.data.registry import take_subsets
    full = load_dataset("digits")
    order = np.argsort(full.train_labels, kind="stable")  # stored class by class, like CIFAR-10 JPEGs
    by_class = dataclasses.replace(full, train_images=full.train_images[order], train_labels=full.train_labels[order])
    small = take_subsets(by_class, 100, 50)
    assert len(small.train_images) == 100 and len(small.test_labels) == 50
    assert set(small.train_labels.tolist()) == set(range(10)), "the first 100 would hold classes 0 and 1 only"
    again = take_subsets(by_class, 100, 50)
    np.testing.assert_array_equal(small.train_images, again.train_images)
    assert len(load_dataset(DatasetConfig(name="digits", subset=10**6)).train_images) == 1437


# --- real MNIST -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_from_data_dir():
    return load_dataset("mnist", data_dir=SHARED_DATASETS)


@needs_mnist
def test_mnist_from_data_dir(mnist_from_data_dir):
    dataset = mnist_from_data_dir
    assert dataset.train_images.shape == (60000, 1, 28, 28) and dataset.test_images.shape == (10000, 1, 28, 28)
    assert np.bincount(dataset.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert dataset.source == str(SHARED_DATASETS / "mnist")


@needs_mnist
def test_mnist_from_environment(monkeypatch, mnist_from_data_dir):
    monkeypatch.setenv("CNNLAB_DATA", str(SHARED_DATASETS))
    dataset = load_dataset(DatasetConfig(name="MNIST", test_subset=100))
    assert dataset.name == "mnist" and len(dataset.test_images) == 100
    np.testing.assert_array_equal(dataset.train_labels, mnist_from_data_dir.train_labels)


# --- IDX reader -----------------------------------------------------------------------


def test_read_idx_reads_gzip_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a.gz", array)), array)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a", array, compress=False)), array)


def test_truncated_gzip_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((50, 28, 28), np.uint8) + 7)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz") as caught:
        read_idx(path)
    assert "truncated" in str(caught.value) and "Delete it" in str(caught.value)


def test_raw_file_of_wrong_size_names_the_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated"):
        read_idx(path)
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8)) + b"\0")
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(path)


def test_bad_magic_names_the_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is not an IDX file"):
        read_idx(path)


def test_swapped_files_and_count_mismatch_are_reported(tmp_path):
    folder = tmp_path / "mnist"
    write_fake_mnist(folder)
    (folder / IDX_FILES[0]).write_bytes((folder / IDX_FILES[1]).read_bytes())
    with pytest.raises(DataError, match="should hold images"):
        load_dataset("mnist", data_dir=tmp_path)
    write_fake_mnist(folder)
    write_idx(folder / IDX_FILES[1], np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_labels_beyond_the_classes_are_reported(tmp_path):
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / IDX_FILES[3], np.full(10, 12, np.uint8))
    with pytest.raises(DataError, match="holds label 12"):
        load_dataset("mnist", data_dir=tmp_path)


# --- locating files -------------------------------------------------------------------


def test_search_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    folders = find_data_dirs("fashion-mnist", tmp_path / "explicit")
    assert folders[:5] == [
        tmp_path / "explicit" / "fashion-mnist",
        tmp_path / "explicit" / "fashion_mnist",
        tmp_path / "explicit" / "FashionMNIST" / "raw",
        tmp_path / "explicit",
        tmp_path / "env" / "fashion-mnist",
    ]
    assert folders.index(tmp_path / "cache" / "cnnlab" / "fashion-mnist") > folders.index(tmp_path / "env" / "fashion-mnist")
    assert folders[-1] == Path("/usr/share/datasets/fashion-mnist")


def test_cache_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "cnnlab"


def test_missing_dataset_offline_lists_where_it_looked(tmp_path):
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    write_idx(tmp_path / "data" / "mnist" / IDX_FILES[0], np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", data_dir=tmp_path / "data")
    message = str(caught.value)
    for folder in find_data_dirs("mnist", tmp_path / "data"):
        assert str(folder) in message
    assert "CNNLAB_OFFLINE" in message and "CNNLAB_DATA" in message and "--data-dir" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "lacks train-labels-idx1-ubyte.gz" in message
    assert "\n" not in message


def test_missing_fashion_mnist_mentions_the_debian_package():
    with pytest.raises(DataError, match="apt install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_fashion_mnist_from_the_debian_folder(monkeypatch, tmp_path):
    debian_folder = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    write_fake_mnist(debian_folder)
    entry = registry._REGISTRY["fashion-mnist"]
    monkeypatch.setitem(registry._REGISTRY, "fashion-mnist", dataclasses.replace(entry, system_dirs=(debian_folder,)))
    dataset = load_dataset("fashion-mnist")
    assert dataset.source == str(debian_folder) and dataset.classes[0] == "T-shirt/top"
    assert dataset.train_images.shape == (20, 1, 28, 28) and dataset.test_labels.tolist() == list(range(10))


def test_uncompressed_files_in_the_torchvision_layout(tmp_path):
    write_fake_mnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    dataset = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert dataset.train_images.shape == (20, 1, 28, 28)


# --- downloads ------------------------------------------------------------------------


def fake_remote(tmp_path: Path) -> tuple[RemoteFiles, dict[str, bytes]]:
    source = tmp_path / "server"
    write_fake_mnist(source)
    served = {f"https://mirror.test/{name}": (source / name).read_bytes() for name in IDX_FILES}
    checksums = {name: hashlib.md5(served[f"https://mirror.test/{name}"]).hexdigest() for name in IDX_FILES}
    return RemoteFiles(checksums=checksums, mirrors=["https://dead.test/", "https://mirror.test/"]), served


def test_download_falls_back_to_the_next_mirror_and_checks_md5(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNLAB_OFFLINE")
    remote, served = fake_remote(tmp_path)

    def fetch(url: str) -> bytes:
        if url not in served:
            raise OSError("connection refused")
        return served[url]

    paths = locate_files("mnist", None, remote, fetch=fetch)
    assert paths[IDX_FILES[0]] == tmp_path / "cache" / "cnnlab" / "mnist" / IDX_FILES[0]
    assert paths[IDX_FILES[0]].read_bytes() == served[f"https://mirror.test/{IDX_FILES[0]}"]
    assert sorted(path.name for path in paths[IDX_FILES[0]].parent.iterdir()) == sorted(IDX_FILES)


def test_download_with_wrong_md5_keeps_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNLAB_OFFLINE")
    remote, served = fake_remote(tmp_path)
    with pytest.raises(DataError, match="downloading failed: could not get .*MD5") as caught:
        locate_files("mnist", None, remote, fetch=lambda url: b"corrupted")
    assert "connection" not in str(caught.value)
    assert not (tmp_path / "cache" / "cnnlab" / "mnist").exists() or not any((tmp_path / "cache" / "cnnlab" / "mnist").iterdir())


# --- validation split and normalisation -----------------------------------------------


def test_split_validation_is_disjoint_seeded_and_sized():
    train, validation = split_validation(1000, 0.1, seed=3)
    assert len(validation) == 100 and len(train) == 900
    assert not set(train) & set(validation) and sorted([*train, *validation]) == list(range(1000))
    assert train.dtype == np.int64
    np.testing.assert_array_equal(validation, split_validation(1000, 0.1, seed=3)[1])
    assert not np.array_equal(validation, split_validation(1000, 0.1, seed=4)[1])
    train, validation = split_validation(50, 0.0, seed=0)
    assert len(validation) == 0 and len(train) == 50


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_split_validation_rejects_bad_fractions(fraction):
    with pytest.raises(ConfigError, match="validation_split"):
        split_validation(100, fraction, seed=0)


