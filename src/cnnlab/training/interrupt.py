"""Stopping training cleanly: SIGINT (Ctrl-C) and SIGTERM (a scheduler, `kill`) set a stop request that
the training loop reads at its next step boundary, where it writes a checkpoint and returns."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether training was asked to stop, and by which signal. ``after_steps`` asks for a stop after
    that many more training steps, as SIGINT would (for tests and benchmarks: a stop at an exact step)."""

    def __init__(self, after_steps: Optional[int] = None):
        self.signal_number: Optional[int] = None
        self.steps_left = after_steps

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def request(self, signal_number: int = signal.SIGINT) -> None:
        """Ask the loop to stop at its next step boundary (the first request's signal is kept)."""
        if self.signal_number is None:
            self.signal_number = int(signal_number)

    def count_step(self) -> bool:
        """Count one finished training step; return whether to stop now."""
        if self.steps_left is not None:
            self.steps_left -= 1
            if self.steps_left <= 0:
                self.request(signal.SIGINT)
        return self.requested

    def signal_name(self) -> str:
        return signal.Signals(self.signal_number).name if self.signal_number is not None else "no signal"


@contextlib.contextmanager
def stop_on_signals(stop: Optional[StopRequest] = None) -> Iterator[StopRequest]:
    """For the ``with`` block, SIGINT and SIGTERM set ``stop`` (a second signal raises KeyboardInterrupt:
    the user insists); the previous handlers are back after the block. Outside the main thread, where
    Python cannot install handlers, ``stop`` is only what the caller sets."""
    stop = stop if stop is not None else StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signal_number: int, frame: object) -> None:
        # no printing here: the handler may run in the middle of another write to stderr
        if stop.requested:
            raise KeyboardInterrupt
        stop.request(signal_number)

    previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
