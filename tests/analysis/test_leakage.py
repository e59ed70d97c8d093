"""The train/test duplicate check: planted exact and near duplicates are found, lookalikes and a clean set
give none, the counts and accuracy split are right, and the check survives a round trip through its files."""

import json

import numpy as np
import pytest

from cnnlab import runs
from cnnlab.analysis import leakage
from cnnlab.errors import CnnlabError


def smooth_images(count: int, seed: int, side: int = 32) -> np.ndarray:
    """Distinct photograph-like images: random 4x4 colour patterns enlarged smoothly to ``side`` pixels."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(count, 3, 4, 4))
    position = np.linspace(0, 3, side)
    low, fraction = np.minimum(position.astype(int), 2), position - np.minimum(position.astype(int), 2)
    rows = coarse[:, :, low] * (1 - fraction)[:, None] + coarse[:, :, low + 1] * fraction[:, None]
    smooth = rows[..., low] * (1 - fraction) + rows[..., low + 1] * fraction
    return np.clip(128 + 45 * smooth, 0, 255).astype(np.uint8)


def noisy(image: np.ndarray, seed: int, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image.astype(float) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted():
    train, test = smooth_images(400, seed=1), smooth_images(100, seed=2)
    test[3] = train[10]  # exact
    test[5] = np.clip(train[20] * 0.85 + 20, 0, 255).astype(np.uint8)  # recoloured: contrast and brightness
    test[5] = noisy(test[5], 5, 3)  # and re-encoded (noise)
    test[7] = np.roll(train[30], 1, axis=2)  # shifted by a pixel
    pattern = smooth_images(1, seed=3)[0]
    for position in range(100, 112):  # a crowd of lookalikes: variants of one pattern, none a copy
        train[position] = noisy(pattern, position, 8)
    test[9] = noisy(pattern, 999, 8)
    test[11] = train[105]  # a byte-identical copy inside the crowd is still an exact duplicate
    return train, test, leakage.find_duplicates(train, test)


def test_planted_exact_and_near_duplicates_are_found(planted):
    _, _, found = planted
    assert sorted(map(tuple, found.exact.tolist())) == [(3, 10), (11, 105)]
    assert sorted(map(tuple, found.near.tolist())) == [(5, 20), (7, 30)]
    assert list(found.test_indices()) == [3, 5, 7, 11]
    assert np.all(found.near_distance <= leakage.NEAR_HASH_DISTANCE)
    assert np.all(found.near_correlation >= leakage.MIN_CORRELATION)


def test_a_lookalike_in_a_crowd_is_not_a_duplicate(planted):
    _, _, found = planted
    assert 9 not in found.test_indices()
    assert found.crowded >= 2  # test images 9 and 11 sit among more than MAX_NEIGHBOURS lookalikes


def test_a_clean_set_has_no_duplicates():
    found = leakage.find_duplicates(smooth_images(400, seed=4), smooth_images(100, seed=5))
    assert len(found.exact) == 0 and len(found.near) == 0 and len(found.test_indices()) == 0


def flat_colour(red: int, green: int) -> np.ndarray:
    image = np.full((3, 8, 8), 128, dtype=np.uint8)
    image[0], image[1] = red, green
    return image


def test_flat_images_of_different_colours_are_not_duplicates():
    """Their grey versions are constant but for float rounding, which must not read as a pattern (it
    correlated at 1.0 before flat images were set apart)."""
    train = np.stack([flat_colour(40 * red, 30 * green) for red in range(6) for green in range(5)])
    test = np.stack([flat_colour(40 * red, 150) for red in range(6)] + [train[7]])
    found = leakage.find_duplicates(train, test)
    assert sorted(map(tuple, found.exact.tolist())) == [(6, 7)] and len(found.near) == 0


def test_small_images_need_a_nearly_identical_match():
    assert leakage.min_correlation((8, 8)) == leakage.DENSE_MIN_CORRELATION
    assert leakage.min_correlation((32, 32)) == leakage.MIN_CORRELATION


def test_hamming_distances_match_bit_counts_with_and_without_numpy_popcount(monkeypatch):
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 2 ** 63, 7, dtype=np.uint64), rng.integers(0, 2 ** 63, 5, dtype=np.uint64)
    expected = np.array([[bin(int(a) ^ int(b)).count("1") for b in second] for a in first])
    assert np.array_equal(leakage.hamming_distances(first, second), expected)
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # NumPy 1.x: the byte table
    assert np.array_equal(leakage.hamming_distances(first, second), expected)


def test_difference_hash_sees_a_brightness_gradient():
    rising = np.tile(np.arange(32, dtype=np.uint8) * 8, (1, 1, 32, 1))
    assert leakage.difference_hashes(rising)[0] == np.uint64(2 ** 64 - 1)  # every cell brighter to the right
    assert leakage.difference_hashes(rising[..., ::-1].copy())[0] == 0


def test_accuracy_on_duplicates_by_hand():
    correct = np.array([True, True, False, False, True, True, True, True, True, True])
    split = leakage.accuracy_on_duplicates({"test_indices": [0, 1]}, correct)
    assert split["count"] == 2 and split["share"] == pytest.approx(0.2)
    assert split["accuracy_on_duplicates"] == 1.0 and split["accuracy_on_rest"] == pytest.approx(0.75)
    assert split["inflation"] == pytest.approx(0.05) and split["warn"]
    fair = leakage.accuracy_on_duplicates({"test_indices": [0, 2]}, correct)  # 50% on them, 75% on the rest
    assert fair["inflation"] < 0 and not fair["warn"]
    assert leakage.accuracy_on_duplicates({"test_indices": []}, correct)["accuracy_on_duplicates"] is None


def test_saved_check_reads_back_with_thumbnails(planted, tmp_path):
    train, test, found = planted
    train_labels, test_labels = np.arange(400) % 10, np.arange(100) % 10
    summary = leakage.save_duplicates(tmp_path, found, train, test, train_labels, test_labels)
    read, thumbnails = leakage.read_duplicates(tmp_path)
    assert read == json.loads(json.dumps(summary))
    assert read["exact_pairs"] == 2 and read["near_pairs"] == 2 and read["test_indices"] == [3, 5, 7, 11]
    assert [pair["kind"] for pair in read["pairs"]] == ["exact", "exact", "near", "near"]
    assert read["label_disagreements"] == sum(test_labels[t] != train_labels[j] for t, j in [(3, 10), (11, 105),
                                                                                             (5, 20), (7, 30)])
    assert np.array_equal(thumbnails["test"][0], test[3]) and np.array_equal(thumbnails["train"][0], train[10])
    assert leakage.read_duplicates(tmp_path / "elsewhere") is None


def test_thumbnails_of_large_images_are_shrunk():
    large = np.full((2, 3, 128, 96), 200, dtype=np.uint8)
    small = leakage.thumbnails(large)
    assert small.shape == (2, 3, 64, 48) and np.all(small == 200)


def test_a_damaged_check_file_is_named(tmp_path):
    (tmp_path / runs.LEAKAGE_FILE).write_text('{"cnnlab": "leakage", "test_indices": 3}')
    with pytest.raises(CnnlabError, match="leakage.json"):
        leakage.read_duplicates(tmp_path)


@pytest.mark.slow
def test_cifar10_jpeg_has_its_known_near_duplicates_and_mnist_none(datasets_dir):
    """The measured outcome (docs: the module docstring): no exact copies in either, 126 near pairs (119 test
    images) in cifar10-jpeg, every MNIST lookalike rejected."""
    from cnnlab.data import load_dataset

    if not (datasets_dir / "cifar10-jpeg.tar.gz").exists():
        pytest.skip("cifar10-jpeg.tar.gz not present")
    cifar = load_dataset("cifar10-jpeg", datasets_dir)
    found = leakage.find_duplicates(cifar.train_images, cifar.test_images)
    assert len(found.exact) == 0 and 100 <= len(found.near) <= 160
    mnist = load_dataset("mnist", datasets_dir)
    found = leakage.find_duplicates(mnist.train_images, mnist.test_images)
    assert len(found.exact) == 0 and len(found.near) == 0
