"""What every benchmark script shares: running a peer in a fresh process, hardware and version
capture, summary statistics, and writing the JSON + Markdown results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


# The CPU features that decide cnnlab's automatic precision (and oneDNN's kernels), named beside every figure.
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16", "sve")


def hardware() -> dict:
    """This machine: CPU model, its speed-relevant flags (`REPORTED_FLAGS`), core count, GPU, platform."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    from cnnlab.training.precision import read_cpu_flags

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    flags = [flag for flag in REPORTED_FLAGS if flag in read_cpu_flags()]
    return {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "gpu": gpu, "platform": platform.platform()}


def hardware_line(machine: dict | None = None) -> str:
    """One line for a results file: "AMD EPYC ..., 2 cores, flags avx2 avx512f avx512_bf16, no GPU"."""
    machine = machine or hardware()
    flags = " ".join(machine.get("cpu_flags") or []) or "none of " + " ".join(REPORTED_FLAGS)
    gpu = f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU"
    return f"{machine['cpu']}, {machine['cores']} cores, flags {flags}, {gpu}"


def versions(extra: dict | None = None) -> dict:
    import torch

    import cnnlab

    found = {"python": platform.python_version(), "torch": torch.__version__, "cnnlab": cnnlab.__version__,
             "numpy": np.__version__}
    return {**found, **(extra or {})}


def run_json(command: list[str], env: dict | None = None) -> dict:
    """Run ``command`` in a fresh process; return the JSON object on its last stdout line."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    return result


def cnnlab_train(config: str, overrides: list[str]) -> dict:
    """Train with the `cnnlab` command into a temporary run directory; return its metrics."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cnnlab", "train", config, *overrides, "--out", str(out), "--quiet"],
                              capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"cnnlab train {config} failed:\n{done.stderr[-3000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        history = (out / "history.csv").read_text().splitlines()
    metrics["process_wall_s"] = wall
    metrics["epoch_times_s"] = [float(line.split(",")[6]) for line in history[1:]]
    return metrics


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def write_results(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(payload, indent=2)), (".md", markdown)):
        path = RESULTS / f"{name}{suffix}"
        temporary = path.with_suffix(suffix + ".tmp")
        temporary.write_text(text + "\n")
        temporary.replace(path)
    print(markdown)
