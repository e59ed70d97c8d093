"""`cnnlab lr-find`: the learning-rate range test (Smith, 2015; fastai's lr_find).

A fresh model trains for a short sweep whose learning rate grows exponentially every step
(1e-7 to 10 over 100 steps by default) on the same data path as training: the dataset, the
validation hold-out, the device-resident batches, the normalisation, the augmenter, the compute
plan (precision, memory layout, compilation) and training's own step (`TrainingStep`: the
config's optimiser, loss, label smoothing and L2 penalty). The sweep stops once the smoothed
loss exceeds 4x its minimum or becomes NaN. Nothing is restored or saved but the curve:
lr-find never writes a run's weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab import output_folders, runs
from cnnlab.config import ExperimentConfig
from cnnlab.errors import ConfigError
from cnnlab.experiment import place_on_device, prepare_experiment
from cnnlab.report import plots
from cnnlab.training.step import TrainingStep

DIVERGENCE_FACTOR = 4.0  # the sweep stops when the smoothed loss exceeds this multiple of its minimum
# exponential moving average of the loss, bias-corrected; 0.9 averages ~10 steps, about one decade of lr
# in the default sweep (fastai's 0.98 lags the raw loss by over a decade at 100 steps)
SMOOTHING = 0.9
CSV_FILE = "lr_find.csv"
PLOT_FILE = "lr_find.png"
SUMMARY_FILE = "lr_find.json"


@dataclass
class LrFinderResult:
    """The sweep's curve, the suggested lr and how the config's own lr compares."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stop_reason: str = "end of sweep"
    divergence_lr: float | None = None  # first lr whose loss blew up (None: never in the sweep)
    suggested_lr: float | None = None
    steepest_lr: float | None = None
    min_loss_lr: float | None = None
    config_lr: float | None = None
    diagnosis: str = ""
    compute_plan: dict = field(default_factory=dict)  # precision, channels_last, compile: as training would run

    def to_dict(self) -> dict:
        """The summary saved as lr_find.json (everything but the curve, which goes to lr_find.csv)."""
        keys = ("suggested_lr", "steepest_lr", "min_loss_lr", "divergence_lr", "config_lr", "stop_reason", "diagnosis",
                "compute_plan")
        return {key: getattr(self, key) for key in keys} | {"steps_run": len(self.lrs)}


def sweep_lrs(start: float, end: float, steps: int) -> np.ndarray:
    """``steps`` learning rates from ``start`` to ``end``, evenly spaced on a log scale."""
    if not (0 < start < end) or steps < 2:
        raise ConfigError(f"lr-find needs 0 < --start < --end and at least 2 --steps; got start {start}, end {end}, "
                          f"steps {steps}. The default sweep is --start 1e-7 --end 10 --steps 100.")
    return np.geomspace(start, end, steps)


def find_lr(config: ExperimentConfig, data_dir: Path | None = None, start: float = 1e-7, end: float = 10.0,
            steps: int = 100, show_progress: bool = True) -> LrFinderResult:
    """Run the sweep for ``config`` and return the curve with its suggestion and diagnosis."""
    lrs = sweep_lrs(start, end, steps)
    train_step, indices = training_step(config, data_dir)
    plan = train_step.plan
    runs.log_line(f"lr-find: {config.dataset.name}, {len(indices)} training images, batch {config.train.batch_size}, "
                  f"lr {start:g} to {end:g} over {steps} steps on {plan.device} in {plan.precision}", show_progress)
    result = LrFinderResult(config_lr=config.optimizer.lr, compute_plan=plan.to_dict())
    _sweep(train_step, indices, lrs, config, result)
    suggest(result)
    result.diagnosis = diagnose(result, end)
    return result


def training_step(config: ExperimentConfig, data_dir: Path | None = None) -> tuple[TrainingStep, torch.Tensor]:
    """The first step of ``config``'s training run and the training images' indices on the device, set
    up as `run_experiment` does it (same preparation, compute plan, memory layout, data-initialised
    whitening and augmenter), without a weight average (the sweep never evaluates one)."""
    prepared = prepare_experiment(config, data_dir)
    setup = place_on_device(prepared)
    plan, model = prepared.plan, setup.model.train()
    indices = torch.as_tensor(np.asarray(prepared.train_indices, dtype=np.int64), device=prepared.device)
    train_step = TrainingStep.from_recipe(model, config, plan, setup.train_data, prepared.augmenter,
                                          average_weights=False)
    if plan.compile:
        train_step.compile(indices[:config.train.batch_size])
    return train_step, indices


def _sweep(train_step: TrainingStep, indices: torch.Tensor, lrs: np.ndarray, config: ExperimentConfig,
           result: LrFinderResult) -> None:
    """One training step per lr in ``lrs`` on shuffled batches (reshuffled, as a new epoch, when the
    images run out), recording the raw and smoothed loss; stops when the loss diverges."""
    batch_size, device = config.train.batch_size, indices.device
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    order = indices[torch.randperm(len(indices), generator=generator, device=device)]
    cursor, epoch, average, best = 0, 1, 0.0, math.inf
    for step, lr in enumerate(lrs):
        if cursor + batch_size > len(order) and cursor > 0:  # a new epoch: reshuffle
            order = indices[torch.randperm(len(indices), generator=generator, device=device)]
            cursor, epoch = 0, epoch + 1
        output = train_step(order[cursor:cursor + batch_size], float(lr) / config.optimizer.lr, epoch)
        cursor += batch_size
        value = float(output.loss)
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        result.lrs.append(float(lr))
        result.losses.append(value)
        result.smoothed.append(smoothed)
        if not math.isfinite(value) or not math.isfinite(smoothed):
            result.stop_reason, result.divergence_lr = f"loss became NaN or infinite at lr {lr:.3g}", float(lr)
            return
        best = min(best, smoothed)
        if step > 0 and smoothed > DIVERGENCE_FACTOR * best:
            result.stop_reason = f"smoothed loss exceeded {DIVERGENCE_FACTOR:g}x its minimum at lr {lr:.3g}"
            result.divergence_lr = float(lr)
            return


def suggest(result: LrFinderResult) -> None:
    """Fill in the suggestion: the lr where the smoothed loss falls fastest (most negative slope
    against log10 lr, up to the loss minimum); when the curve has no falling stretch, the
    min-loss lr / 10. Both candidates are kept in the result."""
    lrs = np.asarray(result.lrs, dtype=float)
    smoothed = np.asarray(result.smoothed, dtype=float)
    finite = np.isfinite(smoothed)
    if finite.sum() < 2:
        return
    lrs, smoothed = lrs[finite], smoothed[finite]
    minimum = int(np.argmin(smoothed))
    result.min_loss_lr = float(lrs[minimum])
    if minimum >= 2:
        slopes = np.gradient(smoothed[:minimum + 1], np.log10(lrs[:minimum + 1]))
        steepest = int(np.argmin(slopes))
        if slopes[steepest] < 0:
            result.steepest_lr = float(lrs[steepest])
    result.suggested_lr = result.steepest_lr if result.steepest_lr is not None else max(result.min_loss_lr / 10, lrs[0])


def diagnose(result: LrFinderResult, sweep_end: float) -> str:
    """One sentence on the config's own lr against the curve."""
    lr, suggestion = result.config_lr, result.suggested_lr
    if suggestion is None:
        return (f"The loss diverged within the first steps ({result.stop_reason}); start the sweep lower "
                "(--start) or check the data and model.")
    if lr is None:
        return f"Suggested lr ≈{suggestion:.2g}."
    if result.divergence_lr is not None and lr >= result.divergence_lr:
        return (f"Your lr {lr:g} is past the point (≈{result.divergence_lr:.2g}) where the loss diverges; "
                f"try ≈{suggestion:.2g}.")
    if result.min_loss_lr is not None and lr > result.min_loss_lr:
        return (f"Your lr {lr:g} is beyond the loss minimum (≈{result.min_loss_lr:.2g}), where the loss climbs "
                f"again: training is likely unstable; try ≈{suggestion:.2g}.")
    if lr > sweep_end:
        return f"Your lr {lr:g} lies beyond the sweep's end ({sweep_end:g}); run lr-find with a larger --end."
    if lr < suggestion / 30:
        return (f"Your lr {lr:g} is far below where the loss falls fastest; training may be slow. "
                f"Try ≈{suggestion:.2g}.")
    return f"Your lr {lr:g} lies in the falling part of the curve; the suggestion is ≈{suggestion:.2g}."


def write_lr_finder(result: LrFinderResult, out: Path, overwrite: bool = False) -> dict[str, Path]:
    """lr_find.csv (step, lr, loss, smoothed_loss), lr_find.png and lr_find.json in ``out`` (through the
    output gate: an earlier lr-find there is replaced only with ``overwrite``, once these are written)."""
    folder = output_folders.prepare_output_folder(out, overwrite, "lr-find")
    rows = [{"step": step, "lr": lr, "loss": loss, "smoothed_loss": smoothed}
            for step, (lr, loss, smoothed) in enumerate(zip(result.lrs, result.losses, result.smoothed), start=1)]
    paths = {"csv": folder / CSV_FILE, "png": folder / PLOT_FILE, "json": folder / SUMMARY_FILE}
    runs.write_csv_atomic(paths["csv"], rows, ["step", "lr", "loss", "smoothed_loss"])
    figure = plots.plot_lr_finder(result.lrs, result.losses, result.smoothed, result.suggested_lr,
                                  result.config_lr, result.divergence_lr)
    plots.save_figure(figure, paths["png"])
    runs.write_json_atomic(paths["json"], result.to_dict())
    return output_folders.moved(paths, folder, output_folders.publish_output_folder(folder))


def checked_out(config: ExperimentConfig, out: Path | None, overwrite: bool = False) -> Path:
    """``out`` or the default folder, once the output gate has said it would accept it."""
    out = Path(out) if out is not None else default_out(config)
    output_folders.check_output_folder(out, overwrite, "lr-find")
    return out


def default_out(config: ExperimentConfig) -> Path:
    """runs/lr-find-NAME: where `cnnlab lr-find` writes without --out."""
    return Path("runs") / ("lr-find-" + runs.slug(config.name))
