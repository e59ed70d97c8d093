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

from cnnlab import runs
from cnnlab.errors import CnnlabError

FORMAT_VERSION = 1
# what a resumed run may change in its config: how often checkpoints are written (it changes no result);
# train.epochs may be raised, to train longer
FREELY_CHANGED = ("train.checkpoint_every_s",)


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
