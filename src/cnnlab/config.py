"""Typed experiment config: YAML file or zoo recipe, dotted overrides, validation with "did you mean"."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from cnnlab.augment.settings import AugmentConfig
from cnnlab.data import DatasetConfig as DatasetSection
from cnnlab.errors import ConfigError, StrictModel, explain_validation_error
from cnnlab.models import zoo
from cnnlab.models.settings import ModelSection
from cnnlab.training.settings import OptimizerSection, ScheduleSection, TrainSection


class AnalysisSection(StrictModel):
    """`analysis:` how many worst test images the report shows."""

    worst_n: int = Field(default=10, ge=1, le=50)


class ExperimentConfig(StrictModel):
    """The whole experiment: each stage's section, composed; satisfies training's `TrainingRecipe`."""

    name: str = "experiment"
    dataset: DatasetSection = Field(default_factory=lambda: DatasetSection(name="digits"))
    model: ModelSection = Field(default_factory=lambda: ModelSection(name="mlp"))
    train: TrainSection = Field(default_factory=TrainSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    analysis: AnalysisSection = Field(default_factory=AnalysisSection)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, list):
            return {"layers": value}
        return value

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=False)
        data["model"] = self.model.to_dict()
        return data


# --------------------------------------------------------------------------- loading

def load_config(source: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Build the experiment config from a YAML file path or a zoo name, then apply overrides.

    A zoo name gives its recipe (dataset, model, training settings) as the defaults."""
    raw, origin = _read_source(source)
    for override in overrides or []:
        key, value = _parse_override(override)
        _set_dotted(raw, key, value, override)
    return validate_config(raw, origin)


def validate_config(raw: dict[str, Any], origin: str = "config") -> ExperimentConfig:
    """Validate a raw mapping; errors name the field, what is wrong and a close valid key."""
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        text = "; ".join(explain_validation_error(error, [], _section_model))
        raise ConfigError(f"Invalid config in {origin}: {text}" + ("" if text.endswith(".") else ".")) from None
    return config


def _read_source(source: str) -> tuple[dict[str, Any], str]:
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"Config file {source} does not exist. Check the path, or give a zoo name (see `cnnlab models`).")
        if path.is_dir():
            raise ConfigError(f"{source} is a folder; give the experiment's YAML file (or a zoo name).")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{source} is not a UTF-8 text file; give the experiment's YAML file.") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{source} is not valid YAML{where}: {getattr(error, 'problem', error)}. Fix the file and run again.") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source} must hold a mapping of settings (name:, dataset:, model:, train:, ...), not a {type(raw).__name__}.")
        return raw, str(source)
    return zoo_recipe(source), f"zoo entry {source}"


def zoo_recipe(name: str) -> dict[str, Any]:
    """The config a zoo entry stands for: its dataset, model and the report's recipe.
    A renamed entry's old name gives the entry under its current name."""
    entry = zoo.get_entry(name)
    raw: dict[str, Any] = copy.deepcopy(entry.recipe)
    dataset = raw.pop("dataset", None) or entry.dataset
    raw["dataset"] = dataset
    raw["model"] = {"name": entry.name}
    raw.setdefault("name", entry.name.replace("/", "-"))
    return raw


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f'Override "{text}" must look like key=value, e.g. train.epochs=3 or optimizer.lr=0.01.')
    key, value_text = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f'Override "{text}" has no key before "=".')
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any, text: str) -> None:
    if key == "dataset" and isinstance(value, str) and isinstance(raw.get("dataset"), dict):
        # dataset=NAME changes the dataset, not the recipe's options (normalize, image_size, ...)
        raw["dataset"]["name"] = value
        return
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and part in ("dataset", "model"):
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f'Override "{text}": {".".join(parts[:depth + 1])} is a single value, not a section.')
        node[part] = child
        node = child
    node[parts[-1]] = value


def _section_model(location: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = ExperimentConfig
    for part in location:
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model
