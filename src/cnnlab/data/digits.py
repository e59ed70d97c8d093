"""scikit-learn's 8x8 handwritten digits (1,797 images), bundled with scikit-learn, so
they work offline: the quickest real dataset for tests and smoke runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.data.registry import Dataset, register_dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0
MAX_VALUE = 16  # load_digits counts 0..16 set pixels per 4x4 block


@register_dataset("digits")
def load_digits_dataset(data_dir: Path | None) -> Dataset:
    """scikit-learn's 8x8 digits, 1 channel, 10 classes; a fixed stratified 80/20 split
    (seed 0), pixel values 0..16 scaled to 0..255. ``data_dir`` is not used."""
    # imported here, not at the top: scikit-learn costs every command (predict, export, --help) 1.5 s of start-up
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255 / MAX_VALUE)).astype(np.uint8)[:, np.newaxis, :, :]
    labels = bunch.target.astype(np.int64)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return Dataset(
        name="digits",
        classes=[str(digit) for digit in range(10)],
        train_images=np.ascontiguousarray(train_images),
        train_labels=train_labels,
        test_images=np.ascontiguousarray(test_images),
        test_labels=test_labels,
        source=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}), stratified 80/20 split, seed {SPLIT_SEED}",
    )
