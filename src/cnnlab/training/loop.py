"""The training loop: shuffled epochs of `TrainingStep`s on device-resident batches, schedules,
validation, early stopping, best-weights restore, a NaN/Inf guard, per-epoch history written as it grows."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from cnnlab import runs
from cnnlab.data.device_images import DeviceImages
from cnnlab.training.evaluation import evaluate_indices
from cnnlab.training.optimizers import lr_factor_function
from cnnlab.training.precision import ComputePlan
from cnnlab.training.settings import EarlyStopping, TrainingRecipe, TrainSection
from cnnlab.training.step import Augment, TrainingStep

EpochCallback = Callable[[list[dict]], None]
LrFactor = Callable[[float], float]  # training progress in epochs -> multiple of the base lr
# How often the running loss is read and checked for NaN/Inf: this many times an epoch on a CPU; on an
# accelerator only at the epoch's end, since reading a value from the device waits for the queued work.
DIVERGENCE_CHECKS_PER_EPOCH = 20


@dataclass
class TrainResult:
    """The history and how training ended ("complete" or "diverged", with the reason in words)."""

    history: list[dict] = field(default_factory=list)
    train_time_s: float = 0.0
    best_epoch: Optional[int] = None
    stop_reason: str = ""
    status: str = "complete"
    compile_time_s: float = 0.0  # torch.compile's one-time cost, not part of train_time_s

    @property
    def epochs_completed(self) -> int:
        """Epochs that ran to the end (a diverged epoch's NaN row does not count)."""
        return sum(1 for row in self.history if math.isfinite(row["train_loss"]))


def fit(model: nn.Module, data: DeviceImages, train_indices: torch.Tensor, val_indices: torch.Tensor,
        recipe: TrainingRecipe, on_epoch_end: EpochCallback | None = None, augment: Augment | None = None,
        show_progress: bool = True, plan: ComputePlan | None = None) -> TrainResult:
    """Train ``model`` in place on ``data[train_indices]``, validating on ``data[val_indices]``, as
    ``recipe`` (its train, optimizer and schedule sections) says.

    Stops early when asked, restores the best weights when asked, and stops with status "diverged"
    when the loss becomes NaN or infinite. ``plan`` says the precision, layout and compilation
    (default: float32, as built). ``on_epoch_end`` gets the history after every completed epoch."""
    settings = recipe.train
    plan = plan or ComputePlan(data.device)
    train_step = TrainingStep.from_recipe(model, recipe, plan, data, augment)
    lr_factor = lr_factor_function(recipe.schedule, recipe.optimizer.lr, settings.epochs)
    generator = torch.Generator(device=data.device).manual_seed(settings.seed)
    steps = _steps_per_epoch(len(train_indices), settings.batch_size)
    stopper = EarlyStopper(settings.early_stopping) if settings.early_stopping and len(val_indices) else None
    result = TrainResult()
    if plan.compile:
        result.compile_time_s = train_step.compile(train_indices[:settings.batch_size])
    started = time.perf_counter()

    for epoch in range(1, settings.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = train_indices[torch.randperm(len(train_indices), generator=generator, device=data.device)]
        row, diverged_at = _train_epoch(train_step, order, epoch, settings, lr_factor, show_progress)
        validated = len(val_indices) > 0 and (epoch % settings.validate_every == 0 or epoch == settings.epochs)
        if validated and diverged_at is None:
            row["val_loss"], row["val_accuracy"] = _validate(train_step, val_indices, settings.eval_batch_size)
        row["epoch_time_s"] = time.perf_counter() - epoch_started
        result.history.append(row)
        if diverged_at is not None:
            return _diverged(result, epoch, diverged_at, steps, row["lr"], started)
        if on_epoch_end is not None:
            on_epoch_end(result.history)
        runs.log_line(_epoch_line(row, settings.epochs), show_progress)
        if validated and not math.isfinite(row["val_loss"]):
            return _diverged(result, epoch, steps, steps, row["lr"], started, where="validation")
        if validated and stopper is not None and stopper.update(row, model):
            result.stop_reason = stopper.reason()
            break
    _finish(result, train_step, stopper, started)
    return result


def _train_epoch(train_step: TrainingStep, order: torch.Tensor, epoch: int, settings: TrainSection,
                 lr_factor: LrFactor, show_progress: bool) -> tuple[dict, Optional[int]]:
    """One pass over the shuffled ``order`` in batches. Returns the epoch's history row (train loss,
    accuracy and last lr; validation left NaN) and the step at which the running loss was seen to be
    NaN or infinite (None when it stayed finite; the row is then all NaN)."""
    batch_size = settings.batch_size
    steps = _steps_per_epoch(len(order), batch_size)
    device = train_step.data.device
    check_every = steps if device.type != "cpu" else max(1, steps // DIVERGENCE_CHECKS_PER_EPOCH)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, lr = 0, math.nan
    with runs.progress_bar(steps, f"epoch {epoch}/{settings.epochs}", unit="batch", enabled=show_progress) as bar:
        for step in range(steps):
            output = train_step(order[step * batch_size:(step + 1) * batch_size],
                                lr_factor(epoch - 1 + step / steps), epoch)
            lr = output.lr
            loss_sum += output.loss * output.labels.shape[0]
            correct += (output.logits.argmax(1) == output.labels).sum()
            seen += output.labels.shape[0]
            if (step + 1) % check_every == 0 or step + 1 == steps:
                running = loss_sum.item() / seen
                if not math.isfinite(running):
                    return _row(epoch, math.nan, math.nan, lr), step + 1
                if not bar.disable:  # the bar only shows what the check has already read
                    bar.set_postfix(loss=f"{running:.4f}", acc=f"{correct.item() / seen:.3f}", lr=f"{lr:.2g}")
            bar.update(1)
    return _row(epoch, loss_sum.item() / seen, correct.item() / seen, lr), None


def _row(epoch: int, train_loss: float, train_accuracy: float, lr: float) -> dict:
    """An epoch's history row before validation (validation NaN until it runs)."""
    return {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy, "val_loss": math.nan,
            "val_accuracy": math.nan, "lr": lr}


def _validate(train_step: TrainingStep, indices: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Validation loss and accuracy of the model as it trains (compiled when it is), in the plan's precision."""
    with train_step.plan.autocast():
        return evaluate_indices(train_step.forward, train_step.data, indices, batch_size)


def _finish(result: TrainResult, train_step: TrainingStep, stopper: Optional["EarlyStopper"], started: float) -> None:
    """End a run that did not diverge: the weight average into the model, the best weights restored
    when asked, the training time and the stop reason."""
    train_step.finish()
    result.train_time_s = time.perf_counter() - started
    if stopper is not None:
        result.best_epoch = stopper.best_epoch
        if stopper.restore_best and stopper.best_state is not None:
            train_step.model.load_state_dict(stopper.best_state)
            result.stop_reason += ("; " if result.stop_reason else "") + f"weights restored from epoch {stopper.best_epoch}"
    if not result.stop_reason:
        result.stop_reason = f"completed {len(result.history)} epochs"


def _steps_per_epoch(samples: int, batch_size: int) -> int:
    """Batches per epoch; a last batch of a single image is dropped, since batch norm after a dense
    layer cannot normalise one value (and one image says little about the gradient)."""
    full, remainder = divmod(samples, batch_size)
    return max(1, full + (1 if remainder > 1 else 0))


class EarlyStopper:
    """Tracks the monitored validation metric; keeps a copy of the best weights."""

    def __init__(self, settings: EarlyStopping):
        self.monitor = settings.monitor
        self.patience = settings.patience
        self.min_delta = settings.min_delta
        self.restore_best = settings.restore_best
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.waited = 0

    def update(self, row: dict, model: nn.Module) -> bool:
        """Record this epoch; return True when training should stop."""
        value = row[self.monitor]
        sign = -1 if self.monitor == "val_loss" else 1
        if self.best_value is None or sign * (value - self.best_value) > self.min_delta:
            self.best_value, self.best_epoch, self.waited = value, row["epoch"], 0
            if self.restore_best:
                self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.waited += 1
        return self.waited >= self.patience

    def reason(self) -> str:
        """Why training stopped, once `update` has returned True."""
        return (f"early stopping: {self.monitor} did not improve for {self.patience} epochs "
                f"after epoch {self.best_epoch}")


def _diverged(result: TrainResult, epoch: int, step: int, steps: int, lr: float, started: float,
              where: str = "training") -> TrainResult:
    """Mark ``result`` diverged, with a reason that says where and what to try."""
    result.train_time_s = time.perf_counter() - started
    result.status = "diverged"
    result.stop_reason = (
        f"The {where} loss became NaN or infinite in epoch {epoch}, by step {step} of {steps}, at learning rate "
        f"{lr:.3g}. The learning rate is most likely too high for this model: try optimizer.lr={lr / 10:.2g} "
        f"(ten times lower), a warm-up (schedule.warmup_epochs=1), or batch normalisation. The history up to "
        f"that point is kept in the run directory."
    )
    return result


def _epoch_line(row: dict, epochs: int) -> str:
    text = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  acc {row['train_accuracy']:.2%}")
    if math.isfinite(row["val_loss"]):
        text += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.2%}"
    return text + f"  lr {row['lr']:.3g}  {row['epoch_time_s']:.1f}s"
