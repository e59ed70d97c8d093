"""Kill points for docs/reliability.md: a digits run (augmentation, weight averaging, early stopping and a
cosine schedule on) is stopped at each kill point, its latest checkpoint damaged where the kill point says a
SIGKILL or a full disk hit in the middle of writing it, then resumed; the resumed run is compared with an
uninterrupted run of the same seed, bit for bit (weights, predictions, history without its time column)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cnnlab import runs
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError, TrainingInterrupted
from cnnlab.experiment import resume_experiment, run_experiment
from cnnlab.training.interrupt import StopRequest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.yaml"
OVERRIDES = ["train.epochs=3", "train.ema_decay=0.9", "schedule.name=cosine", "train.seed=7",
             "train.early_stopping={monitor: val_loss, patience: 3, restore_best: true}",
             "augment={horizontal_flip: true, width_shift_range: 0.1}"]
STEPS_PER_EPOCH = 41  # digits: 1,293 training images after the 10% validation split, batches of 32


@dataclass(frozen=True)
class KillPoint:
    name: str
    stops: tuple[int, ...]  # training steps before each stop; a resume between two stops
    damage: str = ""  # what happens to the latest checkpoint after the last stop: "", garbage, truncated, empty


KILL_POINTS = [
    KillPoint("first step", (1,)),
    KillPoint("mid-epoch", (STEPS_PER_EPOCH + 17,)),
    KillPoint("epoch boundary", (STEPS_PER_EPOCH,)),
    KillPoint("last step", (3 * STEPS_PER_EPOCH - 1,)),
    KillPoint("three stops", (5, STEPS_PER_EPOCH - 5, 30)),
    KillPoint("mid-epoch, latest checkpoint garbage", (STEPS_PER_EPOCH + 17,), "garbage"),
    KillPoint("mid-epoch, latest checkpoint truncated", (STEPS_PER_EPOCH + 17,), "truncated"),
    KillPoint("mid-epoch, latest checkpoint empty", (STEPS_PER_EPOCH + 17,), "empty"),
]


def _config():
    return load_config(str(EXAMPLE), OVERRIDES)


def _damage(run_dir: Path, damage: str) -> None:
    latest = run_dir / runs.CHECKPOINT_FILE
    content = latest.read_bytes()
    latest.write_bytes({"garbage": os.urandom(len(content)), "truncated": content[:len(content) // 2],
                        "empty": b""}[damage])


def _fingerprint(run_dir: Path) -> tuple:
    """What must be identical: weights, predictions and the history without its time column."""
    predictions = runs.load_npz(run_dir / runs.PREDICTIONS_FILE)
    history = [{key: value for key, value in row.items() if key != "epoch_time_s"}
               for row in runs.read_history(run_dir)]
    return ((run_dir / runs.WEIGHTS_FILE).read_bytes(),
            tuple((key, predictions[key].tobytes()) for key in sorted(predictions)), json.dumps(history))


def _interrupt_and_resume(run_dir: Path, kill_point: KillPoint) -> bool:
    """Stop at the kill point, damage what it damages, resume; False when no checkpoint could be used."""
    for index, steps in enumerate(kill_point.stops):
        try:
            if index == 0:
                run_experiment(_config(), out=run_dir, show_progress=False, stop=StopRequest(steps))
            else:
                resume_experiment(run_dir, show_progress=False, stop=StopRequest(steps))
        except TrainingInterrupted:
            continue
    if kill_point.damage:
        _damage(run_dir, kill_point.damage)
    try:
        resume_experiment(run_dir, show_progress=False)
    except CnnlabError:
        return False
    return True


def checkpoint_figures(root: Path) -> dict[str, int]:
    """Kill points tried, resumed runs identical to the uninterrupted one, checkpoints lost (kill points after
    which no written checkpoint could be used)."""
    straight = _fingerprint(run_experiment(_config(), out=root / "straight", show_progress=False))
    identical = lost = 0
    for index, kill_point in enumerate(KILL_POINTS):
        run_dir = root / f"kill-{index}"
        if not _interrupt_and_resume(run_dir, kill_point):
            lost += 1
        elif _fingerprint(run_dir) == straight:
            identical += 1
    return {"kill points tried": len(KILL_POINTS), "resumed runs identical to the uninterrupted run": identical,
            "checkpoints lost": lost}


def checkpoint_table(figures: dict[str, int]) -> str:
    lines = ["| | digits, augmentation, weight averaging, early stopping, cosine schedule |", "|---|---:|"]
    return "\n".join(lines + [f"| {label} | {value} |" for label, value in figures.items()])
