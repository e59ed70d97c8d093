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
