"""The training loop: shuffled epochs of `TrainingStep`s on device-resident batches, schedules,
validation of the weights that will be saved, early stopping, best-weights restore, a divergence guard,
checkpoints (after every epoch and every `train.checkpoint_every_s` seconds), a clean stop on request
(SIGINT/SIGTERM) and an exact resume from a checkpoint."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from cnnlab import runs
from cnnlab.data.device_images import DeviceImages
from cnnlab.training.callbacks import Callback, TrainResult, check_callbacks, notify
from cnnlab.training.checkpoint import Checkpointer
from cnnlab.training.distributed import Distributed
from cnnlab.training.divergence import divergence_reason
from cnnlab.training.early_stopping import EarlyStopper
from cnnlab.training.evaluation import evaluate_indices
from cnnlab.training.interrupt import StopRequest
from cnnlab.training.optimizers import lr_factor_function
from cnnlab.training.precision import ComputePlan
from cnnlab.training.session import EpochProgress, TrainingSession
from cnnlab.training.settings import TrainingRecipe, TrainSection
from cnnlab.training.step import Augment, TrainingStep

__all__ = ["EarlyStopper", "TrainResult", "fit"]

LrFactor = Callable[[float], float]  # training progress in epochs -> multiple of the base lr


@dataclass
class _Run:
    """One call of `fit`: the session's state and what stays fixed while it trains."""

    session: TrainingSession
    settings: TrainSection
    lr_factor: LrFactor
    steps: int  # per epoch
    val_indices: torch.Tensor
    checkpoints: Optional[Checkpointer]
    stop: StopRequest
    show_progress: bool
    callbacks: list[Any]  # objects with on_epoch_end(row) and/or on_run_end(result) (training/callbacks.py)
    distributed: Optional[Distributed] = None  # this process's place in a torchrun job (None: one process)
    agreed_stop: bool = False  # torchrun: whether any process was asked to stop, as of the last epoch's end
    started: float = field(default_factory=time.perf_counter)
    epoch_started: float = field(default_factory=time.perf_counter)

    def train_time_s(self) -> float:
        return self.session.earlier_time_s + time.perf_counter() - self.started

    def epoch_time_s(self) -> float:
        progress = self.session.progress
        return (progress.earlier_time_s if progress else 0.0) + time.perf_counter() - self.epoch_started

    def stop_requested(self) -> bool:
        """Whether to stop after this epoch: the stop request, or under torchrun what the processes agreed
        at the epoch's end (a signal arriving later in one process counts at the next epoch's end)."""
        return self.stop.requested if self.distributed is None else self.agreed_stop

    def share(self, indices: torch.Tensor) -> tuple[torch.Tensor, float]:
        """What this process trains on of a global batch, and the weight of its loss (all of it, 1.0, alone)."""
        return (indices, 1.0) if self.distributed is None else self.distributed.share(indices)

    def save_checkpoint(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save(self.session.state_dict(self.train_time_s(), self.epoch_time_s()))


def fit(model: nn.Module, data: DeviceImages, train_indices: torch.Tensor, val_indices: torch.Tensor,
        recipe: TrainingRecipe, callbacks: Sequence[Callback] = (), augment: Augment | None = None,
        show_progress: bool = True, plan: ComputePlan | None = None, checkpoints: Checkpointer | None = None,
        resume_from: dict | None = None, stop: StopRequest | None = None,
        distributed: Distributed | None = None) -> TrainResult:
    """Train ``model`` in place on ``data[train_indices]``, validating on ``data[val_indices]``, as
    ``recipe`` (its train, optimizer and schedule sections) says.

    Validation evaluates the weights that will be saved (the weight average when `train.ema_decay` is
    set); early stopping restores the best of them when asked. Stops with status "diverged" when the
    loss becomes NaN, infinite or explodes (see `DivergenceGuard`). ``plan`` says the precision, layout
    and compilation (default: float32, as built). ``callbacks`` (see `cnnlab.training.callbacks`) get every
    completed epoch's history row and, once training ends however it ends, the result. With
    ``checkpoints``, a checkpoint is written after every epoch and whenever one is due within an epoch; when ``stop`` is requested (SIGINT/SIGTERM) one is written at the next step
    boundary and the result has status "interrupted". ``resume_from`` (a checkpoint's state) continues
    that run exactly: on a CPU, the weights, history and predictions are bit for bit those of a run
    that was never interrupted. ``distributed`` (under torchrun) trains this process's part of every
    batch beside the other processes (see `cnnlab.training.distributed`): checkpoints and stops then come
    at epoch ends only, where every process agrees on them."""
    settings, callbacks = recipe.train, check_callbacks(callbacks)
    plan = plan or ComputePlan(data.device)
    train_step = TrainingStep.from_recipe(model, recipe, plan, data, augment)
    stopper = EarlyStopper(settings.early_stopping) if settings.early_stopping and len(val_indices) else None
    generator = torch.Generator(device=data.device).manual_seed(settings.seed)
    session = TrainingSession(train_step, generator, stopper, augment)
    result = TrainResult()
    if plan.compile:  # before the resume: compiling runs a batch, which draws dropout masks
        result.compile_time_s = train_step.compile(train_indices[:settings.batch_size])
    if resume_from is not None:
        session.load_state_dict(resume_from)
    if distributed is not None:
        distributed.start(train_step, session, settings.seed)
    processes = distributed.world_size if distributed is not None else 1
    run = _Run(session, settings, lr_factor_function(recipe.schedule, recipe.optimizer.lr, settings.epochs),
               _steps_per_epoch(len(train_indices), settings.batch_size, processes), val_indices, checkpoints,
               stop or StopRequest(), show_progress, callbacks, distributed)
    while not session.stop_reason and session.epochs_done < settings.epochs:
        if session.progress is None:
            order = torch.randperm(len(train_indices), generator=generator, device=data.device)
            session.progress = EpochProgress.start(session.epochs_done + 1, train_indices[order])
        run.epoch_started = time.perf_counter()
        outcome = _train_epoch(run) or _end_epoch(run)
        if outcome is not None:
            return _stopped(run, result, *outcome)
        if run.stop_requested() and not session.stop_reason and session.epochs_done < settings.epochs:
            return _stopped(run, result, "interrupted", "")  # (a stop after the last epoch lets the run finish)
    _finish(run, result)
    notify(run.callbacks, "on_run_end", result)
    return result


def _train_epoch(run: _Run) -> Optional[tuple[str, str]]:
    """The steps of the epoch under way, from where it stands. Returns None when the epoch's steps are
    done, or ("diverged", reason) / ("interrupted", "") after a stop request (a checkpoint written)."""
    session, settings, steps = run.session, run.settings, run.steps
    progress, train_step = session.progress, session.train_step
    batch_size, epoch = settings.batch_size, progress.epoch
    # On a CPU the running loss is read after every step, so a NaN is caught at the step it appears (it costs
    # about nothing there); on an accelerator only at the epoch's end, as a read waits for the queued work.
    # Under torchrun the processes check together at the epoch's end (a check is a decision all must share).
    check_every = 1 if train_step.data.device.type == "cpu" and run.distributed is None else steps
    train_step.model.train()
    with runs.progress_bar(steps, f"epoch {epoch}/{settings.epochs}", unit="batch",
                           enabled=run.show_progress) as bar:
        bar.update(progress.step)
        for step in range(progress.step, steps):
            indices, loss_weight = run.share(progress.order[step * batch_size:(step + 1) * batch_size])
            output = train_step(indices, run.lr_factor(epoch - 1 + step / steps), epoch, loss_weight)
            session.guard.observe(output.loss, output.logits.shape[1])
            progress.add(output)
            bar.update(1)
            stopping = run.stop.count_step() and run.distributed is None  # (torchrun: at the epoch's end)
            if step + 1 == steps:
                break  # the epoch's end checks, checkpoints and stops
            checkpoint_due = stopping or (run.checkpoints is not None and run.distributed is None
                                          and run.checkpoints.due())
            if (step + 1) % check_every == 0 or checkpoint_due:
                problem = session.guard.problem(progress.running_loss())
                if problem is not None:
                    return _diverged_in_epoch(run, problem)
                if not bar.disable:  # the bar only shows what the check has already read; it redraws at most
                    # every half second on its own (a redraw per step cost 20 us, 0.5% of a 4 ms step)
                    bar.set_postfix(loss=f"{progress.running_loss():.4f}", acc=f"{progress.running_accuracy():.3f}",
                                    lr=f"{progress.lr:.2g}", refresh=False)
            if checkpoint_due:
                run.save_checkpoint()
            if stopping:
                return "interrupted", ""
    if run.distributed is not None:
        run.agreed_stop = run.distributed.reduce_epoch(progress, run.stop, session.guard)
    problem = session.guard.problem(progress.running_loss())
    return _diverged_in_epoch(run, problem) if problem is not None else None


def _diverged_in_epoch(run: _Run, problem: str) -> tuple[str, str]:
    """Record the epoch under way as a NaN row; the reason says where the loss went wrong."""
    progress = run.session.progress
    row = _row(progress.epoch, math.nan, math.nan, progress.lr)
    row["epoch_time_s"] = run.epoch_time_s()
    run.session.history.append(row)
    return "diverged", divergence_reason(problem, progress.epoch, progress.step, run.steps, progress.lr)


def _end_epoch(run: _Run) -> Optional[tuple[str, str]]:
    """Validate (the weights that will be saved), record the row, early stopping, the epoch's checkpoint.
    Returns ("diverged", reason) when the validation loss diverged, else None."""
    session, settings = run.session, run.settings
    progress, train_step = session.progress, session.train_step
    epoch = progress.epoch
    row = _row(epoch, progress.running_loss(), progress.running_accuracy(), progress.lr)
    validated = len(run.val_indices) > 0 and (epoch % settings.validate_every == 0 or epoch == settings.epochs)
    if validated:
        network = train_step.forward if run.distributed is None else train_step.model  # (not DDP's wrapper)
        with train_step.evaluating(), train_step.plan.autocast():
            row["val_loss"], row["val_accuracy"] = evaluate_indices(network, train_step.data, run.val_indices,
                                                                    settings.eval_batch_size, run.distributed)
    row["epoch_time_s"] = run.epoch_time_s()
    session.history.append(row)
    session.progress, session.epochs_done = None, epoch
    notify(run.callbacks, "on_epoch_end", row)
    runs.log_line(_epoch_line(row, settings.epochs), run.show_progress)
    problem = session.guard.problem(row["val_loss"]) if validated else None
    if problem is not None:
        return "diverged", divergence_reason(problem, epoch, run.steps, run.steps, row["lr"], where="validation")
    if validated and session.stopper is not None and session.stopper.update(row, train_step.evaluated_state):
        session.stop_reason = session.stopper.reason()
    run.save_checkpoint()
    return None


def _row(epoch: int, train_loss: float, train_accuracy: float, lr: float) -> dict:
    """An epoch's history row before validation (validation NaN until it runs)."""
    return {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy, "val_loss": math.nan,
            "val_accuracy": math.nan, "lr": lr}


def _stopped(run: _Run, result: TrainResult, status: str, reason: str) -> TrainResult:
    """The result of a run that diverged or was interrupted (its checkpoint already written)."""
    session = run.session
    result.history, result.status, result.train_time_s = session.history, status, run.train_time_s()
    if status == "interrupted":
        progress = session.progress
        where = (f"in epoch {progress.epoch} after step {progress.step} of {run.steps}" if progress is not None
                 else f"after epoch {session.epochs_done}")
        reason = f"interrupted by {run.stop.signal_name()} {where}"
    result.stop_reason = reason
    _count_checkpoints(run, result)
    notify(run.callbacks, "on_run_end", result)
    return result


def _finish(run: _Run, result: TrainResult) -> None:
    """End a run that did not diverge: the weight average into the model, the best weights restored
    when asked, the training time and the stop reason."""
    session = run.session
    session.train_step.finish()
    result.history, result.train_time_s, result.stop_reason = session.history, run.train_time_s(), session.stop_reason
    stopper = session.stopper
    if stopper is not None:
        result.best_epoch = stopper.best_epoch
        if stopper.restore_best and stopper.best_state is not None:
            session.train_step.model.load_state_dict(stopper.best_state)
            result.stop_reason += ("; " if result.stop_reason else "") + f"weights restored from epoch {stopper.best_epoch}"
    if not result.stop_reason:
        result.stop_reason = f"completed {len(result.history)} epoch{'' if len(result.history) == 1 else 's'}"
    _count_checkpoints(run, result)


def _count_checkpoints(run: _Run, result: TrainResult) -> None:
    if run.checkpoints is not None:
        result.checkpoints_written, result.checkpoint_time_s = run.checkpoints.written, run.checkpoints.seconds_spent


def _steps_per_epoch(samples: int, batch_size: int, processes: int = 1) -> int:
    """Batches per epoch; a last batch of a single image is dropped, since batch norm after a dense
    layer cannot normalise one value (and one image says little about the gradient). Under torchrun, the
    last batch is kept when each of the ``processes`` gets two images of it or more."""
    full, remainder = divmod(samples, batch_size)
    return max(1, full + (1 if remainder >= 2 * processes else 0))


def _epoch_line(row: dict, epochs: int) -> str:
    text = (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  acc {row['train_accuracy']:.2%}")
    if math.isfinite(row["val_loss"]):
        text += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.2%}"
    return text + f"  lr {row['lr']:.3g}  {row['epoch_time_s']:.1f}s"
