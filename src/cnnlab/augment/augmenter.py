"""Batched data augmentation on the training device, in Keras ImageDataGenerator or torchvision words.

Both vocabularies map to one `AugmentPlan`. Every image gets its own random parameters and there
is no per-image Python loop: all geometry (flips, rotation, shift, zoom/scale, shear) is one 2x3
matrix per image applied by a single `affine_grid` + `grid_sample`; pad-and-crop is two gathers;
colour jitter and cutout are per-image factors and masks broadcast over the batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnlab.augment.resample import apply_affine, compose_matrices
from cnnlab.data.device_images import Normalization
from cnnlab.errors import ConfigError, did_you_mean
from cnnlab.augment.test_time import TEST_TIME_VIEWS

Range = Union[float, tuple[float, float]]  # a number v means (centre - v, centre + v), as both libraries read it
Pair = tuple[float, float]
Fraction = Annotated[float, Field(ge=0, le=1)]
CROP_PADDING_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}  # -> F.pad
CLOSEST_SUPPORTED = {"random_erasing": ' Not supported; "cutout" erases squares of a fixed size.'}


# --------------------------------------------------------------------------- config (user words)

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RandomCrop(Section):
    size: Optional[int] = Field(default=None, ge=1, description="must equal the image size (default)")
    padding: int = Field(ge=0, description="pixels added on every side before cropping")
    padding_mode: Literal["constant", "reflect", "edge"] = "constant"


class RandomAffine(Section):
    degrees: Range = 0.0
    translate: tuple[Fraction, Fraction] = Field(default=(0.0, 0.0), description="max |shift| / (width, height)")
    scale: Pair = (1.0, 1.0)
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
    alternating_flip: bool = Field(default=False, description="horizontal flips that alternate per image: a random "
                                   "half in the first epoch, then every image the other way from the epoch before")
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
            hint = CLOSEST_SUPPORTED.get(location[-1]) or did_you_mean(location[-1], choices)
            messages.append(f'unknown key "{field}".{hint} Valid keys here: {", ".join(choices)}')
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = "" if isinstance(item.get("input"), dict) else f" (got {item.get('input')!r})"
            messages.append(f"{field}: {message}{shown}" if location else message)
    return "Invalid augment settings: " + "; ".join(messages) + "."


_NESTED = {"random_crop": RandomCrop, "random_affine": RandomAffine, "color_jitter": ColorJitter, "cutout": Cutout}


# --------------------------------------------------------------------------- plan (internal form)

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


def _plan(config: AugmentConfig) -> AugmentPlan:
    affine = config.random_affine or RandomAffine()
    jitter = config.color_jitter or ColorJitter()
    if jitter.hue:
        raise ValueError("color_jitter.hue is not supported (it needs an HSV round trip per pixel); remove it or set 0")
    crop = config.random_crop
    zoom = _around(config.zoom_range, 1.0, "zoom_range")
    scale = _around(affine.scale, 1.0, "random_affine.scale")
    low, high = _around(affine.degrees, 0.0, "random_affine.degrees")  # torchvision's affine turns clockwise
    if zoom != (1.0, 1.0) and scale != (1.0, 1.0):
        raise ValueError("zoom_range (Keras, per axis) and random_affine.scale (torchvision) both set; give only one")
    return AugmentPlan(
        horizontal_flip=_one_of(0.0, horizontal_flip=0.5 * config.horizontal_flip,
                                random_horizontal_flip=config.random_horizontal_flip,
                                alternating_flip=0.5 if config.alternating_flip else 0.0),
        alternating_flip=config.alternating_flip,
        vertical_flip=_one_of(0.0, vertical_flip=0.5 * config.vertical_flip,
                              random_vertical_flip=config.random_vertical_flip),
        rotation_deg=_one_of((0.0, 0.0), rotation_range=_around(config.rotation_range, 0.0, "rotation_range"),
                             random_rotation=_around(config.random_rotation, 0.0, "random_rotation"),
                             **{"random_affine.degrees": (-high, -low)}),
        shift_fraction=_one_of((0.0, 0.0), width_or_height_shift_range=(config.width_shift_range,
                                                                         config.height_shift_range),
                               **{"random_affine.translate": tuple(affine.translate)}),
        zoom=zoom, scale=scale,
        shear_deg=_one_of((0.0, 0.0), shear_range=_around(config.shear_range, 0.0, "shear_range"),
                          **{"random_affine.shear": _around(affine.shear, 0.0, "random_affine.shear")}),
        # torchvision fills with 0 (black), Keras repeats the edge
        fill_mode=config.fill_mode or ("constant" if config.random_rotation or config.random_affine else "nearest"),
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
    """A number v means (centre - v, centre + v), cut at ``floor``; a pair is kept."""
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


# --------------------------------------------------------------------------- the batched augmenter

class Augmenter:
    """Augments normalised float batches (N, C, H, W) on their device; same shape, dtype and device out.

    Colour jitter and constant fill act on pixel values: `normalization` says how pixels were
    normalised (None: images already hold pixel values in [0, 1]). Cutout fills with 0 in the
    normalised space (the dataset mean under z-score), as the cutout paper does."""

    def __init__(self, plan: AugmentPlan, image_shape: tuple[int, int, int], device: torch.device | str,
                 seed: int, normalization: Normalization | None = None):
        self.plan = plan
        self.channels, self.height, self.width = image_shape
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.flip_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.first_epoch_flips = torch.zeros(0, dtype=torch.bool, device=self.device)
        normalization = normalization or Normalization("scale", [0.0] * self.channels, [1.0] * self.channels, 1 / 255)
        mean, std = (torch.tensor(values, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
                     for values in (normalization.mean, normalization.std))
        # normalised = pixel (0..1) * pixel_multiplier + black
        self.black, self.pixel_multiplier = -mean / std, 255 * normalization.scale / std
        fraction_x, fraction_y = plan.shift_fraction
        self.shift_limit_px = torch.tensor([fraction_x * self.width, fraction_y * self.height], device=self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, positions: torch.Tensor | None = None, epoch: int = 1) -> torch.Tensor:
        """A new batch; each image drawn its own parameters, and image i stays at row i. ``positions``
        (the images' dataset indices) and ``epoch`` are needed by alternating flips only."""
        original = images
        if self.plan.has_colour:
            images = self.jitter_colour(images)
        if self.plan.alternating_flip:
            images = torch.where(self.alternating_flips(images.shape[0], positions, epoch).view(-1, 1, 1, 1),
                                 images.flip(3), images)
        if self.plan.has_affine:
            images = apply_affine(images, self.sample_matrices(images.shape[0]).to(images.dtype),
                                  self.plan.fill_mode, self.black.to(images.dtype))
        elif self.plan.horizontal_flip > 0 and not self.plan.alternating_flip or self.plan.vertical_flip > 0:
            images = self.flip(images)
        if self.plan.crop_padding:
            images = self.pad_and_crop(images)
        if self.plan.cutout_size:
            images = self.cut_out(images)
        if original.is_contiguous(memory_format=torch.channels_last) and not original.is_contiguous():
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def uniform(self, bounds: Pair, count: int, columns: int | None = None) -> torch.Tensor:
        """``count`` (or count x columns) values uniform in ``bounds``, from this augmenter's generator."""
        shape = (count,) if columns is None else (count, columns)
        unit = torch.rand(shape, generator=self.generator, device=self.device)
        return bounds[0] + (bounds[1] - bounds[0]) * unit

    def flip_signs(self, probability: float, count: int) -> torch.Tensor:
        """-1 where an image is flipped (with ``probability``), +1 elsewhere."""
        flipped = torch.rand(count, generator=self.generator, device=self.device) < probability
        return 1.0 - 2.0 * flipped.float()

    def alternating_flips(self, count: int, positions: torch.Tensor | None, epoch: int) -> torch.Tensor:
        """Which images to mirror: a fixed pseudo-random half of the dataset in odd epochs, the other half
        in even ones, so every image is seen both ways in any two consecutive epochs (without
        ``positions``, a fresh random half)."""
        if positions is None:
            return torch.rand(count, generator=self.generator, device=self.device) < 0.5
        positions = positions.to(self.device)
        needed = int(positions.max()) + 1
        if self.first_epoch_flips.numel() < needed:  # one random bit per image, drawn once from the seed
            more = torch.rand(needed - self.first_epoch_flips.numel(), generator=self.flip_generator,
                              device=self.device) < 0.5
            self.first_epoch_flips = torch.cat([self.first_epoch_flips, more])
        return self.first_epoch_flips[positions] ^ (epoch % 2 == 0)

    def sample_matrices(self, count: int) -> torch.Tensor:
        """One random output-to-input matrix per image (see `compose_matrices`), flips included
        (alternating flips are applied before, as they depend on the image, not on chance)."""
        plan = self.plan
        horizontal = 0.0 if plan.alternating_flip else plan.horizontal_flip
        flip_x, flip_y = self.flip_signs(horizontal, count), self.flip_signs(plan.vertical_flip, count)
        scale = self.uniform(plan.scale, count)
        zoom = self.uniform(plan.zoom, count, 2)  # Keras draws the two axes independently
        shift = self.uniform((-1.0, 1.0), count, 2) * self.shift_limit_px
        return compose_matrices(angle_deg=self.uniform(plan.rotation_deg, count),
                                shear_deg=self.uniform(plan.shear_deg, count),
                                scale_x=flip_x * scale / zoom[:, 0], scale_y=flip_y * scale / zoom[:, 1],
                                shift_x=shift[:, 0], shift_y=shift[:, 1])

    def flip(self, images: torch.Tensor) -> torch.Tensor:
        """Flips alone need no resampling: a per-image choice between the image and its mirror."""
        for probability, axis in ((self.plan.horizontal_flip, 3), (self.plan.vertical_flip, 2)):
            if probability > 0:
                chosen = self.flip_signs(probability, images.shape[0]).view(-1, 1, 1, 1) < 0
                images = torch.where(chosen, images.flip(axis), images)
        return images

    def pad_and_crop(self, images: torch.Tensor) -> torch.Tensor:
        """torchvision RandomCrop(size, padding): integer shifts up to ``padding`` pixels, per image."""
        count, channels, height, width = images.shape
        padding = self.plan.crop_padding
        black, mode = self.black.to(images.dtype), CROP_PADDING_MODES[self.plan.crop_padding_mode]
        padded = F.pad(images - black, (padding,) * 4, mode=mode) + black  # constant padding gives black
        offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=self.generator, device=self.device)
        rows = offsets[:, 0:1] + torch.arange(height, device=self.device)
        columns = offsets[:, 1:2] + torch.arange(width, device=self.device)
        flat = (rows[:, :, None] * padded.shape[3] + columns[:, None, :]).view(count, 1, height * width)
        return padded.flatten(2).gather(2, flat.expand(count, channels, -1)).view(count, channels, height, width)

    def jitter_colour(self, images: torch.Tensor) -> torch.Tensor:
        """torchvision ColorJitter in a fixed order (brightness, contrast, saturation), clamped to [0, 1] pixels."""
        count = images.shape[0]
        multiplier, black = self.pixel_multiplier.to(images.dtype), self.black.to(images.dtype)
        pixels = (images - black) / multiplier
        factor = self.uniform(self.plan.brightness, count).view(-1, 1, 1, 1).to(images.dtype)
        pixels = (pixels * factor).clamp(0, 1)
        factor = self.uniform(self.plan.contrast, count).view(-1, 1, 1, 1).to(images.dtype)
        mean = _grey(pixels).mean(dim=(1, 2, 3), keepdim=True)
        pixels = (factor * pixels + (1 - factor) * mean).clamp(0, 1)
        factor = self.uniform(self.plan.saturation, count).view(-1, 1, 1, 1).to(images.dtype)
        pixels = (factor * pixels + (1 - factor) * _grey(pixels)).clamp(0, 1)
        return pixels * multiplier + black

    def cut_out(self, images: torch.Tensor) -> torch.Tensor:
        """Zero ``cutout_count`` squares per image, centred anywhere (so possibly cut by the border)."""
        count, _, height, width = images.shape
        size, squares = self.plan.cutout_size, self.plan.cutout_count
        centres = torch.rand((count, squares, 2), generator=self.generator, device=self.device)
        top, left = ((centres * torch.tensor([height, width], device=self.device)).long() - size // 2).unbind(2)
        rows = torch.arange(height, device=self.device).view(1, 1, height)
        columns = torch.arange(width, device=self.device).view(1, 1, width)
        inside_rows = (rows >= top[..., None]) & (rows < top[..., None] + size)
        inside_columns = (columns >= left[..., None]) & (columns < left[..., None] + size)
        mask = (inside_rows[..., :, None] & inside_columns[..., None, :]).any(dim=1)
        return images.masked_fill(mask[:, None], 0.0)


def _grey(pixels: torch.Tensor) -> torch.Tensor:
    if pixels.shape[1] != 3:
        return pixels.mean(dim=1, keepdim=True)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels * weights).sum(dim=1, keepdim=True)


def build_augmenter(config: AugmentConfig, image_shape: tuple[int, int, int], device: torch.device | str,
                    seed: int, normalization: Normalization | None = None) -> Augmenter | None:
    """The augmenter for ``config``, or None when training batches are left as they are."""
    plan = config.plan()
    if plan.crop_size is not None and (plan.crop_size, plan.crop_size) != tuple(image_shape[1:]):
        raise ConfigError(f"augment.random_crop.size is {plan.crop_size} but the images are "
                          f"{image_shape[1]}x{image_shape[2]}: augmentation keeps the image size, so leave size out.")
    return Augmenter(plan, image_shape, device, seed, normalization) if plan.trains else None


def describe(config: AugmentConfig | AugmentPlan) -> list[str]:
    """Human-readable lines for reports, the same whichever vocabulary the config used."""
    plan = config.plan() if isinstance(config, AugmentConfig) else config
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
