"""What changes while a run trains, in one place, so a checkpoint can save it and a resumed run put it
back: the model, optimiser, grad scaler and weight average (through the `TrainingStep`), early stopping,
the divergence yardstick, the history, every random generator and, within an epoch, its shuffled order
and running sums."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from cnnlab.training.checkpoint import random_states, restore_random_states
from cnnlab.training.divergence import DivergenceGuard
from cnnlab.training.early_stopping import EarlyStopper
from cnnlab.training.step import StepOutput, TrainingStep


@dataclass
class EpochProgress:
    """An epoch under way: its shuffled order, the steps done and the running sums of its history row."""

    epoch: int
    order: torch.Tensor
    loss_sum: torch.Tensor
    correct: torch.Tensor
    step: int = 0  # steps done
    seen: int = 0
    lr: float = math.nan
    earlier_time_s: float = 0.0  # time spent on this epoch before a resume

    @classmethod
    def start(cls, epoch: int, order: torch.Tensor) -> "EpochProgress":
        device = order.device
        return cls(epoch, order, torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long))

    def add(self, output: StepOutput) -> None:
        """Count one step's batch in the running sums."""
        self.lr = output.lr
        self.loss_sum += output.loss * output.labels.shape[0]
        self.correct += (output.logits.argmax(1) == output.labels).sum()
        self.seen += output.labels.shape[0]
        self.step += 1

    def running_loss(self) -> float:
        return self.loss_sum.item() / self.seen

    def running_accuracy(self) -> float:
        return self.correct.item() / self.seen

    def state_dict(self, time_s: float) -> dict:
        return {"epoch": self.epoch, "order": self.order, "loss_sum": self.loss_sum, "correct": self.correct,
                "step": self.step, "seen": self.seen, "lr": self.lr, "time_s": time_s}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "EpochProgress":
        return cls(state["epoch"], state["order"].to(device), state["loss_sum"].to(device),
                   state["correct"].to(device), state["step"], state["seen"], state["lr"], state["time_s"])


@dataclass
class TrainingSession:
    """A run's training state; `state_dict` is what a checkpoint holds besides the config."""

    train_step: TrainingStep
    order_generator: torch.Generator  # shuffles every epoch's order
    stopper: Optional[EarlyStopper]
    augment: object = None  # the augmenter, when it keeps random state (`state_dict`)
    guard: DivergenceGuard = field(default_factory=DivergenceGuard)
    history: list[dict] = field(default_factory=list)
    epochs_done: int = 0
    progress: Optional[EpochProgress] = None
    stop_reason: str = ""  # set when early stopping ended the training
    earlier_time_s: float = 0.0  # training time before this session (a resumed run)

    def state_dict(self, train_time_s: float, epoch_time_s: float = 0.0) -> dict:
        """Everything needed to continue bit for bit, as tensors, numbers, strings, lists and dicts."""
        step = self.train_step
        return {
            "model": step.model.state_dict(), "optimizer": step.optimizer.state_dict(),
            "scaler": step.scaler.state_dict(),
            "average": step.average.state_dict() if step.average is not None else None,
            "stopper": self.stopper.state_dict() if self.stopper is not None else None,
            "guard": self.guard.state_dict(), "history": [dict(row) for row in self.history],
            "epochs_done": self.epochs_done, "stop_reason": self.stop_reason, "train_time_s": train_time_s,
            "progress": self.progress.state_dict(epoch_time_s) if self.progress is not None else None,
            "augment": self.augment.state_dict() if hasattr(self.augment, "state_dict") else None,
            "random": random_states({"order": self.order_generator}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict` of the same run (same model, optimiser and settings)."""
        step = self.train_step
        step.model.load_state_dict(state["model"])
        step.optimizer.load_state_dict(state["optimizer"])
        step.scaler.load_state_dict(state["scaler"])
        if step.average is not None:
            step.average.load_state_dict(state["average"])
        if self.stopper is not None and state["stopper"] is not None:
            self.stopper.load_state_dict(state["stopper"])
        if state["augment"] is not None and hasattr(self.augment, "load_state_dict"):
            self.augment.load_state_dict(state["augment"])
        self.guard.load_state_dict(state["guard"])
        self.history = [dict(row) for row in state["history"]]
        self.epochs_done, self.stop_reason = state["epochs_done"], state["stop_reason"]
        self.earlier_time_s = state["train_time_s"]
        device = step.data.device
        self.progress = EpochProgress.from_state(state["progress"], device) if state["progress"] else None
        restore_random_states(state["random"], {"order": self.order_generator})
