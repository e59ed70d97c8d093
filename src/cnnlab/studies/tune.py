"""`cnnlab tune`: a hyperparameter search with Optuna. Every trial is an ordinary run folder
(``FOLDER/trial-0007/``) trained by `run_experiment` with the trial's values; trials are compared on a
validation metric, hopeless ones are stopped by the median pruner from their validation curves, and the
study folder gets its report, trials.csv and the best config as best.yaml.

The study lives in Optuna's storage: SQLite in the study folder by default, or any SQLAlchemy URL
(PostgreSQL for many machines). Workers, `--workers K` processes of one command or the same command on
several machines, share the study: each starts a trial only while the study has fewer than ``trials``
started or finished ones, decided under the study's lock (a file lock beside a SQLite database, an
advisory lock in PostgreSQL), so a study of N trials runs N trials, never one twice. A trial stopped by
Ctrl-C or SIGTERM does not count: the next command runs another in its place."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from cnnlab import output_folders, runs
from cnnlab.analysis.run_index import record_run
from cnnlab.config import ExperimentConfig, validate_config
from cnnlab.errors import CnnlabError, ConfigError, TrainingInterrupted, shorten
from cnnlab.experiment import run_experiment
from cnnlab.report.run_report import write_report
from cnnlab.report.tune_report import STUDY_FILE, write_tune_report
from cnnlab.studies.tune_settings import ParamSpec, TuneSettings, base_config, check_search, search_space, trial_config
from cnnlab.studies.tune_storage import (
    check_storage_url, claim_trial, load_optuna, make_pruner, make_sampler, mask_url, open_storage, study_lock,
    trial_row,
)
from cnnlab.training.callbacks import Callback
from cnnlab.training.interrupt import StopRequest, stop_on_signals

TUNE_KIND = "tune"
DATABASE_FILE = "study.db"
TRIALS_FILE = "trials.csv"
BEST_FILE = "best.yaml"
ATTRIBUTE = "cnnlab"  # the study's user attribute holding what every worker must agree on


@dataclass
class TunePlan:
    """Everything a worker needs, as JSON for the worker processes: settings, folder, storage, base config."""

    settings: dict[str, Any]
    folder: str
    storage: str
    study: str
    config: dict[str, Any]
    data_dir: Optional[str] = None
    show_progress: bool = True

    @property
    def tune(self) -> TuneSettings:
        return TuneSettings.model_validate(self.settings)

    @property
    def base(self) -> ExperimentConfig:
        return validate_config(dict(self.config), "the study's config")


@dataclass
class TuneOutcome:
    """What a `run_tune` call left: the study folder, its files, and counts of the study's trials by state."""

    folder: Path
    paths: dict[str, Path]
    counts: dict[str, int] = field(default_factory=dict)
    best: Optional[dict[str, Any]] = None


def run_tune(settings: TuneSettings, data_dir: Optional[Path] = None, show_progress: bool = True,
             stop: Optional[StopRequest] = None) -> TuneOutcome:
    """Run the study ``settings`` describes until it holds ``settings.trials`` trials (those of other workers
    and earlier commands count), then write its report; return where. ``settings.workers`` > 1 starts that
    many worker processes. Raises TrainingInterrupted (naming the study folder) after Ctrl-C or SIGTERM."""
    optuna = load_optuna()
    plan = prepare_tune(settings, data_dir, show_progress)
    open_study(plan, optuna, create=True)
    try:
        if settings.workers == 1:
            run_worker(plan, 0, stop)
        else:
            _run_worker_processes(plan, settings.workers, stop)
    except TrainingInterrupted:
        write_study_outputs(plan)  # the report of what the study holds so far
        raise
    return write_study_outputs(plan)


def prepare_tune(settings: TuneSettings, data_dir: Optional[Path] = None, show_progress: bool = True) -> TunePlan:
    """Check everything a user's input can fail (config, validation split, search space, folder, storage
    URL) before any trial; create the study folder through the output gate."""
    config = base_config(settings)
    check_search(config, search_space(settings))
    study = settings.study or config.name
    folder = Path(settings.out) if settings.out else Path("runs") / f"tune-{runs.slug(study)}"
    output_folders.check_output_folder(folder, kind=TUNE_KIND, resume=True)
    storage = settings.storage or f"sqlite:///{folder.resolve() / DATABASE_FILE}"
    check_storage_url(storage)
    _check_same_study(folder, study, storage)
    folder = output_folders.prepare_output_folder(folder, kind=TUNE_KIND, resume=True)  # continued in place
    return TunePlan(settings.model_dump(mode="json"), str(folder), storage, study, config.to_dict(),
                    None if data_dir is None else str(data_dir), show_progress)


def open_study(plan: TunePlan, optuna: Any, create: bool = False, worker: int = 0) -> Any:
    """The plan's study with this worker's sampler and pruner; with ``create``, created when new (under the
    study's lock), else checked to be the same search (metric, parameters, experiment)."""
    settings = plan.tune
    agreed = {"metric": settings.metric, "params": {spec.key: spec.text for spec in search_space(settings)},
              "config": plan.config}
    with study_lock(plan.storage, plan.study):
        storage = open_storage(plan.storage, optuna)
        exists = plan.study in optuna.study.get_all_study_names(storage)
        if not exists and not create:
            raise CnnlabError(f"Study {plan.study} does not exist in {mask_url(plan.storage)}.")
        if not exists and any(Path(plan.folder).glob("trial-*")):
            raise CnnlabError(f"{plan.folder} holds the trial folders of an earlier study, but "
                              f"{mask_url(plan.storage)} has no study {plan.study}: give --out a new folder.")
        study = optuna.create_study(study_name=plan.study, storage=storage, direction=settings.direction,
                                    sampler=make_sampler(settings, worker, optuna),
                                    pruner=make_pruner(settings, optuna),
                                    load_if_exists=True)
        held = study.user_attrs.get(ATTRIBUTE)
        if held is None:
            study.set_user_attr(ATTRIBUTE, {**agreed, "trials": settings.trials})
        else:
            _check_agreement(plan, held, agreed, study.direction.name.lower())
            if create and settings.trials > held.get("trials", 0):
                study.set_user_attr(ATTRIBUTE, {**held, "trials": settings.trials})
    if create and not (Path(plan.folder) / STUDY_FILE).is_file():  # the folder names its study from the start
        runs.write_json_atomic(Path(plan.folder) / STUDY_FILE, {"study": plan.study, "storage": mask_url(plan.storage),
                                                                 "trials": []})
    return study


def run_worker(plan: TunePlan, worker: int = 0, stop: Optional[StopRequest] = None) -> int:
    """Start trials one after another while the study has fewer than its planned trials; return how many
    this worker ran."""
    optuna = load_optuna()
    settings, base = plan.tune, plan.base
    study = open_study(plan, optuna, worker=worker)
    specs, ran = search_space(settings), 0
    with stop_on_signals(stop) as request:
        try:
            while not request.requested:
                with study_lock(plan.storage, plan.study):
                    trial = claim_trial(study, settings.trials)
                if trial is None:
                    break
                run_trial(plan, study, trial, specs, base, worker, request)
                ran += 1
        except TrainingInterrupted as error:
            raise interrupted(plan, error.signal_number) from error
    if request.requested:
        raise interrupted(plan, request.signal_number or 2)
    return ran


def interrupted(plan: TunePlan, signal_number: int) -> TrainingInterrupted:
    """The error of a study stopped by a signal: the same command continues it."""
    return TrainingInterrupted(f"The study {plan.study} was stopped; an interrupted trial does not count. Run the "
                               f"same command again to continue it (its folder: {plan.folder}).",
                               run_dir=Path(plan.folder), signal_number=signal_number)


def run_trial(plan: TunePlan, study: Any, trial: Any, specs: list[ParamSpec], base: ExperimentConfig,
              worker: int, stop: StopRequest) -> None:
    """Train one trial into ``FOLDER/trial-NNNN`` and tell the study how it ended: its validation metric,
    pruned (its folder's status "pruned"), or failed (a diverged run, an invalid combination)."""
    optuna, settings = load_optuna(), plan.tune
    started = time.perf_counter()
    run_dir = Path(plan.folder) / f"trial-{trial.number:04d}"
    prefix, shown = f"[worker {worker}] " if settings.workers > 1 else "", ""
    try:
        trial.set_user_attr("run_dir", run_dir.name)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        values = {spec.key: spec.suggest(trial) for spec in specs}
        shown = ", ".join(f"{key}={_short(value)}" for key, value in values.items())
        config = trial_config(base, values, name=f"{base.name}-{run_dir.name}")
        pruning = PruningCallback(trial, settings.metric, config.train.epochs)
        run_experiment(config, out=run_dir, data_dir=Path(plan.data_dir) if plan.data_dir else None,
                       show_progress=plan.show_progress and settings.workers == 1, stop=stop, callbacks=[pruning])
    except optuna.TrialPruned:
        epoch, value = pruning.last
        mark_pruned(run_dir, epoch, value, settings.metric)
        trial.set_user_attr("epochs", epoch)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        runs.log_line(f"{prefix}trial {trial.number} ({shown}): pruned after epoch {epoch}, {settings.metric} "
                      f"{value:.4f}", True)
        return
    except TrainingInterrupted:
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    except CnnlabError as error:  # a diverged run or an invalid combination: the study goes on
        trial.set_user_attr("failure", shorten(" ".join(str(error).split()), 500))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        runs.log_line(f"{prefix}trial {trial.number} ({shown}): failed: {shorten(str(error), 200)}", True)
        return
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    value, epochs = objective_value(run_dir, config, settings.metric)
    trial.set_user_attr("epochs", epochs)
    if value is None:
        trial.set_user_attr("failure", f"no finite {settings.metric} in its history")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    study.tell(trial, value)
    runs.log_line(f"{prefix}trial {trial.number} ({shown}): {settings.metric} {value:.4f} after {epochs} epochs, "
                  f"{time.perf_counter() - started:.1f} s", True)


class PruningCallback(Callback):
    """Reports each validated epoch's metric to the trial and raises ``optuna.TrialPruned`` out of training
    when the pruner says the trial is hopeless (never at its last epoch: stopping there saves nothing);
    ``last`` is (epoch, value) of the latest report."""

    def __init__(self, trial: Any, metric: str, epochs: int):
        self.trial, self.metric, self.epochs = trial, metric, epochs
        self.last: tuple[int, float] = (0, math.nan)

    def on_epoch_end(self, row: dict[str, float]) -> None:
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return  # an epoch without validation (train.validate_every)
        epoch = int(row["epoch"])
        self.trial.report(float(value), epoch)
        self.last = (epoch, float(value))
        if epoch < self.epochs and self.trial.should_prune():
            raise load_optuna().TrialPruned(f"trial {self.trial.number} pruned after epoch {epoch}")


def mark_pruned(run_dir: Path, epoch: int, value: float, metric: str) -> None:
    """Leave a pruned trial's run folder consistent: status "pruned" in metrics.json with why, its epochs and
    training time, no test metrics (it was never evaluated), no checkpoint (it will not be resumed), and its
    report."""
    metrics = runs.read_json(run_dir / runs.METRICS_FILE)
    history = runs.read_history(run_dir)
    metrics.update(status="pruned", epochs=epoch, test_accuracy=None, test_loss=None,
                   train_time_s=sum(row.get("epoch_time_s", 0.0) for row in history),
                   stop_reason=f"pruned by cnnlab tune after epoch {epoch}: its {metric} ({value:.4f}) was worse "
                               "than the median of the finished trials at that epoch")
    runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
    for name in (runs.CHECKPOINT_FILE, runs.PREVIOUS_CHECKPOINT_FILE):
        (run_dir / name).unlink(missing_ok=True)
    write_report(run_dir)
    record_run(run_dir)  # in the run indexes above it (`cnnlab runs`), as every finished run


def objective_value(run_dir: Path, config: ExperimentConfig, metric: str) -> tuple[Optional[float], int]:
    """The validation ``metric`` of the weights the run kept (its best epoch when early stopping restored
    them, else its last validated epoch), and the epochs it trained."""
    history = runs.read_history(run_dir)
    best_epoch = runs.read_json(run_dir / runs.METRICS_FILE).get("best_epoch")
    stopping = config.train.early_stopping
    rows = [row for row in history if stopping and stopping.restore_best and row["epoch"] == best_epoch] or history
    values = [row[metric] for row in rows if math.isfinite(row[metric])]
    return (float(values[-1]) if values else None), len(history)


def write_study_outputs(plan: TunePlan) -> TuneOutcome:
    """tune.json (the study and its trials), trials.csv, best.yaml and the report, from the study's storage."""
    optuna, settings, folder = load_optuna(), plan.tune, Path(plan.folder)
    study = optuna.load_study(study_name=plan.study, storage=open_storage(plan.storage, optuna))
    specs = search_space(settings)
    rows = [trial_row(trial, specs) for trial in study.get_trials(deepcopy=False)]
    held = study.user_attrs.get(ATTRIBUTE) or {}
    complete = [trial for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    best = study.best_trial if complete else None
    paths = {"tune": folder / STUDY_FILE, "trials": folder / TRIALS_FILE}
    if best is not None:
        paths["best"] = folder / BEST_FILE
        runs.write_text_atomic(paths["best"], best_yaml(plan, best.number, best.value, best.params))
    runs.write_json_atomic(paths["tune"], {
        "study": plan.study, "storage": mask_url(plan.storage), "metric": settings.metric,
        "direction": settings.direction, "experiment": plan.base.name,
        "trials_planned": held.get("trials", settings.trials),
        "params": [{"key": spec.key, "spec": spec.text, "kind": spec.kind, "log": spec.log, "low": spec.low,
                    "high": spec.high, "choices": list(spec.choices)} for spec in specs],
        "sampler": settings.sampler.model_dump(), "pruner": settings.pruner.model_dump(),
        "best_trial": None if best is None else best.number, "trials": rows})
    columns = ["number", "state", "value", *[spec.key for spec in specs], "epochs", "duration_s", "run_dir",
               "worker", "failure"]
    runs.write_csv_atomic(paths["trials"], [{**row, **row["params"]} for row in rows], columns)
    paths["report"], paths["html"] = write_tune_report(folder)
    counts = {state: sum(row["state"] == state for row in rows) for state in ("complete", "pruned", "fail", "running")}
    best_row = next((row for row in rows if best is not None and row["number"] == best.number), None)
    return TuneOutcome(folder, paths, counts, best_row)


def best_yaml(plan: TunePlan, number: int, value: float, params: dict[str, Any]) -> str:
    """The best trial's config as a YAML file `cnnlab train` takes, with a header saying where it came from."""
    base = plan.base
    config = trial_config(base, params, name=f"{base.name}-tuned")
    chosen = ", ".join(f"{key}={_short(value)}" for key, value in params.items())
    header = (f"# The best trial of the cnnlab tune study {plan.study}: trial {number}, validation "
              f"{plan.tune.metric.removeprefix('val_')} {value:.4f}\n# with {chosen}.\n"
              f"# Train it (its test accuracy is then measured once): cnnlab train {Path(plan.folder) / 'best.yaml'}\n")
    return header + yaml.safe_dump(config.to_dict(), sort_keys=False)


def worker_main() -> None:
    """The entry of a worker process started by `--workers K`: the plan as JSON on stdin, the worker's
    number as the first argument."""
    plan = TunePlan(**json.loads(sys.stdin.read()))
    worker = int(sys.argv[1])
    if plan.base.train.threads is None:  # the cores this command may use, shared among its workers
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // plan.tune.workers))
    try:
        run_worker(plan, worker)
    except TrainingInterrupted as error:
        sys.exit(128 + error.signal_number)
    except CnnlabError as error:
        print(f"error: [worker {worker}] {error}", file=sys.stderr)
        sys.exit(2)


def _run_worker_processes(plan: TunePlan, count: int, stop: Optional[StopRequest]) -> None:
    """``count`` worker processes, each in its own session (a signal to this command reaches each once, from
    here); wait for them. Raises TrainingInterrupted after a stop, CnnlabError when a worker failed."""
    source = Path(__file__).resolve().parents[2]  # the folder holding the cnnlab package
    path = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": path}
    processes = []
    for worker in range(count):
        process = subprocess.Popen([sys.executable, "-c", "from cnnlab.studies.tune import worker_main; worker_main()",
                                    str(worker)], stdin=subprocess.PIPE, env=environment, start_new_session=True)
        process.stdin.write(json.dumps(asdict(plan)).encode("utf-8"))
        process.stdin.close()
        processes.append(process)
    with stop_on_signals(stop) as request:
        forwarded = False
        while any(process.poll() is None for process in processes):
            if request.requested and not forwarded:
                for process in processes:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(request.signal_number)
                forwarded = True
            time.sleep(0.1)
    codes = [process.returncode for process in processes]
    if request.requested or any(code in (130, 143) for code in codes):
        raise interrupted(plan, request.signal_number or max(codes) - 128)
    failed = [f"worker {worker} (exit code {code})" for worker, code in enumerate(codes) if code != 0]
    if failed:
        raise CnnlabError(f"{', '.join(failed)} of the study {plan.study} stopped with an error (shown above). "
                          "Fix it and run the same command again: the study continues where it is.")


def _check_agreement(plan: TunePlan, held: dict[str, Any], agreed: dict[str, Any], direction: str) -> None:
    differences = [f"{key} {_shown(old)} (this command: {_shown(new)})"
                   for key, (old, new) in _differences({key: held.get(key) for key in agreed}, agreed).items()]
    if differences or direction != plan.tune.direction:
        raise ConfigError(f"The study {plan.study} in {mask_url(plan.storage)} searches something else: "
                          f"{'; '.join(differences) or 'its direction is ' + direction}. Run it with the command "
                          "that started it (the same config, overrides, params and metric), or start another study: "
                          "a new --study name (and a new --out if you gave one).")


def _check_same_study(folder: Path, study: str, storage: str) -> None:
    path = folder / STUDY_FILE
    if not path.is_file():
        return
    held = runs.read_json(path)
    if held.get("study") != study or held.get("storage") != mask_url(storage):
        raise CnnlabError(f"{folder} holds the study {held.get('study')} in {held.get('storage')}, not {study} in "
                          f"{mask_url(storage)}: give --out another folder (one study per folder).")


def _differences(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two nested mappings, with both values."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return {} if old == new else {prefix or "(all)": (old, new)}
    found: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new), key=str):
        found.update(_differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key)))
    return found


def _shown(value: Any) -> str:
    return shorten(json.dumps(value), 120)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
