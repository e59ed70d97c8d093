"""Typed experiment config: YAML file or zoo recipe, dotted overrides, validation with "did you mean"."""

from __future__ import annotations

import copy
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from cnnlab.augment.settings import AugmentConfig
from cnnlab.data import DatasetConfig as DatasetSection
from cnnlab.errors import ConfigError, StrictModel, explain_validation_error, shorten
from cnnlab.bundled import bundled_example
from cnnlab.models import zoo
from cnnlab.models.settings import ModelSection
from cnnlab.training.settings import OptimizerSection, ScheduleSection, TrainSection


class AnalysisSection(StrictModel):
    """`analysis:` how many worst test images the report shows."""

    worst_n: int = Field(default=10, ge=1, le=50)


class ExperimentConfig(StrictModel):
    """The whole experiment: each stage's section, composed; satisfies training's `TrainingRecipe`."""

    name: str = Field(default="experiment", max_length=200)  # it names the run folder
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

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config is a page of settings; anything larger is a mistake
MAX_CONFIG_VALUES = 100_000  # values in a loaded config, counting each repetition of a YAML alias
MAX_MESSAGES = 5  # problems listed in one message; the rest are counted
MAX_NAME_CHARACTERS = 200  # longer than any zoo name


def load_config(source: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Build the experiment config from a YAML file path or a zoo name, then apply overrides.

    A zoo name gives its recipe (dataset, model, training settings) as the defaults."""
    raw, origin = _read_source(source)
    for override in overrides or []:
        key, value = _parse_override(override)
        set_dotted(raw, key, value, override)
    return validate_config(raw, origin)


def validate_config(raw: dict[str, Any], origin: str = "config") -> ExperimentConfig:
    """Validate a raw mapping; errors name the field, what is wrong and a close valid key."""
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        messages = explain_validation_error(error, [], _section_model)
        more = f"; and {len(messages) - MAX_MESSAGES} more" if len(messages) > MAX_MESSAGES else ""
        text = "; ".join(message.rstrip(".") for message in messages[:MAX_MESSAGES]) + more
        raise ConfigError(f"Invalid config in {origin}: {text}" + ("" if text.endswith(".") else ".")) from None
    return config


class DuplicateKey(yaml.YAMLError):
    """A mapping gives the same key twice (YAML would silently keep the last)."""

    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f'the key "{shorten(str(key))}" is given twice (lines {first_line} and {line}); YAML '
                         "would keep only the last, so remove or rename one")


class ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping and reading ``1e-3`` as a number
    (YAML 1.2; YAML 1.1 reads it as text)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in from an anchor may be overridden: that is what << is for
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in first_lines:
                raise DuplicateKey(key, first_lines[key], line)
            if isinstance(key, (str, int, float, bool)):
                first_lines[key] = line
        return super().construct_mapping(node, deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _read_source(source: str) -> tuple[dict[str, Any], str]:
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml") or _exists(path):
        raw = parse_config_text(_read_config_text(path, source), source)
        return raw, str(source)
    example = bundled_example(source)
    if example is not None:  # `cnnlab train digits`: an example config shipped inside the package
        return parse_config_text(_read_config_text(example, str(example)), str(example)), str(example)
    if len(source) > MAX_NAME_CHARACTERS:
        raise ConfigError(f'"{shorten(source)}" ({len(source):,} characters) is neither a config file nor a zoo '
                          "name. Give the experiment's YAML file or a zoo name (see `cnnlab models`).")
    return zoo_recipe(source), f"zoo entry {source}"


def read_settings_file(path: Path) -> dict[str, Any]:
    """The settings mapping of a YAML file a user wrote (an experiment or a suite), read with every check of
    `parse_config_text` (regular file, at most 1 MiB, UTF-8, no duplicate keys, no alias bomb)."""
    return parse_config_text(_read_config_text(Path(path), str(path)), str(path))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long for the file system: not a file, maybe a zoo name
        return False


def _read_config_text(path: Path, source: str) -> str:
    """The file's text: a regular file of at most `MAX_CONFIG_BYTES`, in UTF-8."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"Config file {source} does not exist. Check the path, or give a zoo name (see `cnnlab models`).") from None
    except OSError as error:
        raise ConfigError(f"Cannot read the config file {source}: {error.strerror or error}.") from None
    if stat.S_ISDIR(status.st_mode):
        raise ConfigError(f"{source} is a folder; give the experiment's YAML file (or a zoo name).")
    if not stat.S_ISREG(status.st_mode):
        raise ConfigError(f"{source} is not a regular file (it is a device, pipe or socket); give the experiment's "
                          "YAML file (or a zoo name).")
    too_large = (f"{source} is larger than {MAX_CONFIG_BYTES // 2**10:,} KiB, the most a config file may be; a "
                 "config is a page of settings. Give the experiment's YAML file.")
    if status.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(too_large)
    try:
        with path.open("rb") as handle:
            content = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"Cannot read the config file {source}: {error.strerror or error}.") from None
    if len(content) > MAX_CONFIG_BYTES:
        raise ConfigError(too_large)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not a UTF-8 text file; give the experiment's YAML file.") from None


def parse_config_text(text: str, source: str) -> dict[str, Any]:
    """The settings mapping a config file's ``text`` holds (``source`` names it in messages). Refuses invalid
    YAML (with its line), a key given twice, an empty file, a file that is not a mapping and one that expands
    (through YAML aliases) to more than `MAX_CONFIG_VALUES` values."""
    try:
        raw = yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or error
        raise ConfigError(f"{source} is not valid YAML{where}: {shorten(str(problem), 300)}. Fix the file and run again.") from None
    except (ValueError, RecursionError, OverflowError) as error:  # a number too long, nesting too deep
        raise ConfigError(f"{source} holds a value cnnlab cannot read ({shorten(str(error), 200)}). Fix the file "
                          "and run again.") from None
    if raw is None or raw == {}:
        raise ConfigError(f"{source} holds no settings (it is empty or only comments). Write at least the dataset "
                          "and the model, e.g. `dataset: digits` and `model: mlp` (see examples/), or give a zoo name.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must hold a mapping of settings (name:, dataset:, model:, train:, ...), not a {type(raw).__name__}.")
    _check_value_count(raw, source)
    return raw


def _check_value_count(raw: Any, source: str) -> None:
    pending, count = [raw], 0
    while pending:
        value = pending.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(f"{source} expands to more than {MAX_CONFIG_VALUES:,} values (YAML anchors and aliases "
                              "repeat what they name); a config is a page of settings. Write the settings out.")
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


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
        raise ConfigError(f'Override "{shorten(text)}" must look like key=value, e.g. train.epochs=3 or optimizer.lr=0.01.')
    key, value_text = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f'Override "{shorten(text)}" has no key before "=".')
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f'Override "{shorten(text)}" is longer than {MAX_CONFIG_BYTES // 2**10:,} KiB; put such '
                          "settings in the config file.")
    try:
        value = yaml.load(value_text, Loader=ConfigLoader) if value_text.strip() else ""  # noqa: S506
    except DuplicateKey as error:
        raise ConfigError(f'Override "{shorten(text)}": {error}.') from None
    except yaml.YAMLError:
        value = value_text
    except (ValueError, RecursionError, OverflowError):
        raise ConfigError(f'Override "{shorten(text)}": its value cannot be read (a number too long or nesting '
                          "too deep).") from None
    _check_value_count(value, f'Override "{shorten(text)}"')
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any, text: str) -> None:
    """Set the dotted ``key`` ("train.epochs") in a config mapping (``text``: the override, for messages);
    ``dataset``/``model`` given by name become sections, and dataset=NAME keeps the dataset's options."""
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
            raise ConfigError(f'Override "{shorten(text)}": {shorten(".".join(parts[:depth + 1]))} is a single value, '
                              "not a section.")
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
