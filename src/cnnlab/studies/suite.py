"""Suites: a whole study in one command. Experiments run in order, one run directory each,
then one comparison report. Re-running skips experiments whose run directory is complete and
resumes unfinished ones from their checkpoints; a failed experiment never stops the others."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from cnnlab import output_folders, runs
from cnnlab.bundled import bundled_suite, suite_names
from cnnlab.config import load_config, read_settings_file
from cnnlab.errors import CnnlabError, ConfigError, TrainingInterrupted, did_you_mean, shorten
from cnnlab.experiment import run_experiment
from cnnlab.report.comparison import write_comparison
from cnnlab.studies.seeds import run_seeds, train_or_resume, with_seed_count
from cnnlab.studies.sweep import write_sweep

SUITE_KEYS = {"name", "description", "defaults", "experiments", "sweep"}


@dataclass
class SuiteExperiment:
    label: str
    source: str
    overrides: list[str] = field(default_factory=list)
    sweep_value: Any = None
    reported: Any = None


@dataclass
class Suite:
    name: str
    description: str
    experiments: list[SuiteExperiment]
    sweep_parameter: Optional[str] = None


def load_suite(path: Path, extra_overrides: list[str] | None = None) -> Suite:
    """Read a suite file: `experiments:` (zoo names or config files, each with overrides) or
    `sweep:` (one base experiment, one parameter over a list of values). `defaults:` and
    ``extra_overrides`` apply to every experiment, ``extra_overrides`` last."""
    path = Path(path)
    if not path.exists():
        bundled = bundled_suite(str(path))  # `cnnlab suite report001`: a suite shipped inside the package
        if bundled is None:
            raise ConfigError(f"Suite file {path} does not exist. Give a suite YAML file, or the name of one that "
                              f"ships with cnnlab: {', '.join(suite_names())}.")
        path = bundled
    raw = read_settings_file(path)  # the checks of an experiment file: size, UTF-8, duplicate keys, ...
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f'Suite file {path}: unknown key "{key}".{did_you_mean(key, SUITE_KEYS)} '
                          f"Valid keys: {', '.join(sorted(SUITE_KEYS))}.")
    name = str(raw.get("name") or path.stem)
    common = _overrides(raw.get("defaults"), f"{path}: defaults")
    base_dir = path.parent
    parameter = None
    if "sweep" in raw:
        experiments, parameter = _sweep_experiments(raw["sweep"], common, base_dir, path)
    else:
        experiments = _experiment_list(raw.get("experiments"), common, base_dir, path)
    for experiment in experiments:
        experiment.overrides += list(extra_overrides or [])
        load_config(experiment.source, experiment.overrides)  # every config checked before any training
    return Suite(name, str(raw.get("description", "")), experiments, parameter)


def _experiment_list(entries: Any, common: list[str], base_dir: Path, path: Path) -> list[SuiteExperiment]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"Suite file {path} needs a non-empty experiments: list (or a sweep: section).")
    return [_experiment(entry, index, common, base_dir, path) for index, entry in enumerate(entries, 1)]


class SuiteFailed(CnnlabError):
    """Some experiments of a suite failed; the others ran and the comparison (``written``) shows them all."""

    def __init__(self, message: str, written: dict[str, Path]):
        super().__init__(message)
        self.written = written


def run_suite(suite: Suite, out: Path, data_dir: Path | None = None, show_progress: bool = True,
              overwrite: bool = False, seed_count: int | None = None) -> dict[str, Path]:
    """Run the suite's experiments into ``out``, then write the comparison; return the written files.

    An experiment whose run is complete with the same config is skipped, an unfinished one is resumed
    from its checkpoint, one whose config changed is trained again (its earlier run replaced only once
    the new one is complete); ``overwrite`` trains every experiment again. An experiment that fails
    with a user error (a CnnlabError such as TrainingDiverged) becomes a row of the comparison saying
    why, the others still run, and SuiteFailed then names the failed ones. With ``seed_count`` (`--seeds N`)
    every experiment runs N seeds from its train.seed into a multi-seed folder (`cnnlab.studies.seeds`),
    and the comparison shows mean ± std; an experiment whose config has train.seeds runs them anyway."""
    out = output_folders.prepare_output_folder(out, overwrite, "suite")
    finished: list[tuple[SuiteExperiment, Path]] = []
    failed: dict[str, str] = {}
    for index, experiment in enumerate(suite.experiments, 1):
        run_dir = out / f"{index:02d}-{runs.slug(experiment.label)}"
        heading = f"[{index}/{len(suite.experiments)}] {experiment.label}"
        try:
            _run_one(experiment, run_dir, heading, data_dir, show_progress, overwrite, seed_count)
        except TrainingInterrupted:
            raise  # the user stopped the suite: the checkpoint lets the next `cnnlab suite` resume it
        except CnnlabError as error:
            failed[experiment.label] = shorten(" ".join(str(error).split()), 300)
            runs.log_line(f"{heading}: failed, the other experiments still run. {error}")
            continue
        finished.append((experiment, run_dir))
    if not finished:
        raise SuiteFailed(f"No experiment of suite {suite.name} finished, so there is nothing to compare: "
                          f"{_failures(failed)}.", {})
    kept = [experiment for experiment, _ in finished]
    run_dirs = [run_dir for _, run_dir in finished]
    written = write_comparison(run_dirs, out, labels=[experiment.label for experiment in kept], failed=failed)
    if suite.sweep_parameter:
        values = [experiment.sweep_value for experiment in kept]
        reported = [experiment.reported for experiment in kept]
        written.update(write_sweep(run_dirs, values, suite.sweep_parameter, out, reported))
    if failed:
        raise SuiteFailed(f"{len(failed)} of {len(suite.experiments)} experiments of suite {suite.name} failed: "
                          f"{_failures(failed)}. The comparison of the others is in {written['html']}. Fix them and "
                          "run the suite again: complete experiments are skipped.", written)
    return written


def _run_one(experiment: SuiteExperiment, run_dir: Path, heading: str, data_dir: Path | None, show_progress: bool,
             overwrite: bool, seed_count: int | None = None) -> None:
    """Skip, resume, train or train again one experiment of a suite into ``run_dir`` (its seeds, each so,
    for a multi-seed experiment)."""
    config = load_config(experiment.source, experiment.overrides)
    if seed_count is not None:
        config = with_seed_count(config, seed_count)
    if config.train.seeds:
        run_seeds(config, run_dir, data_dir=data_dir, show_progress=show_progress, overwrite=overwrite)
        return
    # run_experiment looked up here at each call, so that it is this module's (tests replace it)
    train_or_resume(config, run_dir, heading, data_dir, show_progress, overwrite, train=run_experiment)


def _failures(failed: dict[str, str]) -> str:
    return "; ".join(f"{label} ({why})" for label, why in failed.items())


def _experiment(entry: Any, index: int, common: list[str], base_dir: Path, path: Path) -> SuiteExperiment:
    where = f"{path}: experiments[{index}]"
    if isinstance(entry, str):
        return SuiteExperiment(_label(entry), _source(entry, base_dir), list(common))
    if not isinstance(entry, dict) or "run" not in entry:
        raise ConfigError(f"{where} must be a zoo name, a config file, or a mapping with run: (and optional "
                          f"label:, overrides:).")
    unknown = set(entry) - {"run", "label", "overrides"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys are run, label, overrides.")
    source = str(entry["run"])
    label = str(entry.get("label") or _label(source))
    return SuiteExperiment(label, _source(source, base_dir), common + _overrides(entry.get("overrides"), where))


def _sweep_experiments(raw: Any, common: list[str], base_dir: Path, path: Path) -> tuple[list[SuiteExperiment], str]:
    where = f"{path}: sweep"
    if isinstance(raw, dict) and "parameter" not in raw:
        # shorthand: sweep: {run: cifar10/cnn, train.batch_size: [1, 32, 100, 1000]}
        swept = [key for key, value in raw.items() if "." in str(key) and isinstance(value, list)]
        if len(swept) == 1:
            raw = {**{k: v for k, v in raw.items() if k != swept[0]}, "parameter": swept[0], "values": raw[swept[0]]}
    if not isinstance(raw, dict) or "run" not in raw or "parameter" not in raw or "values" not in raw:
        raise ConfigError(f"{where} needs run: (zoo name or config) and one parameter with its values, either "
                          f"as train.batch_size: [1, 32] or as parameter: train.batch_size with values: [1, 32].")
    values = raw["values"]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: values must be a non-empty list.")
    reported = raw.get("reported") or [None] * len(values)
    if not isinstance(reported, list) or len(reported) != len(values):
        raise ConfigError(f"{where}: reported: must list one figure (the report's, 0..1) per value.")
    source, parameter = str(raw["run"]), str(raw["parameter"])
    base = common + _overrides(raw.get("overrides"), where)
    base_label = str(raw.get("label") or _label(source))
    return [SuiteExperiment(f"{base_label} {parameter}={value}", _source(source, base_dir),
                            base + [f"{parameter}={_yaml_value(value)}"], value, figure)
            for value, figure in zip(values, reported)], parameter


def _overrides(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [f"{key}={_yaml_value(value)}" for key, value in raw.items()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return list(raw)
    raise ConfigError(f"{where}: overrides must be a mapping (train.epochs: 3) or a list of key=value strings.")


def _yaml_value(value: Any) -> str:
    """``value`` as the text of a key=value override."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _source(source: str, base_dir: Path) -> str:
    if source.endswith((".yaml", ".yml")):
        candidate = base_dir / source
        return str(candidate if candidate.exists() else Path(source))
    return source


def _label(source: str) -> str:
    return Path(source).stem if source.endswith((".yaml", ".yml")) else source

