"""Batched data augmentation on the training device, in Keras ImageDataGenerator or torchvision words.

Both vocabularies map to one `AugmentPlan`. Every image gets its own random parameters and there
is no per-image Python loop: all geometry (flips, rotation, shift, zoom/scale, shear) is one 2x3
matrix per image applied by a single `affine_grid` + `grid_sample`; pad-and-crop is two gathers;
colour jitter and cutout are per-image factors and masks broadcast over the batch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from cnnlab.batches import Normalization
from cnnlab.errors import ConfigError, did_you_mean

Range = Union[float, tuple[float, float]]
Pair = tuple[float, float]
PADDING_MODES = {"nearest": "border", "reflect": "reflection", "constant": "zeros"}
TEST_TIME_VIEWS = {"none": 1, "flip": 2, "flip_shift": 6}


# --------------------------------------------------------------------------- config (user words)

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RandomCrop(Section):
    size: Optional[int] = Field(default=None, ge=1, description="must equal the image size (default)")
    padding: int = Field(ge=0, description="pixels added on every side before cropping")
    padding_mode: Literal["constant", "reflect", "edge"] = "constant"


class RandomAffine(Section):
    degrees: Range = 0.0
    translate: Optional[Pair] = Field(default=None, description="max |shift| as fractions of (width, height)")
    scale: Optional[Pair] = None
    shear: Range = 0.0


class ColorJitter(Section):
    brightness: Range = 0.0
    contrast: Range = 0.0
    saturation: Range = 0.0
    hue: float = 0.0


class Cutout(Section):
    size: int = Field(ge=1, description="side of the square, pixels")
    count: int = Field(default=1, ge=1)


class AugmentConfig(Section):
    """The `augment:` section, as written: Keras names, torchvision names, or a mix."""

    horizontal_flip: bool = False
    vertical_flip: bool = False
    width_shift_range: float = Field(default=0.0, ge=0, lt=1, description="fraction of the width")
    height_shift_range: float = Field(default=0.0, ge=0, lt=1, description="fraction of the height")
    rotation_range: float = Field(default=0.0, ge=0, le=180, description="degrees")
    zoom_range: Range = 0.0
    shear_range: float = Field(default=0.0, ge=0, lt=90, description="degrees")
    fill_mode: Optional[Literal["nearest", "constant", "reflect"]] = None
    random_horizontal_flip: float = Field(default=0.0, ge=0, le=1, description="probability; true means 0.5")
    random_vertical_flip: float = Field(default=0.0, ge=0, le=1)
    random_rotation: Range = 0.0
    random_crop: Optional[RandomCrop] = None
    random_affine: Optional[RandomAffine] = None
    color_jitter: Optional[ColorJitter] = None
    cutout: Optional[Cutout] = None
    test_time: Literal["none", "flip", "flip_shift"] = "none"

    @field_validator("random_horizontal_flip", "random_vertical_flip", mode="before")
    @classmethod
    def _flag_is_half(cls, value):
        return (0.5 if value else 0.0) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _resolvable(self) -> "AugmentConfig":
        self.plan()  # surfaces conflicts and bad ranges while validating
        return self

    def plan(self) -> "AugmentPlan":
        """The internal form; raises ValueError on conflicting or out-of-range settings."""
        return _plan(self)

    def is_empty(self) -> bool:
        """True when nothing is augmented, in training or at test time."""
        return not self.plan().trains and self.test_time == "none"


def parse_augment(raw: dict | None) -> AugmentConfig:
    """Validate an `augment:` mapping; errors are ConfigError naming the key, with a close valid key."""
    try:
        return AugmentConfig.model_validate(raw or {})
    except ValidationError as error:
        raise ConfigError(_explain(error)) from None


def _explain(error: ValidationError) -> str:
    messages = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        field = ".".join(["augment", *location])
        if item["type"] == "extra_forbidden":
            section = AugmentConfig if len(location) == 1 else _NESTED.get(location[0], AugmentConfig)
            choices = list(section.model_fields)
            messages.append(f'unknown key "{field}".{did_you_mean(location[-1], choices)} '
                            f"Valid keys here: {', '.join(choices)}")
        else:
            shown = "" if isinstance(item.get("input"), dict) else f" (got {item.get('input')!r})"
            messages.append(f"{field}: {item['msg'].removeprefix('Value error, ')}{shown}")
    return "Invalid augment settings: " + "; ".join(messages) + "."


_NESTED = {"random_crop": RandomCrop, "random_affine": RandomAffine, "color_jitter": ColorJitter, "cutout": Cutout}


# --------------------------------------------------------------------------- plan (internal form)

@dataclass(frozen=True)
class AugmentPlan:
    """What to do, in one vocabulary. Ranges are (low, high), sampled uniformly and independently per image."""

    horizontal_flip: float = 0.0               # probability
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
        return self.horizontal_flip > 0 or self.vertical_flip > 0

    @property
    def has_colour(self) -> bool:
        return (self.brightness, self.contrast, self.saturation) != ((1.0, 1.0),) * 3

    @property
    def trains(self) -> bool:
        """True when training batches are changed at all."""
        return self.has_affine or self.has_flip or self.has_colour or self.crop_padding > 0 or self.cutout_size > 0


def _plan(config: AugmentConfig) -> AugmentPlan:
    affine = config.random_affine or RandomAffine()
    jitter = config.color_jitter or ColorJitter()
    if jitter.hue:
        raise ValueError("color_jitter.hue is not supported (it needs an HSV round trip per pixel); remove it or set 0")
    keras_shift = (config.width_shift_range, config.height_shift_range)
    torch_geometry = bool(config.random_rotation or config.random_affine)
    crop = config.random_crop
    zoom = _around(config.zoom_range, 1.0, "zoom_range")
    scale = _positive(affine.scale, "random_affine.scale")
    if zoom != (1.0, 1.0) and scale != (1.0, 1.0):
        raise ValueError("zoom_range (Keras, per axis) and random_affine.scale (torchvision) both set; give only one")
    return AugmentPlan(
        horizontal_flip=_one_of(0.0, horizontal_flip=0.5 * config.horizontal_flip,
                                random_horizontal_flip=config.random_horizontal_flip),
        vertical_flip=_one_of(0.0, vertical_flip=0.5 * config.vertical_flip,
                              random_vertical_flip=config.random_vertical_flip),
        rotation_deg=_one_of((0.0, 0.0), rotation_range=_around(config.rotation_range, 0.0, "rotation_range"),
                             random_rotation=_around(config.random_rotation, 0.0, "random_rotation"),
                             **{"random_affine.degrees": _around(affine.degrees, 0.0, "random_affine.degrees")}),
        shift_fraction=_one_of((0.0, 0.0), width_or_height_shift_range=keras_shift,
                               **{"random_affine.translate": _fractions(affine.translate)}),
        zoom=zoom, scale=scale,
        shear_deg=_one_of((0.0, 0.0), shear_range=_around(config.shear_range, 0.0, "shear_range"),
                          **{"random_affine.shear": _around(affine.shear, 0.0, "random_affine.shear")}),
        fill_mode=config.fill_mode or ("constant" if torch_geometry else "nearest"),
        crop_padding=crop.padding if crop else 0, crop_size=crop.size if crop else None,
        crop_padding_mode=crop.padding_mode if crop else "constant",
        brightness=_around(jitter.brightness, 1.0, "color_jitter.brightness", floor=0.0),
        contrast=_around(jitter.contrast, 1.0, "color_jitter.contrast", floor=0.0),
        saturation=_around(jitter.saturation, 1.0, "color_jitter.saturation", floor=0.0),
        cutout_size=config.cutout.size if config.cutout else 0,
        cutout_count=config.cutout.count if config.cutout else 0,
        test_time=config.test_time)


def _one_of(neutral, **sources):
    """The one source that differs from ``neutral``; two such sources are a conflict."""
    given = {name: value for name, value in sources.items() if value != neutral}
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} set the same thing; give only one of them")
    return next(iter(given.values()), neutral)


def _around(value: Range, centre: float, name: str, floor: float | None = None) -> Pair:
    """A number v means (centre - v, centre + v), as Keras and torchvision read it; a pair is kept."""
    if isinstance(value, tuple):
        low, high = float(value[0]), float(value[1])
    else:
        if value < 0:
            raise ValueError(f"{name} must not be negative (got {value})")
        low, high = centre - value, centre + value
        low = max(low, floor) if floor is not None else low
    if low > high:
        raise ValueError(f"{name} range must have low <= high (got [{low}, {high}])")
    if centre == 1.0 and floor is None and low <= 0:
        raise ValueError(f"{name} must keep factors above 0 (got [{low}, {high}]); use a value below 1")
    return low, high


def _positive(pair: Optional[Pair], name: str) -> Pair:
    if pair is None:
        return 1.0, 1.0
    return _around((pair[0], pair[1]), 1.0, name)


def _fractions(pair: Optional[Pair]) -> Pair:
    if pair is not None and not all(0 <= value <= 1 for value in pair):
        raise ValueError(f"random_affine.translate must be fractions in [0, 1] (got {list(pair)})")
    return (0.0, 0.0) if pair is None else (float(pair[0]), float(pair[1]))
