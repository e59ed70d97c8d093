"""MNIST and Fashion-MNIST: 60,000 train and 10,000 test 28x28 grey images, 10 classes,
as the four standard IDX files (gzip-compressed or raw).

Checksums are the MD5 of the published .gz files, as listed in torchvision's
``datasets/mnist.py`` (``MNIST.resources``, ``FashionMNIST.resources``) and, for
Fashion-MNIST, in the dataset's own README. Files found on disk are not checked against
them (re-compressed copies, e.g. Debian's, differ); the IDX reader checks their structure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.data.idx import read_images_and_labels
from cnnlab.data.locate import RemoteFiles, locate_files
from cnnlab.data.registry import Dataset, register_dataset
from cnnlab.errors import DataError

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

MNIST_REMOTE = RemoteFiles(
    checksums={
        TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
        TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
        TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
    },
    mirrors=["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
)

FASHION_MNIST_REMOTE = RemoteFiles(
    checksums={
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    },
    mirrors=["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    how_to_get="On Debian or Ubuntu, `apt install dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist.",
)

DIGIT_CLASSES = [str(digit) for digit in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@register_dataset("mnist", folder_aliases=("MNIST/raw",))
def load_mnist(data_dir: Path | None) -> Dataset:
    """MNIST handwritten digits, 28x28 grey, 60,000 train / 10,000 test."""
    return load_idx_dataset("mnist", DIGIT_CLASSES, MNIST_REMOTE, data_dir)


@register_dataset(
    "fashion-mnist",
    folder_aliases=("FashionMNIST/raw",),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)
def load_fashion_mnist(data_dir: Path | None) -> Dataset:
    """Fashion-MNIST (Zalando) clothing images, 28x28 grey, 60,000 train / 10,000 test."""
    return load_idx_dataset("fashion-mnist", FASHION_CLASSES, FASHION_MNIST_REMOTE, data_dir)


def load_idx_dataset(name: str, classes: list[str], remote: RemoteFiles, data_dir: Path | None) -> Dataset:
    """Find (or download) the four IDX files of ``name`` and read them into a Dataset."""
    paths = locate_files(name, data_dir, remote)
    train_images, train_labels = read_images_and_labels(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    test_images, test_labels = read_images_and_labels(paths[TEST_IMAGES], paths[TEST_LABELS])
    _check_labels(train_labels, len(classes), paths[TRAIN_LABELS])
    _check_labels(test_labels, len(classes), paths[TEST_LABELS])
    return Dataset(
        name=name,
        classes=list(classes),
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        source=str(paths[TRAIN_IMAGES].parent),
    )


def _check_labels(labels: np.ndarray, n_classes: int, path: Path) -> None:
    if len(labels) and int(labels.max()) >= n_classes:
        raise DataError(
            f"{path} holds label {int(labels.max())} but this dataset has {n_classes} classes (0..{n_classes - 1}); "
            "the file belongs to another dataset or is damaged. Delete it and let cnnlab download it again."
        )
