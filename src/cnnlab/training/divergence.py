"""Divergence: a loss that became NaN or infinite, or one that exploded while staying finite, and the
message that says where it happened and what to try."""

from __future__ import annotations

import math
from typing import Optional

import torch

# A loss more than this many times above both the loss of chance (log of the number of classes) and
# the loss of the first batch (the initial weights, L2 penalty included) is taken for divergence.
# Why a healthy run never trips it: cross-entropy falls from about log(K) as a network learns, and a
# noisy step or an overfitting validation set moves it by a small factor (an overfit digits or CIFAR
# model reaches a validation loss of 2-10, against a limit of 2,300 for 10 classes). To reach 1,000
# times the chance loss, the logits must be thousands apart: the weights have blown up (Adam at
# lr 1e6 reaches 3.6e27) and the softmax is saturated, from where training does not come back.
EXPLOSION_FACTOR = 1000.0


class DivergenceGuard:
    """Says whether a running loss shows divergence; remembers the first batch's loss as its yardstick."""

    def __init__(self) -> None:
        self.first_loss: Optional[float] = None
        self.n_classes: Optional[int] = None
        self._first_loss_tensor: Optional[torch.Tensor] = None  # read lazily: reading waits for the device

    def observe(self, loss: torch.Tensor, n_classes: int) -> None:
        """Remember the first batch's loss (later calls do nothing)."""
        if self.first_loss is None and self._first_loss_tensor is None:
            self._first_loss_tensor, self.n_classes = loss.detach().clone(), n_classes

    def limit(self) -> float:
        """The largest loss taken for a healthy run's."""
        if self.first_loss is None and self._first_loss_tensor is not None:
            self.first_loss = float(self._first_loss_tensor.item())
        chance = math.log(max(self.n_classes or 2, 2))
        first = self.first_loss if self.first_loss is not None and math.isfinite(self.first_loss) else 0.0
        return EXPLOSION_FACTOR * max(chance, first)

    def problem(self, loss: float) -> Optional[str]:
        """None for a healthy loss; else what went wrong, in words ("became NaN or infinite", "exploded to ...")."""
        if not math.isfinite(loss):
            return "became NaN or infinite"
        if loss > self.limit():
            return (f"exploded to {loss:.3g} (over {EXPLOSION_FACTOR:.0f} times both the loss of chance, "
                    f"{math.log(max(self.n_classes or 2, 2)):.3g}, and that of the first batch, {self.first_loss:.3g})")
        return None

    def state_dict(self) -> dict:
        """The yardstick, for a training checkpoint."""
        self.limit()  # reads the first loss off the device
        return {"first_loss": self.first_loss, "n_classes": self.n_classes}

    def load_state_dict(self, state: dict) -> None:
        self.first_loss, self.n_classes = state["first_loss"], state["n_classes"]


def divergence_reason(problem: str, epoch: int, step: int, steps: int, lr: float, where: str = "training") -> str:
    """The message of a diverged run: what happened, where, and what to try."""
    return (f"The {where} loss {problem} in epoch {epoch}, by step {step} of {steps}, at learning rate "
            f"{lr:.3g}. The learning rate is most likely too high for this model: try optimizer.lr={lr / 10:.2g} "
            f"(ten times lower), a warm-up (schedule.warmup_epochs=1), or batch normalisation. The history up to "
            f"that point is kept in the run directory.")
