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
def predict_with_views(model: nn.Module, images: torch.Tensor, mode: str, below: float | None = None) -> torch.Tensor:
    """Class probabilities (N, K): the mean softmax over the test-time views. With ``below``, only the
    images whose plain prediction's top probability is under it get the other views; the rest keep
    their plain prediction. The model is used as it is, so put it in eval mode first."""
    probabilities = torch.softmax(model(images).float(), dim=1)
    if mode == "none":
        return probabilities
    unsure = probabilities.amax(dim=1) < below if below is not None else None
    chosen = images if unsure is None else images[unsure]
    if len(chosen) == 0:
        return probabilities
    views = test_time_views(chosen, mode)
    total = probabilities.clone() if unsure is None else probabilities[unsure]
    for view in views[1:]:
        total += torch.softmax(model(view).float(), dim=1)
    if unsure is None:
        return total / len(views)
    probabilities[unsure] = total / len(views)
    return probabilities
