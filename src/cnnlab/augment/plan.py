"""What augmentation does, in one vocabulary whichever the config used, and how reports describe it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cnnlab.augment.test_time import TEST_TIME_VIEWS

Pair = tuple[float, float]


@dataclass(frozen=True)
class AugmentPlan:
    """What to do, in one vocabulary. Ranges are (low, high), sampled uniformly and independently per image."""

    horizontal_flip: float = 0.0               # probability
    alternating_flip: bool = False             # flip state per image alternates between epochs (p = 0.5 overall)
    vertical_flip: float = 0.0
    rotation_deg: Pair = (0.0, 0.0)            # positive turns counter-clockwise, as torchvision
    shift_fraction: Pair = (0.0, 0.0)          # max |shift| as fractions of (width, height)
    scale: Pair = (1.0, 1.0)                   # torchvision: one content magnification for both axes
    zoom: Pair = (1.0, 1.0)                    # Keras: per-axis sampling factor; content scale is 1/zoom
    shear_deg: Pair = (0.0, 0.0)               # along x
    fill_mode: str = "nearest"
    crop_padding: int = 0
    crop_size: Optional[int] = None
    crop_padding_mode: str = "constant"
    brightness: Pair = (1.0, 1.0)              # factors on [0, 1] pixel values
    contrast: Pair = (1.0, 1.0)
    saturation: Pair = (1.0, 1.0)
    cutout_size: int = 0
    cutout_count: int = 0
    test_time: str = "none"

    @property
    def has_affine(self) -> bool:
        return (self.rotation_deg, self.shift_fraction, self.scale, self.zoom, self.shear_deg) != (
            (0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (1.0, 1.0), (0.0, 0.0))

    @property
    def has_flip(self) -> bool:
        return self.horizontal_flip > 0 or self.vertical_flip > 0 or self.alternating_flip

    @property
    def has_colour(self) -> bool:
        return (self.brightness, self.contrast, self.saturation) != ((1.0, 1.0),) * 3

    @property
    def trains(self) -> bool:
        """True when training batches are changed at all."""
        return self.has_affine or self.has_flip or self.has_colour or self.crop_padding > 0 or self.cutout_size > 0


def describe(plan: AugmentPlan) -> list[str]:
    """Human-readable lines for reports, the same whichever vocabulary the config used."""
    lines = [f"{name} flip (p={p:g})" for name, p in (("horizontal", plan.horizontal_flip),
                                                      ("vertical", plan.vertical_flip)) if p > 0]
    if plan.alternating_flip:
        lines[0] = "horizontal flip alternating per image between epochs (half the images each epoch)"
    for name, (low, high), neutral in (("rotation", plan.rotation_deg, 0.0), ("shear", plan.shear_deg, 0.0),
                                       ("scale", plan.scale, 1.0), ("zoom per axis (Keras)", plan.zoom, 1.0),
                                       ("brightness", plan.brightness, 1.0), ("contrast", plan.contrast, 1.0),
                                       ("saturation", plan.saturation, 1.0)):
        unit = "°" if neutral == 0.0 else ""
        if (low, high) != (neutral, neutral):
            lines.append(f"{name} ±{high:g}{unit}" if low == -high else f"{name} {low:g}–{high:g}{unit}")
    if plan.shift_fraction != (0.0, 0.0):
        lines.append(f"shift up to {plan.shift_fraction[0]:.0%} of the width, {plan.shift_fraction[1]:.0%} of the height")
    if plan.has_affine:
        lines.append(f"fill outside the image: {plan.fill_mode}")
    if plan.crop_padding:
        lines.append(f"pad {plan.crop_padding} pixels ({plan.crop_padding_mode}) and crop back at a random place")
    if plan.cutout_size:
        lines.append(f"cutout: {plan.cutout_count} square(s) of {plan.cutout_size}x{plan.cutout_size} pixels")
    if plan.test_time != "none":
        lines.append(f"test-time views: {plan.test_time} ({TEST_TIME_VIEWS[plan.test_time]} views averaged)")
    return lines
