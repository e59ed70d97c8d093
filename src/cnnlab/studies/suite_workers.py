"""`cnnlab suite FILE --workers K`: K worker processes on one suite folder. Each is the same `cnnlab suite`
command with a label; they join the session this process opens and claim experiments one at a
time (`cnnlab.studies.claims`); on GPUs each gets its own device through CUDA_VISIBLE_DEVICES, round-robin
over the visible ones (several share a device when K exceeds them). This process waits for them, passes a
stop (SIGINT, SIGTERM) on to them once, then finishes the suite as one more worker: the comparison is
already written, or it runs what a worker that crashed gave back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from cnnlab import runs
from cnnlab.errors import TrainingInterrupted
from cnnlab.studies.claims import ClaimBoard
from cnnlab.studies.suite import Suite, WorkerSettings, prepare_suite_folder, run_suite, suite_digest
from cnnlab.training.interrupt import stop_on_signals

POLL_S = 0.2  # how often the parent looks at its workers


def worker_devices(count: int) -> list[Optional[str]]:
    """The CUDA_VISIBLE_DEVICES of each of ``count`` workers: the visible GPUs round-robin (the entries of
    this process's CUDA_VISIBLE_DEVICES when set, else 0..n-1), or None each without a GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = [entry.strip() for entry in visible.split(",") if entry.strip() and entry.strip() != "-1"]
    elif torch.cuda.is_available():
        gpus = [str(number) for number in range(torch.cuda.device_count())]
    else:
        gpus = []
    return [gpus[number % len(gpus)] if gpus else None for number in range(count)]


def run_suite_workers(suite: Suite, out: Path, command: Sequence[str], count: int, data_dir: Path | None = None,
                      show_progress: bool = True, overwrite: bool = False,
                      seed_count: int | None = None) -> dict[str, Path]:
    """Run ``suite`` into ``out`` with ``count`` worker processes, each `python -m cnnlab` + ``command`` (the
    suite command's own arguments, with --out) + this session's options; return the comparison's files as
    `run_suite` does (SuiteFailed names failed experiments)."""
    out = prepare_suite_folder(out, overwrite)  # created once, before the workers
    board = ClaimBoard(out)
    # the session the workers join (a conflict with one already running is refused before any start)
    session = board.join_session(suite_digest(suite, seed_count), overwrite, "parent")
    devices = worker_devices(count)
    if devices[0] is not None and count > len(set(devices)):
        runs.log_line(f"{count} workers on {len(set(devices))} GPUs: some share a device.", show_progress)
    processes = []
    for number, device in enumerate(devices, 1):
        environment = dict(os.environ)
        if device is not None:
            environment["CUDA_VISIBLE_DEVICES"] = device
        label = f"worker {number}/{count}" + (f", GPU {device}" if device is not None else "")
        arguments = [sys.executable, "-m", "cnnlab", *command, "--worker-label", label]
        # a session of its own: Ctrl-C reaches the parent only, which passes it on once (a second signal
        # would make a worker stop without its checkpoint)
        processes.append(subprocess.Popen(arguments, env=environment, stdout=subprocess.DEVNULL,
                                          start_new_session=True))
    codes, signal_number = _wait(processes)
    if signal_number is not None:
        raise TrainingInterrupted(f"The suite's workers were stopped ({signal.Signals(signal_number).name}); their "
                                  f"checkpoints are kept in {out}. Run the same command again to continue: complete "
                                  "experiments are skipped, unfinished ones resumed.", run_dir=out,
                                  signal_number=signal_number)
    for number, code in enumerate(codes, 1):
        if code not in (0, 2):  # 2: some experiments failed, which the comparison shows
            runs.log_line(f"worker {number}/{count} exited with code {code} (its messages are above); what it "
                          "gave back unfinished is run here.")
    settings = WorkerSettings(session=session, label="parent", log_claims=True)
    return run_suite(suite, out, data_dir, show_progress, overwrite, seed_count, worker=settings)


def _wait(processes: list[subprocess.Popen]) -> tuple[list[int], Optional[int]]:
    """Wait for every worker; pass a SIGINT or SIGTERM this process gets on to them (and a second one: the
    user insists). Return their exit codes and the signal that stopped them, if any."""
    signal_number = None
    with stop_on_signals() as stop:
        while any(process.poll() is None for process in processes):
            try:
                time.sleep(POLL_S)
                if stop.requested and signal_number is None:
                    signal_number = stop.signal_number
                    _send(processes, signal_number)
            except KeyboardInterrupt:  # stop_on_signals raises it at the second signal
                signal_number = signal_number or signal.SIGINT
                _send(processes, signal_number)
    return [int(process.returncode) for process in processes], signal_number


def _send(processes: list[subprocess.Popen], signal_number: int) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal_number)
