"""Multi-seed experiments: one config trained once per seed of `train.seeds` (or `--seeds N`) into one
folder, ``OUT/seed-<s>/`` an ordinary run folder each, and ``OUT/`` the aggregate (`metrics.json` of kind
"seeds" with mean, sample standard deviation, min and max over the seeds, the mean `history.csv`, the
multi-seed `config.yaml`, and the report with mean curves and their band).

Running it again continues the folder as a suite does: a seed whose run is complete with the same config
is skipped, an interrupted one is resumed from its checkpoint, the others are trained (again). The step
that decides this, `train_or_resume`, is the one suites use for their experiments."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from cnnlab import output_folders, runs
from cnnlab.analysis.run_files import read_metrics
from cnnlab.analysis.run_index import record_run
from cnnlab.analysis.seed_runs import SEEDS_KIND, aggregate_metrics, mean_history, seed_run_name
from cnnlab.config import ExperimentConfig, load_config
from cnnlab.errors import CnnlabError, ConfigError, TrainingDiverged, TrainingInterrupted
from cnnlab.experiment import run_experiment
from cnnlab.report.seeds_report import write_seeds_report
from cnnlab.training.callbacks import Callback
from cnnlab.training.checkpoint import has_checkpoint, resume_conflicts
from cnnlab.training.distributed import torchrun_process
from cnnlab.training.settings import MAX_SEED, MAX_SEEDS


def with_seed_count(config: ExperimentConfig, count: int) -> ExperimentConfig:
    """``config`` with `train.seeds` set to ``count`` consecutive seeds from its `train.seed`:
    `--seeds 3` with train.seed 0 runs seeds 0, 1, 2 (with train.seed 7: 7, 8, 9)."""
    first = config.train.seed
    if not 1 <= count <= MAX_SEEDS:
        raise ConfigError(f"--seeds must be a number of seeds from 1 to {MAX_SEEDS}, not {count}.")
    if first + count - 1 > MAX_SEED:
        raise ConfigError(f"--seeds {count} from train.seed {first} would pass the largest seed, {MAX_SEED}: "
                          "lower train.seed or the number of seeds.")
    return with_seeds(config, list(range(first, first + count)))


def with_seeds(config: ExperimentConfig, seeds: Optional[list[int]]) -> ExperimentConfig:
    """``config`` with `train.seeds` replaced (None: a single-seed experiment)."""
    return config.model_copy(update={"train": config.train.model_copy(update={"seeds": seeds})})


def seed_config(config: ExperimentConfig, seed: int) -> ExperimentConfig:
    """The config of one seed's run: an ordinary single-seed config with `train.seed` = ``seed``."""
    return config.model_copy(update={"train": config.train.model_copy(update={"seed": seed, "seeds": None})})


def run_seeds(config: ExperimentConfig, out: Optional[Path] = None, data_dir: Optional[Path] = None,
              show_progress: bool = True, runs_root: Path = Path("runs"), overwrite: bool = False,
              callbacks: Sequence[Callback] = ()) -> Path:
    """Train ``config`` once per seed of `train.seeds` into ``out`` (default runs/<timestamp>-<name>), then
    write the aggregate and its report there; return ``out``. ``callbacks`` are called by each seed's run in
    turn (a skipped complete seed calls none).

    A complete seed run of the same config is skipped, an interrupted one resumed, ``overwrite`` trains every
    seed again (each run replaced once its new one is complete). A seed whose training diverges does not stop
    the others: the aggregate is written over the complete ones, then TrainingDiverged names the diverged
    seeds. An interruption raises TrainingInterrupted naming ``out``: the same command (or `cnnlab train
    --resume OUT`) continues."""
    if torchrun_process(config.train) is not None:  # every process would write the aggregate
        raise ConfigError("Several seeds (train.seeds or --seeds) are not run under torchrun: start one torchrun "
                          "job per seed with train.seed=S, or run the seeds without torchrun (docs/scale.md).")
    seeds = list(config.train.seeds or [config.train.seed])
    folder = out or output_folders.default_run_dir(config.name, runs_root)
    # continued in place like a suite's folder: each seed run goes through the output gate itself
    folder = output_folders.prepare_output_folder(folder, overwrite, SEEDS_KIND, resume=True)
    runs.write_text_atomic(folder / runs.CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    diverged: dict[int, str] = {}
    for number, seed in enumerate(seeds, 1):
        heading = f"[seed {seed}, {number}/{len(seeds)}] {config.name}"
        try:
            train_or_resume(seed_config(config, seed), folder / seed_run_name(seed), heading, data_dir,
                            show_progress, overwrite, functools.partial(run_experiment, callbacks=callbacks))
        except TrainingInterrupted as error:
            raise TrainingInterrupted(f"{error} Run the same command again (or `cnnlab train --resume {folder}`) "
                                      "to continue: complete seeds are skipped.", run_dir=folder,
                                      signal_number=error.signal_number) from error
        except TrainingDiverged as error:
            diverged[seed] = " ".join(str(error).split())
            runs.log_line(f"{heading}: diverged, the other seeds still run. {error}", show_progress)
    complete = [seed for seed in seeds if seed not in diverged]
    if complete:
        write_aggregate(folder, complete, "complete" if not diverged else "incomplete", diverged)
    if diverged:
        raise TrainingDiverged(f"{len(diverged)} of {len(seeds)} seeds of {config.name} diverged: "
                               + "; ".join(f"seed {seed}: {why}" for seed, why in diverged.items())
                               + (f" The aggregate of the others is in {folder}." if complete else ""))
    runs.log_line(f"{len(seeds)} seeds: {folder}", show_progress)
    return folder


def write_aggregate(folder: Path, seeds: list[int], status: str = "complete",
                    diverged: Optional[dict[int, str]] = None) -> Path:
    """metrics.json (kind "seeds"), the mean history.csv and the report of the seed runs of ``seeds`` in
    ``folder``; return the metrics.json path."""
    names = [seed_run_name(seed) for seed in seeds]
    aggregate = aggregate_metrics([read_metrics(folder / name) for name in names], seeds, names, status)
    if diverged:
        aggregate["diverged_seeds"] = {str(seed): why for seed, why in diverged.items()}
    history = mean_history([runs.read_history(folder / name) for name in names])
    runs.write_csv_atomic(folder / runs.HISTORY_FILE, history, runs.HISTORY_COLUMNS)
    runs.write_json_atomic(folder / runs.METRICS_FILE, aggregate)
    write_seeds_report(folder)
    record_run(folder)  # in the run indexes above it (`cnnlab runs`); never fails the run
    return folder / runs.METRICS_FILE


def resume_seeds(folder: Path, data_dir: Optional[Path] = None, show_progress: bool = True,
                 overrides: Optional[list[str]] = None) -> Path:
    """`cnnlab train --resume OUT` for a multi-seed folder: `run_seeds` with the folder's own config.yaml
    (and ``overrides``, such as train.epochs raised)."""
    from_folder = Path(folder) / runs.CONFIG_FILE
    if not from_folder.is_file():
        raise CnnlabError(f"{folder} has no {runs.CONFIG_FILE}, so it cannot be continued.")
    return run_seeds(load_config(str(from_folder), list(overrides or [])), out=Path(folder), data_dir=data_dir,
                     show_progress=show_progress)


def train_or_resume(config: ExperimentConfig, run_dir: Path, heading: str, data_dir: Optional[Path],
                    show_progress: bool, overwrite: bool, train: Callable[..., Path] | None = None) -> None:
    """Skip, resume, train or train again one run into ``run_dir``: a complete run of the same config is
    skipped, an unfinished one of this config resumed from its checkpoint, anything else trained (a cnnlab
    run there replaced only once the new one is complete); ``overwrite`` trains again in every case.
    ``train`` (default `run_experiment`) is what trains."""
    if not overwrite and runs.is_complete(run_dir) and same_config(run_dir, config):
        runs.log_line(f"{heading}: complete, skipped ({run_dir})", show_progress)
        return
    resume = not overwrite and resumable(run_dir, config)
    # a run that is complete with another config, diverged or failed is replaced, but only once the new
    # one is complete; a folder that is not a cnnlab run is refused by the output gate
    replace = overwrite or (output_folders.output_kind(run_dir) == "run" and not resume)
    runs.log_line(f"{heading}: {'resuming from its checkpoint' if resume else 'training'}", show_progress)
    (train or run_experiment)(config, out=run_dir, data_dir=data_dir, show_progress=show_progress,
                              overwrite=replace, resume=resume)


def resumable(run_dir: Path, config: ExperimentConfig) -> bool:
    """An unfinished run of this config (train.epochs may be raised) with a checkpoint to continue from."""
    if output_folders.output_kind(run_dir) != "run" or not has_checkpoint(run_dir):
        return False
    try:
        status = runs.read_json(run_dir / runs.METRICS_FILE).get("status")
        saved = yaml.safe_load((run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return False
    return status in output_folders.UNFINISHED_STATUSES and not resume_conflicts(saved, config.to_dict())


def same_config(run_dir: Path, config: ExperimentConfig) -> bool:
    """Whether ``run_dir``'s config.yaml is ``config``."""
    try:
        saved = yaml.safe_load((run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return saved == config.to_dict()
