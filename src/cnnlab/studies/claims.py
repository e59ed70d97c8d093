"""Claims: how several `cnnlab suite` processes on one suite folder (`--workers K`, other terminals, or
machines sharing the folder) divide its experiments so that each runs once.

A worker claims an experiment by creating its claim file ``SUITE/.claims/<experiment>.<generation>.json``
with O_CREAT | O_EXCL: of several workers trying at once, exactly one creates it. The file says who holds
the claim (pid, host, the process's start, the suite session), and its modification time is the holder's
heartbeat, renewed every `HEARTBEAT_S` by a thread while the experiment runs. When the experiment ends the
holder writes the outcome into it: done (complete, or failed and why), or released (interrupted).
A claim is stale when its heartbeat is older than the lease (`LEASE_S`), or its holder ran on this host
and that process is gone; a stale or released claim is taken over by creating the next generation's file,
again with O_EXCL, so one worker wins.

A session is one run of the suite, ``.claims/session-<n>.json``, also created with O_CREAT | O_EXCL so that
workers starting together open one session, not two. A worker joins the open session (refused when it was
started with other experiments or another --overwrite) while it is alive (its file touched by the workers
within the lease); otherwise it opens the next one. A session closes when its comparison is written or a
worker of it is interrupted. An experiment done in the session is not run again; one done in an earlier
session goes through the usual step (complete: skipped, unfinished: resumed, failed: tried again).
``events.log`` lists every session, claim, takeover and outcome, one JSON line each."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cnnlab import runs
from cnnlab.errors import CnnlabError

CLAIMS_DIR = ".claims"
EVENTS_FILE = "events.log"
HEARTBEAT_S = 20.0  # how often a holder touches its claim file
LEASE_S = 120.0  # a claim not touched for this long is stale (its holder's machine died or lost the folder)
CLAIM_FILE = re.compile(r"(?P<name>.+)\.(?P<generation>\d+)\.json")
SESSION_FILE = re.compile(r"session-(?P<number>\d+)\.json")
HOST = socket.gethostname()


@dataclass(frozen=True)
class Session:
    """One run of a suite: its start (also its name), whether it trains every experiment again, the digest
    of its experiments, and this worker's label for the log."""

    start: float
    overwrite: bool
    suite: str
    worker: str = ""
    number: int = 0  # its file: session-<number>.json


@dataclass
class ClaimRecord:
    """The current (highest-generation) claim file of an experiment, as read."""

    name: str
    generation: int
    path: Path
    data: dict[str, Any]  # {} while its holder is still writing it
    heartbeat: float  # the file's modification time

    @property
    def state(self) -> str:
        return str(self.data.get("state", "running"))

    def is_stale(self, lease_s: float) -> bool:
        if self.state == "released":
            return True
        if self.state != "running":
            return False
        if time.time() - self.heartbeat > lease_s:
            return True
        return self.data.get("host") == HOST and not process_alive(self.data.get("pid"), self.data.get("pid_start"))

    def done_in(self, session: Session) -> bool:
        return self.state == "done" and self.data.get("session") == session.start


@dataclass
class ClaimBoard:
    """The claims of one suite folder."""

    suite_folder: Path
    lease_s: float = LEASE_S
    heartbeat_s: float = HEARTBEAT_S
    folder: Path = field(init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.suite_folder) / CLAIMS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)

    def records(self) -> dict[str, ClaimRecord]:
        """Every experiment's current claim, by experiment name."""
        found: dict[str, ClaimRecord] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                match = CLAIM_FILE.fullmatch(entry.name)
                if match is None:
                    continue
                name, generation = match["name"], int(match["generation"])
                if name not in found or generation > found[name].generation:
                    record = _read_record(Path(entry.path), name, generation)
                    if record is not None:
                        found[name] = record
        return found

    def current(self, name: str) -> Optional[ClaimRecord]:
        return self.records().get(name)

    def join_session(self, suite: str, overwrite: bool, worker: str = "") -> Session:
        """The open session, when it is alive, else a new one (of several workers opening one at once, one
        wins and the others join it). Joining a session of other experiments or another --overwrite is refused."""
        while True:
            found = self._current_session()
            if found is not None:
                number, data, touched = found
                alive = time.time() - touched <= self.lease_s
                if alive and not data:
                    time.sleep(0.05)  # its opener is still writing it
                    continue
                if alive and "start" in data and not data.get("closed"):
                    self._check_joinable(data, suite, overwrite)
                    session = Session(float(data["start"]), overwrite, suite, worker, number)
                    self.touch_session(session)
                    return session
            number = found[0] + 1 if found is not None else 1
            data = {"start": time.time(), "overwrite": overwrite, "suite": suite, "pid": os.getpid(), "host": HOST}
            if _create(self.folder / f"session-{number}.json", data):
                session = Session(data["start"], overwrite, suite, worker, number)
                for older in range(1, number):
                    with contextlib.suppress(OSError):
                        (self.folder / f"session-{older}.json").unlink()
                self.log_event("session opened", f"session-{number}", number, session)
                return session

    def _current_session(self) -> Optional[tuple[int, dict[str, Any], float]]:
        with os.scandir(self.folder) as entries:
            numbers = [int(match["number"]) for entry in entries if (match := SESSION_FILE.fullmatch(entry.name))]
        for number in sorted(numbers, reverse=True):
            record = _read_record(self.folder / f"session-{number}.json", "session", number)
            if record is not None:
                return number, record.data, record.heartbeat
        return None

    def _check_joinable(self, data: dict[str, Any], suite: str, overwrite: bool) -> None:
        who = f"pid {data.get('pid')} on {data.get('host')}"
        if data.get("suite") != suite:
            raise CnnlabError(f"Another cnnlab suite process ({who}) is running this suite folder "
                              f"({self.suite_folder}) with other experiments or overrides. Give this suite its own --out, or run the same "
                              "command (same suite file, overrides and --seeds) to help that one.")
        if bool(data.get("overwrite")) != overwrite:
            effect = ("train again what that one has already finished" if overwrite
                      else "skip the complete experiments that one trains again")
            raise CnnlabError(
                f"Another cnnlab suite process ({who}) is running this suite folder ({self.suite_folder}) "
                f"{'with' if data.get('overwrite') else 'without'} --overwrite. A second process "
                f"{'with' if overwrite else 'without'} it would {effect}. Join it with the same command, wait for "
                "it to finish, or start every worker together with --workers K.")

    def touch_session(self, session: Session) -> None:
        """The session's heartbeat: every worker touches its file while it works or waits."""
        with contextlib.suppress(OSError):
            os.utime(self.folder / f"session-{session.number}.json")

    def close_session(self, session: Session, why: str) -> None:
        """No worker joins this session any more (the next `cnnlab suite` opens a new one)."""
        path = self.folder / f"session-{session.number}.json"
        record = _read_record(path, "session", session.number)
        if record is not None and record.data.get("start") == session.start and not record.data.get("closed"):
            runs.write_json_atomic(path, {**record.data, "closed": why, "closed_at": time.time()})
            self.log_event("session closed", path.stem, session.number, session, reason=why)

    def try_claim(self, name: str, session: Session) -> Optional["Claim"]:
        """Claim experiment ``name`` for this worker, taking over a stale or released claim, or a claim of an
        earlier session; None when a live worker holds it, it is done in this session, or another worker
        claimed it first."""
        current = self.current(name)
        if current is not None and (current.done_in(session)
                                    or (current.state == "running" and not current.is_stale(self.lease_s))):
            return None
        generation = 1 if current is None else current.generation + 1
        path = self.folder / f"{name}.{generation}.json"
        data = {"state": "running", "pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": HOST,
                "session": session.start, "overwrite": session.overwrite, "suite": session.suite,
                "worker": session.worker, "claimed": time.time()}
        if not _create(path, data):
            return None  # another worker took it first
        taken_over = current is not None and current.state in ("running", "released")
        if current is not None:
            for older in range(1, generation):
                with contextlib.suppress(OSError):
                    (self.folder / f"{name}.{older}.json").unlink()
        self.log_event("took over" if taken_over else "claimed", name, generation, session,
                       previous=current.data if taken_over and current is not None else None)
        return Claim(self, name, generation, path, data, session)

    def log_event(self, event: str, name: str, generation: int, session: Session, **details: Any) -> None:
        """One line of events.log (a single append: whole lines even with several writers)."""
        line = {"time": time.time(), "event": event, "name": name, "generation": generation, "pid": os.getpid(),
                "host": HOST, "worker": session.worker, "session": session.start,
                **{key: value for key, value in details.items() if value is not None}}
        descriptor = os.open(self.folder / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (json.dumps(line) + "\n").encode("utf-8"))
        finally:
            os.close(descriptor)


class Claim:
    """A claim this worker holds: ``with claim:`` keeps its heartbeat while the block runs; `finish` or
    `release` end it."""

    def __init__(self, board: ClaimBoard, name: str, generation: int, path: Path, data: dict, session: Session):
        self.board, self.name, self.generation, self.path = board, name, generation, path
        self.data, self.session = data, session
        self.lost = False  # set when another worker took the claim over (this one's heartbeat stopped)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-{name}", daemon=True)

    def __enter__(self) -> "Claim":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.board.heartbeat_s):
            current = self.board.current(self.name)
            try:
                if current is not None and current.generation > self.generation:
                    raise FileNotFoundError(self.path)
                os.utime(self.path)
                self.board.touch_session(self.session)
            except FileNotFoundError:
                self.lost = True
                runs.log_line(f"warning: the claim on {self.name} was taken over by another worker (this one's "
                              f"heartbeat was older than the {self.board.lease_s:.0f} s lease); it may run twice.")
                return

    def finish(self, outcome: str, **details: Any) -> None:
        """Done: ``outcome`` "complete" or "failed" (with ``reason``), and what else the suite keeps."""
        self._end({"state": "done", "outcome": outcome, **details}, outcome)

    def release(self, why: str) -> None:
        """Given back unfinished (interrupted): any worker may take it over and resume it."""
        self._end({"state": "released", "reason": why}, "released")

    def _end(self, update: dict, event: str) -> None:
        self._stop.set()
        current = self.board.current(self.name)
        if self.lost or (current is not None and current.generation > self.generation):
            return  # taken over: the outcome is the new holder's to write
        self.data.update(update, ended=time.time())
        runs.write_json_atomic(self.path, self.data)
        self.board.log_event(event, self.name, self.generation, self.session, reason=update.get("reason"))


def _create(path: Path, data: dict[str, Any]) -> bool:
    """Create ``path`` holding ``data`` (JSON) if no file has its name: True for the one process that does."""
    try:
        descriptor = os.open(path, runs.NEW_FILE_FLAGS, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data))
    return True


def _read_record(path: Path, name: str, generation: int) -> Optional[ClaimRecord]:
    try:
        heartbeat = path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None  # replaced or removed while read
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}  # being written
    return ClaimRecord(name, generation, path, data if isinstance(data, dict) else {}, heartbeat)


def process_start(pid: int) -> Optional[int]:
    """When process ``pid`` started (clock ticks since boot, from /proc): with the pid, it names one process
    even after the pid is reused. None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[19]) if len(fields) > 19 and fields[0] != "Z" else None


def process_alive(pid: Any, started: Any) -> bool:
    """Whether process ``pid`` (started at ``started``, when known) still runs on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if started is None or not Path("/proc").is_dir():
        return True
    return process_start(pid) == started
