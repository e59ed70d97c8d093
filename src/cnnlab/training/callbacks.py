"""What training tells the code around it: `TrainResult` (the history and how training ended) and the two
hooks a `Callback` may have, ``on_epoch_end(row)`` with each epoch's history row and ``on_run_end(result)``
when training ends. `HistoryWriter`, the callback every run has, writes history.csv through them.

A callback is any object with one or both hooks (subclass `Callback` to write only the one you need).
`fit` calls the hooks in the order the callbacks were given, after the epoch's row is recorded and before
its checkpoint is written; a hook that raises ends the training with that exception (with a note naming
the hook), and the run's folder keeps its latest checkpoint, so the run can be resumed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from cnnlab import runs

__all__ = ["Callback", "HistoryWriter", "TrainResult", "check_callbacks", "notify"]

HOOKS = ("on_epoch_end", "on_run_end")


@dataclass
class TrainResult:
    """The history and how training ended: "complete", "diverged" or "interrupted" (the reason in words)."""

    history: list[dict] = field(default_factory=list)
    train_time_s: float = 0.0
    best_epoch: Optional[int] = None
    stop_reason: str = ""
    status: str = "complete"
    compile_time_s: float = 0.0  # torch.compile's one-time cost, not part of train_time_s
    checkpoints_written: int = 0
    checkpoint_time_s: float = 0.0  # time spent writing them (part of train_time_s)

    @property
    def epochs_completed(self) -> int:
        """Epochs that ran to the end (a diverged epoch's NaN row does not count)."""
        return sum(1 for row in self.history if math.isfinite(row["train_loss"]))


class Callback:
    """The hooks training calls; override the ones you need (both do nothing here).

    ``on_epoch_end(row)`` gets a copy of the epoch's history row: ``epoch`` (from 1), ``train_loss``,
    ``train_accuracy`` (0..1), ``val_loss``, ``val_accuracy`` (NaN in epochs without validation), ``lr`` and
    ``epoch_time_s`` — the columns of history.csv. ``on_run_end(result)`` gets the `TrainResult` once training
    ends, whether it completed, diverged or was interrupted (``result.status``); the test-set evaluation
    comes after it."""

    def on_epoch_end(self, row: dict[str, float]) -> None:
        """Called after every completed epoch with its history row."""

    def on_run_end(self, result: TrainResult) -> None:
        """Called once when training ends, with how it ended."""


class HistoryWriter(Callback):
    """Writes history.csv (atomically) after every epoch, and once more when training ends (a diverged
    epoch's NaN row is recorded then). ``earlier`` holds the rows of a resumed run's earlier epochs."""

    def __init__(self, path: Path, earlier: Iterable[dict] = ()):
        self.path = Path(path)
        self.rows = [dict(row) for row in earlier]

    def on_epoch_end(self, row: dict[str, float]) -> None:
        self.rows.append(dict(row))
        self.write(self.rows)

    def on_run_end(self, result: TrainResult) -> None:
        self.rows = [dict(row) for row in result.history]
        self.write(self.rows)

    def write(self, rows: list[dict]) -> None:
        runs.write_csv_atomic(self.path, rows, runs.HISTORY_COLUMNS)


def check_callbacks(callbacks: Sequence[Any]) -> list[Any]:
    """``callbacks`` as a list, each checked to have a hook (TypeError otherwise: a misspelt hook would
    otherwise never be called)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or any(hasattr(callbacks, hook) for hook in HOOKS):
        callbacks = [callbacks]  # one callback given on its own
    checked = list(callbacks)
    for callback in checked:
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise TypeError(f"{callback!r} is not a callback: give objects with an on_epoch_end(row) and/or "
                            "on_run_end(result) method (see cnnlab.training.callbacks.Callback).")
    return checked


def notify(callbacks: Sequence[Any], hook: str, value: Any) -> None:
    """Call ``hook`` of every callback that has it with ``value`` (a row is copied for each, so no callback
    sees another's changes). An exception propagates with a note naming the callback and hook."""
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is None:
            continue
        try:
            method(dict(value) if isinstance(value, dict) else value)
        except Exception as error:
            if hasattr(error, "add_note"):  # Python 3.11+
                epoch = f" (epoch {value['epoch']})" if isinstance(value, dict) and "epoch" in value else ""
                error.add_note(f"raised by the callback {type(callback).__name__}.{hook}{epoch}; training stopped "
                               "there, and the run's folder keeps its latest checkpoint.")
            raise
