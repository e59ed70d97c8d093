"""Test-time augmentation: the views an image is evaluated under, and their averaged prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError

TEST_TIME_VIEWS = {"none": 1, "flip": 2, "flip_shift": 6}


def test_time_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """none: [images]; flip: + the mirror; flip_shift: + both shifted 2 pixels up-left and down-right (reflected edges)."""
    if mode not in TEST_TIME_VIEWS:
        raise ConfigError(f'augment.test_time "{mode}" is not one of {", ".join(TEST_TIME_VIEWS)}.')
    views = [images] if mode == "none" else [images, images.flip(3)]
    if mode == "flip_shift":
        height, width = images.shape[2:]
        for view in list(views):
            padded = F.pad(view, (2, 2, 2, 2), mode="reflect")
            views += [padded[..., 4:, 4:], padded[..., :height, :width]]
    return views


test_time_views.__test__ = False  # not a pytest test, though its name starts with "test"


@torch.no_grad()
def predict_with_views(model: nn.Module, images: torch.Tensor, mode: str) -> torch.Tensor:
    """Class probabilities (N, K): the mean softmax over the test-time views. The model is used as it
    is, so put it in eval mode first."""
    views = test_time_views(images, mode)
    return sum(torch.softmax(model(view).float(), dim=1) for view in views) / len(views)
