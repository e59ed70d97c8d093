"""Typed experiment config: YAML file or zoo recipe, dotted overrides, validation with "did you mean"."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnlab.data import DatasetConfig as DatasetSection
from cnnlab.errors import ConfigError, did_you_mean


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


TRANSFER_KEYS = ("weights", "head", "input_size", "trainable", "batchnorm", "backbone_lr_factor", "truncate_blocks",
                 "cache_features")


class ModelSection(Strict):
    name: Optional[str] = None
    layers: Optional[list[Union[str, dict[str, Any]]]] = None
    # a pretrained backbone and a new head (docs/transfer.md); these keys also refine a zoo entry that has one
    backbone: Optional[str] = Field(default=None, description="efficientnet-lite0, resnet50, vgg16, ..., timm:NAME")
    weights: Optional[str] = Field(default=None, description="local .pth/.safetensors file (default: usual places)")
    head: Optional[list[Union[str, dict[str, Any]]]] = Field(default=None, description='layers after the backbone '
                                                                                      '(default ["Dense: classes"])')
    input_size: Optional[int] = Field(default=None, ge=8, le=1024, description="pixels a side (default: backbone's)")
    trainable: Union[Literal["none", "all"], int] = Field(default="none", description="none, all or last N blocks")
    batchnorm: Literal["frozen", "train"] = "frozen"
    backbone_lr_factor: float = Field(default=0.1, gt=0, le=10, description="backbone lr = factor x optimizer.lr")
    truncate_blocks: Optional[int] = Field(default=None, ge=1, description="keep only the first k backbone blocks")
    cache_features: bool = Field(default=True, description="frozen backbone, no augmentation: compute features once")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: Any) -> Any:
        if value is not None:
            from cnnlab.models.pretrained import check_backbone_name

            try:
                check_backbone_name(value)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("trainable")
    @classmethod
    def _non_negative(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 0:
            raise ValueError("trainable is none, all or the number (0 or more) of last backbone blocks to train")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> "ModelSection":
        if sum(part is not None for part in (self.name, self.layers, self.backbone)) != 1:
            raise ValueError("give one of a zoo name (model: NAME), a layer list (model: {layers: [...]}) or a "
                             "pretrained backbone (model: {backbone: efficientnet-lite0})")
        set_keys = [key for key in TRANSFER_KEYS if key in self.model_fields_set]
        if self.layers is not None and set_keys:
            raise ValueError(f"{', '.join(set_keys)} only apply to a pretrained backbone (model.backbone), not to a "
                             "layer list")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The section as saved with a run: a name or layers, or the backbone with all its settings."""
        data = self.model_dump(mode="json")
        if self.backbone is not None:
            return {"backbone": self.backbone, **{key: data[key] for key in TRANSFER_KEYS}}
        if self.layers is not None:
            return {"layers": data["layers"]}
        return {"name": self.name, **{key: data[key] for key in TRANSFER_KEYS if key in self.model_fields_set}}


class EarlyStopping(Strict):
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.0, ge=0)
    restore_best: bool = True


class TrainSection(Strict):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=32, ge=1)
    validation_split: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 0
    early_stopping: Optional[EarlyStopping] = None
    device: str = "auto"
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    eval_batch_size: int = Field(default=1024, ge=1)
    threads: Optional[int] = Field(default=None, ge=1, description="CPU threads (default: all cores)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 on GPUs and on CPUs with AMX, fp32 elsewhere; fp16 needs CUDA")
    channels_last: Union[Literal["auto"], bool] = Field(default="auto", description="NHWC memory layout")
    compile: bool = Field(default=False, description="torch.compile the model (one-time cost reported apart)")
    validate_every: int = Field(default=1, ge=1, description="epochs between validation passes (and the last one)")
    ema_decay: Optional[float] = Field(default=None, gt=0, lt=1, description="per-step decay of an exponential "
                                       "moving average of the weights; the average is what gets evaluated and saved")

    @model_validator(mode="after")
    def _early_stopping_needs_validation(self) -> "TrainSection":
        if self.early_stopping is not None and self.validation_split == 0:
            raise ValueError("early stopping watches the validation set, but validation_split is 0: "
                             "set train.validation_split (e.g. 0.1) or train.early_stopping=null")
        return self


class OptimizerSection(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0, description="decoupled (AdamW) or coupled (SGD/Adam) decay")
    l2: float = Field(default=0.0, ge=0, description="Keras-style L2 penalty on kernels, added to the loss")
    l2_layers: Literal["all", "conv", "dense"] = Field(default="all", description="which kernels the L2 penalty covers")
    betas: tuple[float, float] = (0.9, 0.999)

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ScheduleSection(Strict):
    name: Literal["constant", "step", "piecewise", "cosine", "onecycle"] = "constant"
    step_size: int = Field(default=10, ge=1, description="step: epochs between decays")
    gamma: float = Field(default=0.1, gt=0, description="step: decay factor")
    boundaries: list[int] = Field(default_factory=list, description="piecewise: first 0-based epoch of each new lr "
                                                                    "(Keras `if epoch > 50` is boundary 51)")
    values: list[float] = Field(default_factory=list, description="piecewise: lr before, between and after boundaries")
    warmup_epochs: float = Field(default=0.0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    max_lr: Optional[float] = Field(default=None, gt=0, description="onecycle peak (default: optimizer.lr)")

    @model_validator(mode="after")
    def _piecewise(self) -> "ScheduleSection":
        if self.name == "piecewise":
            if len(self.values) != len(self.boundaries) + 1:
                raise ValueError("piecewise needs one more value than boundaries (lr before, between and after them)")
            if list(self.boundaries) != sorted(self.boundaries):
                raise ValueError("piecewise boundaries must increase")
        return self


class AnalysisSection(Strict):
    worst_n: int = Field(default=10, ge=1, le=50)


class ExperimentConfig(Strict):
    name: str = "experiment"
    dataset: DatasetSection = Field(default_factory=lambda: DatasetSection(name="digits"))
    model: ModelSection = Field(default_factory=lambda: ModelSection(name="mlp"))
    train: TrainSection = Field(default_factory=TrainSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    augment: dict[str, Any] = Field(default_factory=dict)
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
        raise ConfigError(_explain(error, origin)) from None
    from cnnlab.augment.augmenter import parse_augment

    try:
        parse_augment(config.augment)
    except ConfigError as error:
        raise ConfigError(f"Invalid config in {origin}: {error}") from None
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
    """The config a zoo entry stands for: its dataset, model and the report's recipe."""
    from cnnlab.models import zoo

    entry = zoo.get_entry(name)
    if not entry.available:
        raise ConfigError(f"Zoo model {name} is known but not available yet: {entry.unavailable_reason}.")
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


def _explain(error: ValidationError, origin: str) -> str:
    messages = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        field = ".".join(location) or "(top level)"
        if item["type"] == "extra_forbidden":
            section = _section_model(location[:-1])
            choices = list(section.model_fields) if section else []
            hint = did_you_mean(location[-1], choices)
            valid = f" Valid keys here: {', '.join(choices)}." if choices else ""
            messages.append(f'unknown key "{field}".{hint}{valid}')
        else:
            got = item.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            messages.append(f"{field}: {item['msg']}{shown}")
    return f"Invalid config in {origin}: " + "; ".join(messages) + "."


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
