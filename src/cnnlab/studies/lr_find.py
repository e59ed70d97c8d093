"""`cnnlab lr-find`: the learning-rate range test (Smith, 2015; fastai's lr_find).

A fresh model trains for a short sweep whose learning rate grows exponentially every step
(1e-7 to 10 over 100 steps by default) on the same data path as training: the dataset, the
validation hold-out, the device-resident batches, the normalisation, the augmenter and the
config's optimiser, loss, label smoothing and L2 penalty. The sweep stops once the smoothed
loss exceeds 4x its minimum or becomes NaN. Nothing is restored or saved but the curve:
lr-find never writes a run's weights."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab import runs
from cnnlab.report import plots
from cnnlab.config import ExperimentConfig
from cnnlab.errors import ConfigError

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

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in ("suggested_lr", "steepest_lr", "min_loss_lr", "divergence_lr",
                                                    "config_lr", "stop_reason", "diagnosis")} | {"steps_run": len(self.lrs)}


def sweep_lrs(start: float, end: float, steps: int) -> np.ndarray:
    """``steps`` learning rates from ``start`` to ``end``, evenly spaced on a log scale."""
    if not (0 < start < end) or steps < 2:
        raise ConfigError(f"lr-find needs 0 < --start < --end and at least 2 --steps; got start {start}, end {end}, "
                          f"steps {steps}. The default sweep is --start 1e-7 --end 10 --steps 100.")
    return np.geomspace(start, end, steps)


def find_lr(config: ExperimentConfig, data_dir: Path | None = None, start: float = 1e-7, end: float = 10.0,
            steps: int = 100, show_progress: bool = True) -> LrFinderResult:
    """Run the sweep for ``config`` and return the curve with its suggestion and diagnosis."""
    from cnnlab.data.device_images import DeviceImages
    from cnnlab.experiment import prepare_experiment
    from cnnlab.training.optimizers import apply_lr, kernel_weights, l2_penalty, make_optimizer

    lrs = sweep_lrs(start, end, steps)
    settings = config.train
    # the same set-up as training (so a z-score normalisation is shared with the runs' cache)
    prepared = prepare_experiment(config, data_dir)
    device, dataset, built = prepared.device, prepared.dataset, prepared.built
    train_positions, normalization, augmenter = prepared.train_positions, prepared.normalization, prepared.augmenter
    data = DeviceImages(dataset.train_images, dataset.train_labels, normalization, device)
    model = built.module.to(device).train()
    optimizer = make_optimizer(model, config.optimizer)
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    kernels = kernel_weights(model, config.optimizer.l2_layers) if config.optimizer.l2 > 0 else []
    positions = torch.as_tensor(np.asarray(train_positions, dtype=np.int64), device=device)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    _log(show_progress, f"lr-find: {dataset.name}, {len(train_positions)} training images, batch "
                        f"{settings.batch_size}, lr {start:g} to {end:g} over {steps} steps on {device}")

    result = LrFinderResult(config_lr=config.optimizer.lr)
    order = positions[torch.randperm(len(positions), generator=generator, device=device)]
    cursor, average, best = 0, 0.0, math.inf
    for step, lr in enumerate(lrs):
        if cursor + settings.batch_size > len(order) and cursor > 0:  # a new epoch: reshuffle
            order, cursor = positions[torch.randperm(len(positions), generator=generator, device=device)], 0
        images, labels = data.batch(order[cursor:cursor + settings.batch_size])
        cursor += settings.batch_size
        if augmenter is not None:
            images = augmenter(images)
        apply_lr(optimizer, float(lr) / config.optimizer.lr)
        loss = criterion(model(images), labels) + l2_penalty(kernels, config.optimizer.l2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        result.lrs.append(float(lr))
        result.losses.append(value)
        result.smoothed.append(smoothed)
        if not math.isfinite(value) or not math.isfinite(smoothed):
            result.stop_reason, result.divergence_lr = f"loss became NaN or infinite at lr {lr:.3g}", float(lr)
            break
        best = min(best, smoothed)
        if step > 0 and smoothed > DIVERGENCE_FACTOR * best:
            result.stop_reason = f"smoothed loss exceeded {DIVERGENCE_FACTOR:g}x its minimum at lr {lr:.3g}"
            result.divergence_lr = float(lr)
            break
    suggest(result)
    result.diagnosis = diagnose(result, end)
    return result


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


def write_lr_finder(result: LrFinderResult, out: Path) -> dict[str, Path]:
    """lr_find.csv (step, lr, loss, smoothed_loss), lr_find.png and lr_find.json in ``out``."""
    out = Path(out)
    rows = [{"step": step, "lr": lr, "loss": loss, "smoothed_loss": smoothed}
            for step, (lr, loss, smoothed) in enumerate(zip(result.lrs, result.losses, result.smoothed), start=1)]
    paths = {"csv": out / CSV_FILE, "png": out / PLOT_FILE, "json": out / SUMMARY_FILE}
    runs.write_csv_atomic(paths["csv"], rows, ["step", "lr", "loss", "smoothed_loss"])
    figure = plots.plot_lr_finder(result.lrs, result.losses, result.smoothed, result.suggested_lr,
                                  result.config_lr, result.divergence_lr)
    plots.save_figure(figure, paths["png"])
    runs.write_json_atomic(paths["json"], result.to_dict())
    return paths


def default_out(config: ExperimentConfig) -> Path:
    return Path("runs") / ("lr-find-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", config.name).strip("-") or "run"))


def _log(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)
