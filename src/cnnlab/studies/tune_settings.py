"""What `cnnlab tune` searches: the tune settings (a tune file or the command line), the search space
(``--param optimizer.lr=loguniform:1e-4:1e-1``), and the checks that run before any trial: every parameter
names a config field and its bounds or choices are valid values of it, and the experiment has a
validation split (trials are compared on it, never on the test set).

A tune file is a YAML file whose top level has ``params:``; its keys are those of `TuneSettings`::

    run: digits                      # the experiment: a config file (beside this one), an example or a zoo name
    overrides: {train.epochs: 10}    # applied to every trial
    params:
      optimizer.lr: loguniform:1e-4:1e-1
      train.batch_size: [32, 64, 128]   # a list is a choice
    trials: 20
    metric: val_accuracy             # or val_loss
    pruner: {name: median, startup_trials: 5, warmup_epochs: 1}
    sampler: {name: tpe, seed: 0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError

from cnnlab.config import ConfigLoader, ExperimentConfig, load_config, read_settings_file, set_dotted, validate_config
from cnnlab.errors import ConfigError, StrictModel, did_you_mean, explain_validation_error, shorten
from cnnlab.training.settings import MAX_EPOCHS, MAX_SEED

KINDS = {"loguniform": "loguniform:LOW:HIGH", "uniform": "uniform:LOW:HIGH", "int": "int:LOW:HIGH[:STEP]",
         "logint": "logint:LOW:HIGH", "choice": "choice:A,B,C"}
SPEC_HELP = ("Write KEY=KIND:..., e.g. optimizer.lr=loguniform:1e-4:1e-1 or train.batch_size=choice:32,64,128; "
             f"the kinds are {', '.join(KINDS.values())}.")
# keys a trial may not change: they decide which images are the validation set, or what a trial is
FIXED_KEYS = {
    "name": "the trials are named by the study",
    "train.seed": "it also draws the validation split, so each trial would be scored on other images",
    "train.validation_split": "each trial would be scored on another validation set",
    "train.seeds": "a trial is one run (train the best config with --seeds N afterwards)",
    "dataset": "each trial would be scored on other images",
    "dataset.name": "each trial would be scored on other images",
    "dataset.subset": "it changes which images are the validation set",
    "dataset.split_seed": "it changes the test split of an image folder",
    "dataset.test_fraction": "it changes the test split of an image folder",
}
Scalar = Union[None, bool, int, float, str]
TUNED = "the tuned config"  # where a config error of a trial's values says it is


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: a dotted config key and its distribution, as Optuna suggests it."""

    key: str
    kind: str  # a key of KINDS
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    choices: tuple[Scalar, ...] = ()

    @property
    def log(self) -> bool:
        return self.kind in ("loguniform", "logint")

    @property
    def text(self) -> str:
        """The spec as written on the command line (what the study records)."""
        if self.kind == "choice":
            return "choice:" + ",".join(_scalar_text(value) for value in self.choices)
        return f"{self.kind}:{self.low}:{self.high}" + (f":{self.step}" if self.step else "")

    def suggest(self, trial: Any) -> Scalar:
        """The value an Optuna trial draws (``trial.suggest_*`` under the key's name)."""
        if self.kind in ("loguniform", "uniform"):
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def candidates(self) -> tuple[Scalar, ...]:
        """Values every one of which must make a valid config: the bounds, or each choice."""
        return self.choices if self.kind == "choice" else (self.low, self.high)


class PrunerSection(StrictModel):
    """`pruner:` Optuna's median pruner: stop a trial whose validation metric at an epoch is worse than
    the median of the finished trials at that epoch."""

    name: Literal["median", "none"] = "median"
    startup_trials: int = Field(default=5, ge=0, le=100_000, description="finished trials before any pruning")
    warmup_epochs: int = Field(default=1, ge=0, le=MAX_EPOCHS, description="first epochs of a trial never pruned")


class SamplerSection(StrictModel):
    """`sampler:` how the next trial's values are drawn: TPE (learns from the finished trials) or random."""

    name: Literal["tpe", "random"] = "tpe"
    seed: Optional[int] = Field(default=None, ge=0, le=MAX_SEED - 1024, description="worker k of a command: seed + k")


class TuneSettings(StrictModel):
    """A study: the experiment, what to search, how many trials, where the study is stored."""

    run: str = Field(min_length=1, max_length=4096)
    overrides: list[str] = Field(default_factory=list)
    params: dict[str, Union[str, list[Scalar]]] = Field(min_length=1)
    trials: int = Field(default=20, ge=1, le=100_000)
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    study: Optional[str] = Field(default=None, min_length=1, max_length=200)
    storage: Optional[str] = Field(default=None, min_length=1, max_length=4096)
    workers: int = Field(default=1, ge=1, le=64)
    out: Optional[str] = Field(default=None, min_length=1, max_length=4096)
    pruner: PrunerSection = Field(default_factory=PrunerSection)
    sampler: SamplerSection = Field(default_factory=SamplerSection)

    @property
    def direction(self) -> str:
        return "maximize" if self.metric == "val_accuracy" else "minimize"


def is_tune_file(source: str) -> bool:
    """A YAML file whose top level has ``params:`` (an experiment config never has that key)."""
    path = Path(source)
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return False
    return "params" in read_settings_file(path)


def tune_settings(source: str, overrides: list[str] | None = None, params: list[str] | None = None,
                  **options: Any) -> TuneSettings:
    """The settings of `cnnlab tune SOURCE KEY=VALUE... --param KEY=SPEC...`: SOURCE is a tune file, or the
    experiment itself (a config file, an example or a zoo name). ``params`` and ``options`` (trials, metric,
    study, storage, workers, out, seed, prune; None: not given) add to or replace the file's settings."""
    raw: dict[str, Any] = {"run": source}
    if is_tune_file(source):
        raw = dict(read_settings_file(Path(source)))
        raw["run"] = _beside(raw.get("run"), Path(source).parent)
        raw["overrides"] = _override_list(raw.get("overrides"), f"{source}: overrides")
        where = str(source)
    else:
        where = "the command line"
    raw["overrides"] = [*raw.get("overrides", []), *(overrides or [])]
    raw["params"] = {**(raw.get("params") or {}), **dict(_split_param(text) for text in params or [])}
    for key in ("trials", "metric", "study", "storage", "workers", "out"):
        if options.get(key) is not None:
            raw[key] = str(options[key]) if key == "out" else options[key]
    if options.get("seed") is not None:
        raw["sampler"] = {**(raw.get("sampler") or {}), "seed": options["seed"]}
    if options.get("prune") is False:
        raw["pruner"] = {**(raw.get("pruner") or {}), "name": "none"}
    if not raw["params"]:
        raise ConfigError(f"Nothing to tune: give at least one --param (in a tune file, params:). {SPEC_HELP}")
    try:
        return TuneSettings.model_validate(raw)
    except ValidationError as error:
        messages = explain_validation_error(error, [], _tune_section)
        problems = "; ".join(message.rstrip(".") for message in messages[:5])
        raise ConfigError(f"Invalid tune settings in {where}: {problems}.") from None


def search_space(settings: TuneSettings) -> list[ParamSpec]:
    """The parsed parameters, in the order given."""
    return [parse_param(key, value) for key, value in settings.params.items()]


def base_config(settings: TuneSettings) -> ExperimentConfig:
    """The experiment every trial starts from, checked: a validation split, one seed."""
    config = load_config(settings.run, list(settings.overrides))
    if config.train.validation_split == 0:
        raise ConfigError(
            f"cnnlab tune compares trials on their validation {settings.metric.removeprefix('val_')}, never on the "
            f"test set, and {settings.run} has no validation split (train.validation_split is 0). Add one, e.g. "
            "train.validation_split=0.1 after the config: each trial then trains on the other 90% of the training "
            "images, and the test set stays unseen until you train the best config (best.yaml).")
    if config.train.seeds:
        raise ConfigError(f"{settings.run} sets train.seeds: a trial is one run. Leave train.seeds out while "
                          "tuning (train.seeds=null), then train best.yaml with --seeds N.")
    return config


def check_search(config: ExperimentConfig, specs: list[ParamSpec]) -> None:
    """Every parameter's bounds or choices give a valid config (ConfigError naming the parameter)."""
    for spec in specs:
        if spec.key in FIXED_KEYS:
            raise ConfigError(f"--param {spec.key} cannot be tuned: {FIXED_KEYS[spec.key]}. Fix it in the config "
                              "instead and tune the training settings.")
        for value in spec.candidates():
            try:
                trial_config(config, {spec.key: value})
            except ConfigError as error:
                problem = str(error).removeprefix(f"Invalid config in {TUNED}: ")
                hint = " Use int:LOW:HIGH for a whole-number setting." if "valid integer" in problem else ""
                raise ConfigError(f"--param {spec.key}={spec.text}: with {spec.key}={_scalar_text(value)} the "
                                  f"config is not valid: {problem}{hint}") from None


def trial_config(config: ExperimentConfig, values: dict[str, Scalar], name: str | None = None) -> ExperimentConfig:
    """``config`` with the dotted ``values`` set (and the name ``name``), validated."""
    raw = config.to_dict()
    for key, value in values.items():
        set_dotted(raw, key, value, f"{key}={_scalar_text(value)}")
    if name is not None:
        raw["name"] = name
    return validate_config(raw, TUNED)


def parse_param(key: str, spec: Any) -> ParamSpec:
    """``spec`` ("loguniform:1e-4:1e-1", ..., or a YAML list of choices) for the dotted config ``key``."""
    key = str(key).strip()
    where = f"--param {shorten(key)}={shorten(_scalar_text(spec))}"
    if not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f'{where}: "{shorten(key)}" is not a dotted config key. {SPEC_HELP}')
    if isinstance(spec, list):
        return ParamSpec(key, "choice", choices=_choices(spec, where))
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"{where}: give KIND:..., not a single value. {SPEC_HELP}")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ConfigError(f'{where}: unknown kind "{shorten(kind)}".{did_you_mean(kind, KINDS)} {SPEC_HELP}')
    if kind == "choice":
        return ParamSpec(key, kind, choices=_choices([_yaml_scalar(item, where) for item in rest.split(",")], where))
    parts = [part.strip() for part in rest.split(":")]
    if len(parts) not in ((2, 3) if kind == "int" else (2,)):
        raise ConfigError(f"{where}: {kind} needs {KINDS[kind].partition(':')[2]}, e.g. {_example(kind, key)}. "
                          f"{SPEC_HELP}")
    return _ranged(key, kind, parts, where)


def _ranged(key: str, kind: str, parts: list[str], where: str) -> ParamSpec:
    number = float if kind in ("loguniform", "uniform") else int
    try:
        low, high, *step = (number(part) for part in parts)
    except ValueError:
        words = "numbers" if number is float else "whole numbers"
        raise ConfigError(f"{where}: LOW and HIGH of {kind} must be {words}, e.g. {_example(kind, key)}.") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"{where}: LOW must be below HIGH, both finite, e.g. {_example(kind, key)}.")
    if kind in ("loguniform", "logint") and low <= 0:
        raise ConfigError(f"{where}: a log scale needs LOW above 0, e.g. {_example(kind, key)}.")
    if step and (step[0] < 1 or (high - low) % step[0]):
        raise ConfigError(f"{where}: STEP must be at least 1 and divide HIGH - LOW, e.g. int:16:256:16.")
    return ParamSpec(key, kind, low, high, step[0] if step else None)


def _choices(values: list[Any], where: str) -> tuple[Scalar, ...]:
    if not values or any(value == "" for value in values):
        raise ConfigError(f"{where}: a choice needs its values separated by commas, none empty, e.g. "
                          "train.batch_size=choice:32,64,128.")
    if any(not isinstance(value, (type(None), bool, int, float, str)) for value in values):
        raise ConfigError(f"{where}: each choice must be a single value (a number, a word, true/false or null).")
    if len({(type(value), value) for value in values}) < len(values):
        raise ConfigError(f"{where}: a choice lists a value twice; give each once.")
    return tuple(values)


def _yaml_scalar(text: str, where: str) -> Any:
    try:
        return yaml.load(text.strip(), Loader=ConfigLoader) if text.strip() else ""  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, ValueError, RecursionError):
        raise ConfigError(f'{where}: the choice "{shorten(text)}" cannot be read as a value.') from None


def _split_param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f'--param "{shorten(text)}" must look like KEY=SPEC. {SPEC_HELP}')
    key, _, spec = text.partition("=")
    return key.strip(), spec.strip()


def _example(kind: str, key: str) -> str:
    return {"loguniform": f"{key}=loguniform:1e-4:1e-1", "uniform": f"{key}=uniform:0.0:0.5",
            "int": f"{key}=int:16:256", "logint": f"{key}=logint:16:1024"}.get(kind, f"{key}=choice:32,64,128")


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _override_list(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [f"{key}={_scalar_text(value)}" for key, value in raw.items()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return list(raw)
    raise ConfigError(f"{where} must be a mapping (train.epochs: 3) or a list of key=value strings.")


def _beside(run: Any, folder: Path) -> Any:
    """A tune file's ``run:`` config file is found beside the tune file first."""
    if isinstance(run, str) and run.endswith((".yaml", ".yml")) and (folder / run).is_file():
        return str(folder / run)
    return run


def _tune_section(location: list[str]) -> Any:
    sections = {"": TuneSettings, "pruner": PrunerSection, "sampler": SamplerSection}
    return sections.get(".".join(location))
