"""Parallel suites: two worker processes on one suite folder run every experiment exactly once and write
one comparison; `--workers K` does the same from one command; a claim whose process died is taken over at
once, one from another machine after its lease; conflicting sessions are refused; devices round-robin."""

import csv
import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from cnnlab.cli import main
from cnnlab.output_folders import prepare_output_folder
from cnnlab.errors import CnnlabError
from cnnlab.studies import claims
from cnnlab.studies.claims import ClaimBoard
from cnnlab.studies.suite import WorkerSettings, load_suite, run_suite, suite_digest
from cnnlab.studies.suite_workers import worker_devices

SUITE = """
name: parallel
defaults: {train.epochs: 1, train.early_stopping: null}
experiments:
  - {run: digits, label: a}
  - {run: digits, label: b, overrides: {optimizer.lr: 0.003}}
  - {run: digits, label: c, overrides: {train.batch_size: 64}}
"""

# a worker process: run_suite with its training counted (one line per start of run_experiment), after
# waiting for the test's "go" so that both workers start claiming together
WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from cnnlab.studies import suite as suite_module
    from cnnlab.studies.suite import WorkerSettings, load_suite, run_suite
    suite_file, out, count_file = map(Path, sys.argv[1:4])
    real = suite_module.run_experiment

    def counted(config, **settings):
        descriptor = os.open(count_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(descriptor, f"{Path(settings['out']).name} {os.getpid()}\\n".encode())
        os.close(descriptor)
        return real(config, **settings)

    suite_module.run_experiment = counted
    (count_file.parent / f"ready-{os.getpid()}").touch()
    while not (count_file.parent / "go").exists():
        time.sleep(0.01)
    written = run_suite(load_suite(suite_file), out, show_progress=False, worker=WorkerSettings(poll_s=0.3))
    print(json.dumps({key: str(path) for key, path in written.items()}))
""")


def events(out):
    lines = (out / claims.CLAIMS_DIR / claims.EVENTS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def comparison_models(written_csv):
    with open(written_csv, newline="") as handle:
        return [row["model"] for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_two_worker_processes_run_every_experiment_exactly_once(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(SUITE)
    out, count_file = tmp_path / "out", tmp_path / "trainings.txt"
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, str(suite_file), str(out), str(count_file)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    while len(list(tmp_path.glob("ready-*"))) < 2:
        assert all(process.poll() is None for process in processes), [p.communicate() for p in processes]
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    trainings = [line.split() for line in count_file.read_text().splitlines()]
    assert sorted(folder for folder, _ in trainings) == ["01-a", "02-b", "03-c"]  # each trained once, no more
    assert len({pid for _, pid in trainings}) == 2  # and both workers trained
    written = [json.loads(stdout) for stdout, _ in results]
    assert written[0] == written[1]  # both return the one comparison
    assert comparison_models(written[0]["csv"]) == ["a", "b", "c"]
    log = events(out)
    assert sorted(event["name"] for event in log if event["event"] == "claimed") == ["01-a", "02-b", "03-c",
                                                                                     "comparison"]
    assert all(json.loads((out / folder / "metrics.json").read_text())["status"] == "complete"
               for folder in ("01-a", "02-b", "03-c"))
    again = run_suite(load_suite(suite_file), out, show_progress=False)  # a new session: complete ones skipped
    assert count_file.read_text().count("\n") == 3 and comparison_models(again["csv"]) == ["a", "b", "c"]


@pytest.mark.slow
def test_the_workers_option_shares_the_suite_between_processes(tmp_path, capsys):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(SUITE.rsplit("  - {run: digits, label: c", 1)[0])
    out = tmp_path / "out"
    assert main(["suite", str(suite_file), "--workers", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[-1] == str(out) and comparison_models(printed[0]) == ["a", "b"]
    log = events(out)
    claimed = [event for event in log if event["event"] == "claimed"]
    assert sorted(event["name"] for event in claimed) == ["01-a", "02-b", "comparison"]
    assert all(event["worker"].startswith("worker ") for event in claimed)  # the workers, not the parent
    assert len({event["session"] for event in log}) == 1
    for folder in ("01-a", "02-b"):
        environment = json.loads((out / folder / "environment.json").read_text())
        assert "--worker-label worker" in environment["command"]  # trained by a worker process


def test_worker_devices_round_robin_over_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert worker_devices(3) == ["3", "5", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert worker_devices(2) == [None, None]


def write_claim(board, name, **data):
    path = board.folder / f"{name}.1.json"
    path.write_text(json.dumps({"state": "running", **data}))
    return path


@pytest.mark.slow
def test_a_dead_workers_claim_is_taken_over_at_once_and_a_silent_machines_after_its_lease(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(SUITE.rsplit("  - {run: digits, label: c", 1)[0])
    suite = load_suite(suite_file)
    out = prepare_output_folder(tmp_path / "out", kind="suite")
    board = ClaimBoard(out)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid names no process now
    opened = ClaimBoard(out, lease_s=4.0).join_session(suite_digest(suite, None), overwrite=False)
    session = {"session": opened.start, "suite": opened.suite, "overwrite": False}
    write_claim(board, "01-a", pid=finished.pid, pid_start=None, host=claims.HOST, **session)
    silent = write_claim(board, "02-b", pid=1, host="another-machine", **session)  # fresh heartbeat, lease 4 s
    claimed_at, heartbeat = time.time(), silent.stat().st_mtime
    written = run_suite(suite, out, show_progress=False,
                        worker=WorkerSettings(lease_s=4.0, heartbeat_s=1.0, poll_s=0.2))
    assert comparison_models(written["csv"]) == ["a", "b"]
    taken = {event["name"]: event for event in events(out) if event["event"] == "took over"}
    assert sorted(taken) == ["01-a", "02-b"]
    assert taken["01-a"]["previous"]["pid"] == finished.pid and taken["01-a"]["time"] - claimed_at < 4.0
    assert taken["02-b"]["previous"]["host"] == "another-machine" and taken["02-b"]["time"] - heartbeat >= 4.0
    assert all(event["session"] == opened.start for event in events(out))  # it joined the session it found
    assert sorted(path.name for path in board.folder.glob("0*.json")) == ["01-a.2.json", "02-b.2.json"]


def test_a_second_process_with_other_experiments_or_overwrite_is_refused(tmp_path, monkeypatch):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(SUITE)
    suite = load_suite(suite_file)
    out = prepare_output_folder(tmp_path / "out", kind="suite")
    board = ClaimBoard(out)
    board.join_session(suite_digest(suite, None), overwrite=False)  # another process's session, running
    monkeypatch.setattr("cnnlab.studies.suite.run_experiment", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(CnnlabError, match="without --overwrite. A second process with it would train again"):
        run_suite(suite, out, show_progress=False, overwrite=True)
    with pytest.raises(CnnlabError, match="with other experiments or overrides"):
        run_suite(suite, out, show_progress=False, seed_count=2)


def test_one_claim_per_experiment_and_session(tmp_path):
    board = ClaimBoard(tmp_path)
    session = claims.Session(start=1.0, overwrite=False, suite="x")
    first = board.try_claim("01-a", session)
    assert first is not None and board.try_claim("01-a", session) is None  # held by a live process: this one
    first.finish("complete")
    assert board.try_claim("01-a", session) is None  # done in this session
    later = claims.Session(start=2.0, overwrite=False, suite="x")
    again = board.try_claim("01-a", later)  # a later session goes through it again (skipping a complete run)
    assert again is not None and again.generation == 2
    again.release("interrupted")
    assert board.try_claim("01-a", later).generation == 3  # released: anyone takes it over


def test_workers_starting_together_open_one_session(tmp_path):
    board, opened, barrier = ClaimBoard(tmp_path), [], threading.Barrier(8)

    def open_or_join():
        barrier.wait()
        opened.append(board.join_session("x", overwrite=False))

    threads = [threading.Thread(target=open_or_join) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({session.start for session in opened}) == 1 and len(opened) == 8
    board.close_session(opened[0], "complete")
    assert board.join_session("x", overwrite=False).number == opened[0].number + 1  # closed: the next one opens
