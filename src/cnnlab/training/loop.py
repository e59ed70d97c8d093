"""The training loop: index-gather batches on the device, schedules, early stopping,
best-weights restore, a NaN/Inf guard, per-epoch history written as it grows."""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from tqdm import tqdm

from cnnlab.training.weight_average import WeightAverage
from cnnlab.data.device_images import DeviceImages
from cnnlab.config import ExperimentConfig
from cnnlab.training.precision import FastPath
from cnnlab.training.optimizers import apply_lr, kernel_weights, l2_penalty, lr_factor_function, make_optimizer

EpochCallback = Callable[[list[dict]], None]
Augment = Callable[..., torch.Tensor]  # augment(images, positions=..., epoch=...)


@dataclass
class TrainResult:
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
        config: ExperimentConfig, on_epoch_end: EpochCallback | None = None,
        augment: Augment | None = None, show_progress: bool = True, fast: FastPath | None = None) -> TrainResult:
    """Train ``model`` in place on ``data[train_indices]``, validating on ``data[val_indices]``.

    Stops early when asked, restores the best weights when asked, and stops with
    status "diverged" when the loss becomes NaN or infinite. ``fast`` says the precision, layout
    and compilation (default: float32, as built)."""
    settings = config.train
    fast = fast or FastPath(data.device)
    optimizer = make_optimizer(model, config.optimizer)
    scaler = fast.grad_scaler()
    average = WeightAverage(model, settings.ema_decay) if settings.ema_decay else None
    lr_factor = lr_factor_function(config.schedule, config.optimizer.lr, settings.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    kernels = kernel_weights(model, config.optimizer.l2_layers) if config.optimizer.l2 > 0 else []
    generator = torch.Generator(device=data.device).manual_seed(settings.seed)
    steps_per_epoch = _steps_per_epoch(len(train_indices), settings.batch_size)
    stopper = EarlyStopper(settings.early_stopping) if settings.early_stopping and len(val_indices) else None
    result = TrainResult()
    step_model = model
    if fast.compile:
        step_model, result.compile_time_s = compile_model(model, data, train_indices[:settings.batch_size], fast)
    # Reading a value from the device waits for the queued work: on a GPU, only once per epoch.
    sync_on_device = data.device.type != "cpu"
    started = time.perf_counter()

    for epoch in range(1, settings.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = train_indices[torch.randperm(len(train_indices), generator=generator, device=data.device)]
        loss_sum = torch.zeros((), device=data.device)
        correct = torch.zeros((), device=data.device, dtype=torch.long)
        seen = 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{settings.epochs}", leave=False,
                   disable=not show_progress or not sys.stderr.isatty(), unit="batch")
        report_every = steps_per_epoch if sync_on_device else max(1, steps_per_epoch // 20)
        for step in range(steps_per_epoch):
            lr = apply_lr(optimizer, lr_factor(epoch - 1 + step / steps_per_epoch))
            positions = order[step * settings.batch_size:(step + 1) * settings.batch_size]
            images, labels = data.batch(positions)
            if augment is not None:
                images = augment(images, positions=positions, epoch=epoch)
            with fast.autocast():
                logits = step_model(images)
                loss = criterion(logits.float(), labels) + l2_penalty(kernels, config.optimizer.l2)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if average is not None:
                average.update()
            loss_sum += loss.detach() * labels.shape[0]
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
            if sync_on_device and step + 1 < steps_per_epoch:
                bar.update(1)
            elif (step + 1) % report_every == 0 or step + 1 == steps_per_epoch:
                running = loss_sum.item() / seen
                if not math.isfinite(running):
                    _nan_row(result, epoch, lr, epoch_started)
                    return _diverged(result, epoch, step + 1, steps_per_epoch, lr, started, bar)
                bar.set_postfix(loss=f"{running:.4f}", acc=f"{correct.item() / seen:.3f}", lr=f"{lr:.2g}")
                bar.update(step + 1 - bar.n)
        bar.close()
        row = {"epoch": epoch, "train_loss": loss_sum.item() / seen, "train_accuracy": correct.item() / seen,
               "val_loss": float("nan"), "val_accuracy": float("nan"), "lr": lr}
        validated = len(val_indices) > 0 and (epoch % settings.validate_every == 0 or epoch == settings.epochs)
        if validated:
            with fast.autocast():
                row["val_loss"], row["val_accuracy"] = evaluate_indices(step_model, data, val_indices,
                                                                        settings.eval_batch_size)
        row["epoch_time_s"] = time.perf_counter() - epoch_started
        result.history.append(row)
        if on_epoch_end is not None:
            on_epoch_end(result.history)
        if show_progress:
            print(_epoch_line(row, settings.epochs), file=sys.stderr, flush=True)
        if validated and not math.isfinite(row["val_loss"]):
            return _diverged(result, epoch, steps_per_epoch, steps_per_epoch, lr, started, None, where="validation")
        if validated and stopper is not None and stopper.update(row, model):
            result.stop_reason = (f"early stopping: {stopper.monitor} did not improve for {stopper.patience} epochs "
                                  f"after epoch {stopper.best_epoch}")
            break

    if average is not None:
        average.copy_to_model()
    result.train_time_s = time.perf_counter() - started
    if stopper is not None:
        result.best_epoch = stopper.best_epoch
        if stopper.restore_best and stopper.best_state is not None:
            model.load_state_dict(stopper.best_state)
            result.stop_reason += ("; " if result.stop_reason else "") + f"weights restored from epoch {stopper.best_epoch}"
    if not result.stop_reason:
        result.stop_reason = f"completed {len(result.history)} epochs"
    return result


@torch.no_grad()
def evaluate_indices(model: nn.Module, data: DeviceImages, indices: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data[indices]`` (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=data.device, dtype=torch.float64)
    correct = torch.zeros((), device=data.device, dtype=torch.long)
    for start in range(0, len(indices), batch_size):
        images, labels = data.batch(indices[start:start + batch_size])
        logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits.float(), labels, reduction="sum").double()
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    return loss_sum.item() / len(indices), correct.item() / len(indices)


def compile_model(model: nn.Module, data: DeviceImages, positions: torch.Tensor,
                  fast: FastPath) -> tuple[nn.Module, float]:
    """torch.compile ``model`` and pay its one-time cost now, on one batch (training and evaluation
    graphs), leaving weights, statistics and gradients as they were. Returns (compiled, seconds)."""
    started = time.perf_counter()
    compiled = torch.compile(model)
    state = copy.deepcopy(model.state_dict())
    images, labels = data.batch(positions)
    with fast.autocast():
        nn.functional.cross_entropy(compiled(images).float(), labels).backward()
        model.eval()
        with torch.no_grad():
            compiled(images)
        model.train()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    if data.device.type == "cuda":
        torch.cuda.synchronize(data.device)
    return compiled, time.perf_counter() - started


def _steps_per_epoch(samples: int, batch_size: int) -> int:
    """Batches per epoch; a last batch of a single image is dropped, since batch norm after a dense
    layer cannot normalise one value (and one image says little about the gradient)."""
    full, remainder = divmod(samples, batch_size)
    return max(1, full + (1 if remainder > 1 else 0))


def _nan_row(result: TrainResult, epoch: int, lr: float, epoch_started: float) -> None:
    """Record the diverged epoch as a NaN row, so the history (and its reading) shows where it happened."""
    nan = float("nan")
    result.history.append({"epoch": epoch, "train_loss": nan, "train_accuracy": nan, "val_loss": nan,
                           "val_accuracy": nan, "lr": lr, "epoch_time_s": time.perf_counter() - epoch_started})


class EarlyStopper:
    """Tracks the monitored validation metric; keeps a copy of the best weights."""

    def __init__(self, settings):
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


def _diverged(result: TrainResult, epoch: int, step: int, steps: int, lr: float, started: float, bar,
              where: str = "training") -> TrainResult:
    if bar is not None:
        bar.close()
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
