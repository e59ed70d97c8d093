import numpy as np
import torch

from cnnlab.data.device_images import DeviceImages
from cnnlab.data.normalization import fit_normalization


def test_zscore_uses_training_statistics():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 3, 4, 4), dtype=np.uint8)
    norm = fit_normalization("zscore", images)
    expected = images.astype(np.float64) / 255
    np.testing.assert_allclose(norm.mean, expected.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(norm.std, expected.std(axis=(0, 2, 3)), rtol=1e-6)
    data = DeviceImages(images, np.zeros(50), norm, torch.device("cpu"))
    batch, _ = data.batch(torch.arange(50))
    np.testing.assert_allclose(batch.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(batch.std(dim=(0, 2, 3), unbiased=False).numpy(), 1, atol=1e-4)


def test_global_zscore_is_one_mean_and_std_over_every_channel():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(20, 3, 4, 4), dtype=np.uint8)
    images[:, 0] //= 4  # channels with different statistics, so per-channel and global differ
    norm = fit_normalization("zscore-global", images)
    pixels = images.astype(np.float64) / 255
    np.testing.assert_allclose(norm.mean, [pixels.mean()] * 3, rtol=1e-9)  # as the report's np.mean(x_train)
    np.testing.assert_allclose(norm.std, [pixels.std()] * 3, rtol=1e-6)
    batch, _ = DeviceImages(images, np.zeros(20), norm, torch.device("cpu")).batch(torch.arange(20))
    assert abs(float(batch.mean())) < 1e-4 and abs(float(batch.std(unbiased=False)) - 1) < 1e-4
    assert float(batch[:, 0].mean()) < -0.5  # the darker channel stays darker: no per-channel centring


def test_symmetric_maps_pixels_to_minus_one_to_one():
    images = np.array([0, 51, 255], dtype=np.uint8).reshape(3, 1, 1, 1)
    batch, _ = DeviceImages(images, np.zeros(3), fit_normalization("symmetric", images), torch.device("cpu")).batch(
        torch.arange(3))
    np.testing.assert_allclose(batch.flatten().numpy(), [-1.0, -0.6, 1.0], atol=1e-6)


def test_batch_is_index_gather_with_scale():
    images = np.arange(4 * 1 * 2 * 2, dtype=np.uint8).reshape(4, 1, 2, 2)
    labels = np.array([3, 1, 2, 0])
    data = DeviceImages(images, labels, fit_normalization("scale", images), torch.device("cpu"))
    batch, batch_labels = data.batch(torch.tensor([2, 0]))
    assert batch_labels.tolist() == [2, 3]
    np.testing.assert_allclose(batch.numpy(), images[[2, 0]] / 255, rtol=1e-6)


def test_zscore_statistics_are_computed_once_and_cached(monkeypatch):
    from cnnlab.data import normalization as batches

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(30, 3, 4, 4), dtype=np.uint8)
    positions = np.arange(0, 30, 2)
    first = batches.cached_normalization("zscore", "test-set|here", images, positions)
    np.testing.assert_allclose(first.mean, batches.fit_normalization("zscore", images[positions]).mean)
    monkeypatch.setattr(batches, "fit_normalization", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = batches.cached_normalization("zscore", "test-set|here", images, positions)
    assert again == first


def test_global_zscore_is_cached_apart_from_the_per_channel_one(monkeypatch, tmp_path):
    from cnnlab.data import normalization as batches

    monkeypatch.setattr(batches, "cache_root", lambda: tmp_path)
    images = np.random.default_rng(3).integers(0, 256, size=(10, 3, 2, 2), dtype=np.uint8)
    images[:, 2] //= 8
    positions = np.arange(10)
    per_channel = batches.cached_normalization("zscore", "set", images, positions)
    overall = batches.cached_normalization("zscore-global", "set", images, positions)
    assert overall.mode == "zscore-global" and len(set(overall.mean)) == 1 and len(set(per_channel.mean)) == 3
