"""Suites: a whole study in one command. Experiments run in order, one run directory each,
then one comparison report. Re-running skips experiments whose run directory is complete and
resumes unfinished ones from their checkpoints; a failed experiment never stops the others.

Several processes may run one suite folder together (`--workers K`, other terminals, machines sharing
the folder): each experiment is claimed before it runs (`cnnlab.studies.claims`), so it runs once, and
the comparison is written once, when every experiment is done."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from cnnlab import output_folders, runs
from cnnlab.bundled import bundled_suite, suite_names
from cnnlab.config import load_config, read_settings_file
from cnnlab.errors import CnnlabError, ConfigError, TrainingInterrupted, did_you_mean, shorten
from cnnlab.experiment import run_experiment
from cnnlab.report.comparison import write_comparison
from cnnlab.studies.claims import HEARTBEAT_S, LEASE_S, Claim, ClaimBoard, Session
from cnnlab.studies.seeds import run_seeds, train_or_resume, with_seed_count
from cnnlab.studies.sweep import write_sweep

SUITE_KEYS = {"name", "description", "defaults", "experiments", "sweep"}
COMPARISON_CLAIM = "comparison"  # the claim of writing the comparison (experiments' folders start with a number)


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


@dataclass(frozen=True)
class WorkerSettings:
    """How this process works with the others on one suite folder (`cnnlab.studies.claims`): the session it
    works in (None: join the open one or open one), its label in messages, the lease and heartbeat of its
    claims, how often it looks again while other workers hold the remaining experiments, and whether it
    says what it claims when training progress is not shown."""

    session: Optional[Session] = None
    label: str = ""
    lease_s: float = LEASE_S
    heartbeat_s: float = HEARTBEAT_S
    poll_s: float = 5.0
    log_claims: bool = False


def run_suite(suite: Suite, out: Path, data_dir: Path | None = None, show_progress: bool = True,
              overwrite: bool = False, seed_count: int | None = None,
              worker: Optional[WorkerSettings] = None) -> dict[str, Path]:
    """Run the suite's experiments into ``out``, then write the comparison; return the written files.

    An experiment whose run is complete with the same config is skipped, an unfinished one is resumed
    from its checkpoint, one whose config changed is trained again (its earlier run replaced only once
    the new one is complete); ``overwrite`` trains every experiment again. An experiment that fails
    with a user error (a CnnlabError such as TrainingDiverged) becomes a row of the comparison saying
    why, the others still run, and SuiteFailed then names the failed ones. With ``seed_count`` (`--seeds N`)
    every experiment runs N seeds from its train.seed into a multi-seed folder (`cnnlab.studies.seeds`),
    and the comparison shows mean ± std; an experiment whose config has train.seeds runs them anyway.

    Every experiment is claimed first (`cnnlab.studies.claims`), so several processes running this on one
    folder share the experiments, each run once; a process with nothing left to claim waits for the others
    (taking over the claims of any that died), and one of them writes the comparison."""
    out = prepare_suite_folder(out, overwrite)
    settings = worker or WorkerSettings()
    board = ClaimBoard(out, settings.lease_s, settings.heartbeat_s)
    session = (dataclasses.replace(settings.session, worker=settings.label) if settings.session is not None
               else board.join_session(suite_digest(suite, seed_count), overwrite, settings.label))
    folders = [out / f"{index:02d}-{runs.slug(experiment.label)}"
               for index, experiment in enumerate(suite.experiments, 1)]
    outcomes = _run_claimed_experiments(suite, folders, board, session, settings, data_dir, show_progress, seed_count)
    finished = [(experiment, run_dir) for experiment, run_dir in zip(suite.experiments, folders)
                if outcomes[run_dir.name].get("outcome") == "complete"]
    failed = {experiment.label: str(outcomes[run_dir.name].get("reason") or "failed")
              for experiment, run_dir in zip(suite.experiments, folders)
              if outcomes[run_dir.name].get("outcome") != "complete"}
    if not finished:
        board.close_session(session, "no experiment finished")
        raise SuiteFailed(f"No experiment of suite {suite.name} finished, so there is nothing to compare: "
                          f"{_failures(failed)}.", {})
    written = _comparison_once(board, session, settings, lambda: _write_comparison(suite, out, finished, failed))
    if failed:
        raise SuiteFailed(f"{len(failed)} of {len(suite.experiments)} experiments of suite {suite.name} failed: "
                          f"{_failures(failed)}. The comparison of the others is in {written['html']}. Fix them and "
                          "run the suite again: complete experiments are skipped.", written)
    return written


def prepare_suite_folder(out: Path, overwrite: bool) -> Path:
    """The suite folder through the output gate. A refusal is checked again after a second: another worker
    starting at the same moment may be writing the new folder's marker (its temporary file is all there is)."""
    try:
        return output_folders.prepare_output_folder(out, overwrite, "suite")
    except CnnlabError:
        time.sleep(1.0)
        return output_folders.prepare_output_folder(out, overwrite, "suite")


def suite_digest(suite: Suite, seed_count: int | None) -> str:
    """What workers must agree on to share a suite folder: its experiments, their overrides, --seeds."""
    described = [[experiment.label, experiment.source, experiment.overrides] for experiment in suite.experiments]
    return hashlib.sha256(json.dumps([described, seed_count]).encode("utf-8")).hexdigest()[:16]


def _run_claimed_experiments(suite: Suite, folders: list[Path], board: ClaimBoard, session: Session,
                             settings: WorkerSettings, data_dir: Path | None, show_progress: bool,
                             seed_count: int | None) -> dict[str, dict]:
    """Claim and run experiments until every one is done in this session; return each one's outcome."""
    prefix, waiting_for = f"[{settings.label}] " if settings.label else "", None
    while True:
        records = board.records()
        outcomes = {folder.name: records[folder.name].data for folder in folders
                    if folder.name in records and records[folder.name].done_in(session)}
        if len(outcomes) == len(folders):
            return outcomes
        claimed_any = False
        for index, (experiment, run_dir) in enumerate(zip(suite.experiments, folders), 1):
            claim = None if run_dir.name in outcomes else board.try_claim(run_dir.name, session)
            if claim is None:
                continue
            claimed_any = True
            heading = f"{prefix}[{index}/{len(suite.experiments)}] {experiment.label}"
            runs.log_line(f"{heading}: claimed ({run_dir})", settings.log_claims and not show_progress)
            with claim:
                _run_claimed(experiment, run_dir, heading, claim, data_dir, show_progress, seed_count, settings)
        held = sorted(name for name, record in board.records().items() if record.state == "running")
        if not claimed_any and held != waiting_for:
            runs.log_line(f"{prefix}waiting for the experiments other workers hold: {', '.join(held)}",
                          show_progress or settings.log_claims)
            waiting_for = held
        if not claimed_any:
            board.touch_session(session)
            time.sleep(settings.poll_s)


def _run_claimed(experiment: SuiteExperiment, run_dir: Path, heading: str, claim: Claim, data_dir: Path | None,
                 show_progress: bool, seed_count: int | None, settings: WorkerSettings) -> None:
    """Run one claimed experiment and write its outcome into the claim: complete, or failed and why."""
    try:
        _run_one(experiment, run_dir, heading, data_dir, show_progress, claim.session.overwrite, seed_count)
    except TrainingInterrupted:
        claim.release("interrupted")  # the checkpoint lets the next `cnnlab suite` (or another worker) resume it
        claim.board.close_session(claim.session, "interrupted")
        raise
    except CnnlabError as error:
        claim.finish("failed", reason=shorten(" ".join(str(error).split()), 300))
        runs.log_line(f"{heading}: failed, the other experiments still run. {error}")
        return
    except BaseException as error:
        if isinstance(error, Exception):  # a crash: the other workers carry on, the comparison says why
            claim.finish("failed", reason=shorten(f"crashed: {type(error).__name__}: {error}", 300))
        else:
            claim.release(type(error).__name__)
            claim.board.close_session(claim.session, "interrupted")
        raise
    claim.finish("complete")
    runs.log_line(f"{heading}: done", settings.log_claims and not show_progress)


def _comparison_once(board: ClaimBoard, session: Session, settings: WorkerSettings,
                     write: Callable[[], dict[str, Path]]) -> dict[str, Path]:
    """The comparison's files, written by the one worker that claims the comparison (the others wait)."""
    folder = board.suite_folder
    while True:
        current = board.current(COMPARISON_CLAIM)
        if current is not None and current.done_in(session):
            return {key: folder / name for key, name in current.data.get("written", {}).items()}
        claim = board.try_claim(COMPARISON_CLAIM, session)
        if claim is None:
            board.touch_session(session)
            time.sleep(settings.poll_s)
            continue
        with claim:
            try:
                written = write()
            except BaseException:
                claim.release("the comparison failed")
                raise
            claim.finish("complete", written={key: str(Path(path).relative_to(folder))
                                              for key, path in written.items()})
        board.close_session(session, "complete")
        return written


def _write_comparison(suite: Suite, out: Path, finished: list[tuple[SuiteExperiment, Path]],
                      failed: dict[str, str]) -> dict[str, Path]:
    kept = [experiment for experiment, _ in finished]
    run_dirs = [run_dir for _, run_dir in finished]
    written = write_comparison(run_dirs, out, labels=[experiment.label for experiment in kept], failed=failed,
                               title=suite.name, description=suite.description)
    if suite.sweep_parameter:
        values = [experiment.sweep_value for experiment in kept]
        reported = [experiment.reported for experiment in kept]
        written.update(write_sweep(run_dirs, values, suite.sweep_parameter, out, reported))
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

