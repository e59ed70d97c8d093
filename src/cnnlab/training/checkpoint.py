"""Training checkpoints: everything a run needs to continue exactly where it stopped, written atomically
into the run folder after every epoch and every `train.checkpoint_every_s` seconds within one.

A checkpoint is a `torch.save` file of tensors, numbers, strings, lists and dicts only, read back with
``weights_only=True`` (no pickled code runs). The last two are kept (`checkpoint.pt`, and
`checkpoint-previous.pt` before it): a new one is written to a temporary file and synced, the latest
becomes the previous, then the new one the latest, so a crash or SIGKILL at any moment leaves at least
one complete checkpoint. When the latest cannot be read, the previous is used, with a warning."""

from __future__ import annotations

import io
import os
import random
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml

from cnnlab import runs
from cnnlab.errors import CnnlabError, ConfigError

FORMAT_VERSION = 1
# what a resumed run may change in its config: how often checkpoints are written and whether TensorBoard
# events are written (they change no result); train.epochs may be raised, to train longer
FREELY_CHANGED = ("train.checkpoint_every_s", "train.tensorboard")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a training checkpoint (the latest or the previous one)."""
    return any((Path(run_dir) / name).is_file() for name in (runs.CHECKPOINT_FILE, runs.PREVIOUS_CHECKPOINT_FILE))


class Checkpointer:
    """Writes a run's checkpoints: `save` after every epoch, and within an epoch whenever `due`."""

    def __init__(self, run_dir: Path, every_s: float, extra: Optional[dict] = None):
        self.run_dir = Path(run_dir)
        self.every_s = every_s
        self.extra = extra or {}  # saved with every checkpoint (the experiment's config)
        self.last_written = time.monotonic()
        self.written = 0
        self.seconds_spent = 0.0

    def due(self) -> bool:
        """Whether `train.checkpoint_every_s` seconds have passed since the last checkpoint."""
        return time.monotonic() - self.last_written >= self.every_s

    def save(self, state: dict) -> None:
        """Write ``state`` (with ``extra``) as the latest checkpoint; the latest becomes the previous."""
        started = time.monotonic()
        buffer = io.BytesIO()
        torch.save({"format": FORMAT_VERSION, **self.extra, **state}, buffer)
        latest, previous = self.run_dir / runs.CHECKPOINT_FILE, self.run_dir / runs.PREVIOUS_CHECKPOINT_FILE
        # written whole first (the user's umask mode; a full disk names the file), then rotated in
        fresh = self.run_dir / f".{runs.CHECKPOINT_FILE}.next.tmp"
        runs.write_bytes_atomic(fresh, buffer.getvalue())
        if latest.is_file() and not latest.is_symlink():
            os.replace(latest, previous)
        os.replace(fresh, latest)
        _sync_folder(self.run_dir)
        self.last_written = time.monotonic()
        self.written += 1
        self.seconds_spent += self.last_written - started


def load_checkpoint(run_dir: Path) -> dict:
    """The latest readable checkpoint of ``run_dir``: `checkpoint.pt`, or `checkpoint-previous.pt` (with a
    warning line) when the latest is missing, truncated or not a cnnlab checkpoint. CnnlabError when
    neither can be read."""
    problems = []
    for name in (runs.CHECKPOINT_FILE, runs.PREVIOUS_CHECKPOINT_FILE):
        path = Path(run_dir) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file fails inside the unpickler or the zip reader, in many ways
            problems.append(f"{name} is damaged or incomplete ({type(error).__name__})")
            continue
        if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "model" not in state:
            problems.append(f"{name} is not a cnnlab training checkpoint of format {FORMAT_VERSION}")
            continue
        if problems:
            runs.log_line(f"warning: {'; '.join(problems)}: resuming from {name} instead.")
        return state
    raise CnnlabError(f"No usable checkpoint in {run_dir}: {'; '.join(problems)}. Train again from the start "
                      "(cnnlab train CONFIG --out FOLDER).")


def read_resume_point(config: dict, run_dir: Path, show_progress: bool) -> Optional[dict]:
    """The checkpoint a resumed run continues from (None: it starts from the beginning), after checking
    that ``config`` (a config as a dict) is the one the run was trained with, except `train.epochs` raised. ConfigError
    shows the differences; a complete run is resumed only to train longer."""
    if not (run_dir / runs.CONFIG_FILE).is_file():
        return None
    checkpoint = load_checkpoint(run_dir) if has_checkpoint(run_dir) else None
    saved = checkpoint.get("config") if checkpoint is not None else _saved_config(run_dir)
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        shown = "; ".join(conflicts[:12]) + (f"; and {len(conflicts) - 12} more" if len(conflicts) > 12 else "")
        raise ConfigError(f"{run_dir} was trained with another config, so it cannot be resumed with this one "
                          f"(only train.epochs may be raised, to train longer). Differences (old -> new): {shown}.")
    if runs.is_complete(run_dir) and (checkpoint is None or _planned_epochs(config) <= _planned_epochs(saved)):
        raise ConfigError(f"{run_dir} is a complete run: there is nothing to resume. To train it longer, raise "
                          f"train.epochs (cnnlab train --resume {run_dir} train.epochs=N; it needs the run's "
                          f"{runs.CHECKPOINT_FILE}).")
    if checkpoint is None:
        runs.log_line(f"no checkpoint in {run_dir} (it stopped before its first): training starts from the "
                      "beginning.", show_progress)
        return None
    progress = checkpoint["progress"]
    where = (f"epoch {progress['epoch']}, step {progress['step']}" if progress
             else f"the end of epoch {checkpoint['epochs_done']}")
    runs.log_line(f"resuming {run_dir} from {where}", show_progress)
    return checkpoint


def _planned_epochs(saved: dict) -> int:
    epochs = (saved.get("train") or {}).get("epochs") if isinstance(saved, dict) else None
    return epochs if isinstance(epochs, int) else 0


def _saved_config(run_dir: Path) -> dict:
    try:
        saved = yaml.safe_load((run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{run_dir / runs.CONFIG_FILE} cannot be read ({error}); it cannot be resumed.") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{run_dir / runs.CONFIG_FILE} is not a cnnlab config (a mapping); it cannot be resumed.")
    return saved


def random_states(generators: dict[str, torch.Generator]) -> dict:
    """Every random generator's state as tensors and numbers: Python's, NumPy's, torch's CPU (and CUDA)
    default generators and the named ``generators``."""
    version, python_state, gauss = random.getstate()
    _, numpy_keys, numpy_position, numpy_has_gauss, numpy_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(numpy_keys.astype(np.int64)), "position": int(numpy_position),
                  "has_gauss": int(numpy_has_gauss), "gauss": float(numpy_gauss)},
        "torch": torch.get_rng_state(),
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict, generators: dict[str, torch.Generator]) -> None:
    """Put back what `random_states` saved."""
    python = states["python"]
    random.setstate((python["version"], tuple(int(value) for value in python["state"].tolist()), python["gauss"]))
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for name, generator in generators.items():
        generator.set_state(states["generators"][name])


def resume_conflicts(saved: dict, requested: dict) -> list[str]:
    """The differences between the config a run was trained with and the one asked to resume it, as
    "dotted.key: old -> new", leaving out what resuming may change (`train.epochs` raised,
    `train.checkpoint_every_s`)."""
    old, new = _flatten(saved), _flatten(requested)
    conflicts = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, "(absent)"), new.get(key, "(absent)")
        if before == after or key in FREELY_CHANGED:
            continue
        if key == "train.epochs" and isinstance(before, int) and isinstance(after, int) and after > before:
            continue
        conflicts.append(f"{key}: {_short(before)} -> {_short(after)}")
    return conflicts


def _flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(mapping, dict):
        return {prefix: mapping}
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        flat.update(_flatten(value, dotted) if isinstance(value, dict) and value else {dotted: value})
    return flat


def _short(value: Any, limit: int = 60) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _sync_folder(folder: Path) -> None:
    """Make the renames durable (a crash after this keeps them); not every system can sync a folder."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
