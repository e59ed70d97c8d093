"""The `augment:` section as a user writes it, in Keras ImageDataGenerator or torchvision words.

Both vocabularies resolve to one `AugmentPlan` while validating, so conflicting or out-of-range
settings are config errors before anything trains. A section dumps only the keys the user set, so
the config.yaml saved with a run shows what was asked for and loads back to the same config."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (Field, PrivateAttr, SerializerFunctionWrapHandler, ValidationError, ValidatorFunctionWrapHandler,
                      field_validator, model_serializer, model_validator)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from cnnlab.augment.plan import AugmentPlan, Pair
from cnnlab.errors import TUPLE_FROM_LIST, ConfigError, StrictModel, explain_validation_error

# a number v means (centre - v, centre + v), as both libraries read it; a YAML list is a pair
Range = Annotated[Union[float, tuple[float, float]], TUPLE_FROM_LIST]
Fraction = Annotated[float, Field(ge=0, le=1)]
# keys of other libraries with no counterpart here, and what to use instead ("did you mean" would mislead)
CLOSEST_SUPPORTED = {"random_erasing": 'not supported; "cutout" erases squares of a fixed size'}


class Section(StrictModel):
    """A strict settings section that dumps only the keys that were set (nested sections likewise)."""

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if key in self.model_fields_set}


class RandomCrop(Section):
    size: Optional[int] = Field(default=None, ge=1, description="must equal the image size (default)")
    padding: int = Field(ge=0, description="pixels added on every side before cropping")
    padding_mode: Literal["constant", "reflect", "edge"] = "constant"


class RandomAffine(Section):
    degrees: Range = 0.0
    translate: Annotated[tuple[Fraction, Fraction], TUPLE_FROM_LIST] = Field(default=(0.0, 0.0), description="max |shift| / (width, height)")
    scale: Annotated[Pair, TUPLE_FROM_LIST] = (1.0, 1.0)
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
    test_time_below: Optional[float] = Field(
        default=None, gt=0, le=1, description="only images whose plain top probability is below this get the "
        "test-time views (fast/cifar10: same accuracy in a third of the time, bench/results/selective_tta.md)")

    _plan: AugmentPlan = PrivateAttr(default_factory=AugmentPlan)

    @field_validator("random_horizontal_flip", "random_vertical_flip", mode="before")
    @classmethod
    def _flag_is_half(cls, value: Any) -> Any:
        return (0.5 if value else 0.0) if isinstance(value, bool) else value

    @model_validator(mode="wrap")
    @classmethod
    def _hint_unsupported_keys(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> "AugmentConfig":
        # in the error itself, so every explanation of it (this section's or the whole config's) shows the hint
        try:
            return handler(value)
        except ValidationError as error:
            items = error.errors()
            if not any(_unsupported(item) for item in items):
                raise
            raise ValidationError.from_exception_data(error.title, [_hinted(item) for item in items]) from None

    @model_validator(mode="after")
    def _resolvable(self) -> "AugmentConfig":
        # resolved once here (and again after a validated assignment); surfaces conflicts and bad ranges
        self._plan = resolve_plan(self)
        if self.test_time_below is not None and self.test_time == "none":
            raise ValueError("augment.test_time_below chooses which images get the test-time views, but "
                             "augment.test_time is none: set augment.test_time (flip or flip_shift) or remove it")
        return self

    def plan(self) -> AugmentPlan:
        """The internal form, resolved when the section was validated."""
        return self._plan

    def is_empty(self) -> bool:
        """True when nothing is augmented, in training or at test time."""
        return not self._plan.trains and self.test_time == "none"


def parse_augment(raw: dict | None) -> AugmentConfig:
    """Validate an `augment:` mapping; errors are ConfigError naming the key, with a close valid key."""
    try:
        return AugmentConfig.model_validate(raw or {})
    except ValidationError as error:
        raise ConfigError(f"Invalid augment settings: {explain(error)}.") from None


def explain(error: ValidationError) -> str:
    """The errors of an `augment:` section, each naming `augment.<key>`, joined by "; "."""
    return "; ".join(explain_validation_error(error, ["augment"], _section_at)).rstrip(".")  # callers end it


def _section_at(location: list[str]) -> type[StrictModel] | None:
    if not location:
        return AugmentConfig
    return _NESTED.get(location[0]) if len(location) == 1 else None


_NESTED: dict[str, type[StrictModel]] = {"random_crop": RandomCrop, "random_affine": RandomAffine,
                                         "color_jitter": ColorJitter, "cutout": Cutout}


def _unsupported(item: ErrorDetails) -> bool:
    return item["type"] == "extra_forbidden" and len(item["loc"]) == 1 and item["loc"][0] in CLOSEST_SUPPORTED


def _hinted(item: ErrorDetails) -> InitErrorDetails:
    """The error as it was, or, for a key of another library, one that says what to use instead."""
    if _unsupported(item):
        return {"type": PydanticCustomError("unsupported_key", CLOSEST_SUPPORTED[str(item["loc"][0])]),
                "loc": item["loc"], "input": item["input"]}
    return {"type": item["type"], "loc": item["loc"], "input": item["input"],
            **({"ctx": item["ctx"]} if "ctx" in item else {})}


# --------------------------------------------------------------------------- user words -> plan

def resolve_plan(config: AugmentConfig) -> AugmentPlan:
    """The one-vocabulary plan for ``config``; raises ValueError on conflicting or out-of-range settings."""
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
