"""Checkpoints and resume: a run stopped anywhere (mid-epoch, at an epoch's end, several times) and
resumed gives the weights, history and predictions of the run that was never stopped, bit for bit on
a CPU; a damaged latest checkpoint falls back to the previous one; SIGINT/SIGTERM stop cleanly."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab import runs
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.errors import ConfigError, TrainingInterrupted
from cnnlab.experiment import resume_experiment, run_experiment
from cnnlab.training.checkpoint import Checkpointer, has_checkpoint, load_checkpoint
from cnnlab.training.interrupt import StopRequest, stop_on_signals

REPO = Path(__file__).resolve().parents[2]
# augmentation, weight averaging, early stopping and a cosine schedule all on: every piece of state counts
OVERRIDES = ["train.epochs=4", "train.ema_decay=0.9", "schedule.name=cosine", "train.seed=5",
             "train.early_stopping={monitor: val_loss, patience: 3, restore_best: true}",
             "augment={horizontal_flip: true, rotation_range: 10, width_shift_range: 0.1, cutout: {size: 2}}"]
STEPS_PER_EPOCH = 41  # digits: 1,293 training images after the 10% validation split, batches of 32


def digits_config(extra=()):
    return load_config(str(REPO / "examples/digits.yaml"), [*OVERRIDES, *extra])


def interrupted_run(out: Path, *stops: int, extra=()) -> list[TrainingInterrupted]:
    """Start a run and stop it after ``stops[0]`` steps, resume and stop after ``stops[1]`` more steps, ...;
    leaves it interrupted. Returns the interruptions."""
    caught = []
    for index, steps in enumerate(stops):
        with pytest.raises(TrainingInterrupted) as error:
            if index == 0:
                run_experiment(digits_config(extra), out=out, show_progress=False, stop=StopRequest(steps))
            else:
                resume_experiment(out, show_progress=False, stop=StopRequest(steps))
        caught.append(error.value)
    return caught


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return run_experiment(digits_config(), out=tmp_path_factory.mktemp("straight") / "run", show_progress=False)


def assert_same_run(resumed: Path, straight: Path) -> None:
    """Weights and predictions bit for bit, history except its time column, and how the run ended."""
    assert (resumed / runs.WEIGHTS_FILE).read_bytes() == (straight / runs.WEIGHTS_FILE).read_bytes()
    ours, theirs = runs.load_npz(resumed / runs.PREDICTIONS_FILE), runs.load_npz(straight / runs.PREDICTIONS_FILE)
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])

    def without_time(path):
        return [{key: value for key, value in row.items() if key != "epoch_time_s"} for row in runs.read_history(path)]

    assert json.dumps(without_time(resumed)) == json.dumps(without_time(straight))
    ours, theirs = (json.loads((path / runs.METRICS_FILE).read_text()) for path in (resumed, straight))
    for key in ("status", "epochs", "best_epoch", "stop_reason", "test_accuracy", "test_loss"):
        assert ours[key] == theirs[key], key


@pytest.mark.slow
@pytest.mark.parametrize("stops", [
    pytest.param((STEPS_PER_EPOCH + 17,), id="mid-epoch"),
    pytest.param((2 * STEPS_PER_EPOCH,), id="epoch-boundary"),
    pytest.param((5, STEPS_PER_EPOCH - 5, 30), id="three-times"),  # mid-epoch, at the boundary, mid-epoch
])
def test_resumed_equals_uninterrupted(tmp_path, straight, stops):
    out = tmp_path / "run"
    interruptions = interrupted_run(out, *stops)
    assert json.loads((out / runs.METRICS_FILE).read_text())["status"] == "interrupted"
    assert all(error.signal_number == signal.SIGINT and error.run_dir == out for error in interruptions)
    assert resume_experiment(out, show_progress=False) == out
    assert_same_run(out, straight)
    assert json.loads((out / runs.METRICS_FILE).read_text())["status"] == "complete"


@pytest.mark.slow
def test_checkpoint_holds_every_piece_of_state(tmp_path):
    interrupted_run(tmp_path / "run", STEPS_PER_EPOCH + 3)
    state = torch.load(tmp_path / "run" / runs.CHECKPOINT_FILE, weights_only=True)  # no pickled code
    assert {"model", "optimizer", "scaler", "average", "stopper", "guard", "history", "random", "progress",
            "augment", "config", "epochs_done", "train_time_s"} <= set(state)
    assert state["progress"]["epoch"] == 2 and state["progress"]["step"] == 3
    assert len(state["progress"]["order"]) == 1293
    assert set(state["random"]) >= {"python", "numpy", "torch", "generators"}
    assert state["stopper"]["best_state"] is not None and state["average"]["steps"] == STEPS_PER_EPOCH + 3
    assert (tmp_path / "run" / runs.PREVIOUS_CHECKPOINT_FILE).is_file()  # the end of epoch 1


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, straight, damage, capsys):
    out = tmp_path / "run"
    interrupted_run(out, STEPS_PER_EPOCH + 20)  # latest: mid-epoch 2; previous: the end of epoch 1
    previous_bytes = (out / runs.PREVIOUS_CHECKPOINT_FILE).read_bytes()
    latest = out / runs.CHECKPOINT_FILE
    content = latest.read_bytes()
    # what a SIGKILL or a full disk in the middle of a plain write would leave
    latest.write_bytes({"garbage": os.urandom(len(content)), "truncated": content[:len(content) // 2],
                        "empty": b""}[damage])
    state = load_checkpoint(out)
    assert state["epochs_done"] == 1 and state["progress"] is None
    assert "resuming from checkpoint-previous.pt instead" in capsys.readouterr().err
    assert (out / runs.PREVIOUS_CHECKPOINT_FILE).read_bytes() == previous_bytes, "the previous one is left intact"
    resume_experiment(out, show_progress=False)
    assert_same_run(out, straight)


def test_a_failed_write_leaves_the_latest_checkpoint_intact(tmp_path, monkeypatch):
    checkpoints = Checkpointer(tmp_path, every_s=0)
    checkpoints.save({"model": {"w": torch.ones(3)}, "epochs_done": 1})
    before = (tmp_path / runs.CHECKPOINT_FILE).read_bytes()

    def disk_full(handle):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        checkpoints.save({"model": {"w": torch.zeros(3)}, "epochs_done": 2})
    assert (tmp_path / runs.CHECKPOINT_FILE).read_bytes() == before
    assert not (tmp_path / runs.PREVIOUS_CHECKPOINT_FILE).exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == [runs.CHECKPOINT_FILE], "no temporary file left"
    assert load_checkpoint(tmp_path)["epochs_done"] == 1


def test_neither_checkpoint_readable_is_a_clear_error(tmp_path):
    (tmp_path / runs.CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    assert has_checkpoint(tmp_path)
    with pytest.raises(Exception) as error:
        load_checkpoint(tmp_path)
    assert "No usable checkpoint" in str(error.value) and "checkpoint-previous.pt is missing" in str(error.value)


@pytest.mark.slow
def test_a_changed_config_is_refused_with_the_difference_but_more_epochs_are_accepted(tmp_path):
    out = tmp_path / "run"
    interrupted_run(out, 10)
    with pytest.raises(ConfigError) as error:
        resume_experiment(out, show_progress=False, overrides=["optimizer.lr=0.01", "train.batch_size=16"])
    assert "optimizer.lr: 0.001 -> 0.01" in str(error.value) and "train.batch_size: 32 -> 16" in str(error.value)
    with pytest.raises(ConfigError, match="train.epochs: 4 -> 3"):
        resume_experiment(out, show_progress=False, overrides=["train.epochs=3"])
    resume_experiment(out, show_progress=False, overrides=["train.epochs=5"])
    metrics = json.loads((out / runs.METRICS_FILE).read_text())
    assert metrics["status"] == "complete" and metrics["epochs_planned"] == 5
    with pytest.raises(ConfigError, match="complete run"):
        resume_experiment(out, show_progress=False)


def test_signals_set_the_stop_request_and_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # Python runs the handler at the next bytecode
        assert stop.requested and stop.signal_number == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal: the user insists
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@pytest.mark.slow
def test_sigterm_to_cnnlab_train_checkpoints_and_the_printed_command_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "cnnlab", "train", str(REPO / "examples/digits.yaml"), "train.epochs=12",
               "train.early_stopping=null", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 120
    while not (out / runs.CHECKPOINT_FILE).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    metrics = json.loads((out / runs.METRICS_FILE).read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs"] < 12
    assert "SIGTERM" in stderr
    resume_line = next(line for line in stderr.splitlines() if line.startswith("resume with: "))
    assert resume_line == f"resume with: cnnlab train --resume {out}"
    # a different config is refused, showing the difference
    assert main(["train", str(REPO / "examples/digits.yaml"), "train.epochs=12", "optimizer.lr=0.01",
                 "--resume", str(out)]) == 2
    assert "optimizer.lr: 0.001 -> 0.01" in capsys.readouterr().err.replace("\n", " ")
    resumed = subprocess.run([sys.executable, "-m", "cnnlab", *resume_line.split()[3:]], capture_output=True,
                             text=True, env=environment, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == str(out)
    metrics = json.loads((out / runs.METRICS_FILE).read_text())
    assert metrics["status"] == "complete" and metrics["epochs"] == 12
    assert len(runs.read_history(out)) == 12 and math.isfinite(metrics["test_accuracy"])


@pytest.mark.slow
def test_sigkill_leaves_a_checkpoint_that_resumes(tmp_path):
    """No handler runs on SIGKILL: whatever was being written, the checkpoints on disk are whole (written beside
    and renamed), and `--resume` continues the run (its status still says "running")."""
    out = tmp_path / "run"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "cnnlab", "train", str(REPO / "examples/digits.yaml"), "train.epochs=12",
               "train.early_stopping=null", "train.checkpoint_every_s=0", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    deadline = time.monotonic() + 120
    while not (out / runs.PREVIOUS_CHECKPOINT_FILE).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)  # likely in the middle of a step, or of a checkpoint write
    process.kill()
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    state = load_checkpoint(out)  # the latest or, with a warning, the previous one: never neither
    assert state["epochs_done"] < 12
    resumed = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(out)], capture_output=True,
                             text=True, env=environment, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / runs.METRICS_FILE).read_text())
    assert metrics["status"] == "complete" and len(runs.read_history(out)) == 12
