"""Patch whitening: a first convolution whose filters decorrelate the image's k x k patches.

Its weights are not learned: they are computed once from the training images (the eigenvectors
of the patch covariance, divided by the square roots of their eigenvalues, and their negatives so
a ReLU/GELU after it loses nothing). The network then starts from inputs whose patch statistics
are white, which lets fast CIFAR-10 recipes train at high learning rates from the first step.
Only the bias trains."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class PatchWhitening(nn.Conv2d):
    """A k x k convolution from C channels to 2 * C * k * k, set by `fit` and then frozen."""

    def __init__(self, in_channels: int, kernel: int, eps: float = 5e-4):
        super().__init__(in_channels, 2 * in_channels * kernel * kernel, kernel, padding=0, bias=True)
        self.eps = eps
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from normalised float images (N, C, H, W) (a few thousand suffice)."""
        kernel = self.kernel_size[0]
        patches = F.unfold(images.float(), kernel).transpose(1, 2).reshape(-1, self.in_channels * kernel * kernel)
        patches = patches.double()
        centred = patches - patches.mean(0)
        covariance = centred.T @ centred / (len(patches) - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.eps)[:, None]).float()
        filters = filters.reshape(-1, self.in_channels, kernel, kernel)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight.dtype))
        self.fitted.fill_(True)


FIT_IMAGES = 5000  # images the whitening filters are fitted on (airbench94's count)


def fitting_sample(train_indices: np.ndarray, count: int = FIT_IMAGES) -> np.ndarray:
    """``count`` of ``train_indices`` drawn at random (fixed seed: the same images for every run and every
    process of a distributed run), in ascending order for the gather. Not the first ``count``: datasets stored
    class by class (cifar10-jpeg's folders) would give the filters one class's patches (airplanes only)."""
    if len(train_indices) <= count:
        return np.asarray(train_indices)
    chosen = np.random.default_rng(0).choice(len(train_indices), size=count, replace=False)
    return np.asarray(train_indices)[np.sort(chosen)]


def needs_data_initialization(model: nn.Module) -> bool:
    """True when ``model`` has a PatchWhitening layer not yet fitted."""
    return any(isinstance(module, PatchWhitening) and not bool(module.fitted) for module in model.modules())


def initialize_from_data(model: nn.Module, images: torch.Tensor) -> None:
    """Fit every not-yet-fitted PatchWhitening layer of ``model`` on ``images`` (normalised, on the
    model's device). A whitening layer must come first in the network, where it sees the images."""
    for module in model.modules():
        if isinstance(module, PatchWhitening) and not bool(module.fitted):
            module.fit(images)
