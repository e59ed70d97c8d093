"""Early stopping: watch a validation metric, keep a copy of the best evaluated weights."""

from __future__ import annotations

from typing import Callable, Optional

from cnnlab.training.settings import EarlyStopping


class EarlyStopper:
    """Tracks the monitored validation metric; keeps a copy of the weights that scored best."""

    def __init__(self, settings: EarlyStopping):
        self.monitor = settings.monitor
        self.patience = settings.patience
        self.min_delta = settings.min_delta
        self.restore_best = settings.restore_best
        self.best_value: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.best_state: Optional[dict] = None
        self.waited = 0

    def update(self, row: dict, evaluated_state: Callable[[], dict]) -> bool:
        """Record this epoch's validated ``row``; return True when training should stop. ``evaluated_state``
        gives a copy of the weights the validation evaluated, kept when they score best."""
        value = row[self.monitor]
        sign = -1 if self.monitor == "val_loss" else 1
        if self.best_value is None or sign * (value - self.best_value) > self.min_delta:
            self.best_value, self.best_epoch, self.waited = value, row["epoch"], 0
            if self.restore_best:
                self.best_state = evaluated_state()
            return False
        self.waited += 1
        return self.waited >= self.patience

    def reason(self) -> str:
        """Why training stopped, once `update` has returned True."""
        return (f"early stopping: {self.monitor} did not improve for {self.patience} epochs "
                f"after epoch {self.best_epoch}")

    def state_dict(self) -> dict:
        """The best value, its epoch and weights, and the epochs waited since (for a training checkpoint)."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "waited": self.waited,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.waited, self.best_state = state["waited"], state["best_state"]
