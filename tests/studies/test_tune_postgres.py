"""`cnnlab tune` on a real PostgreSQL server: the fixture starts a throwaway server (Debian's `postgresql`
package: initdb into a temporary folder, pg_ctl on a free port, listening only on a Unix socket in that
folder; as the `postgres` user when the tests run as root, since PostgreSQL refuses root), creates a
database, and stops and removes the server after the test. Two worker processes share one study through
postgresql+psycopg:// and finish N trials together, none twice.

Skipped, saying why, where the server's binaries or the psycopg driver are missing; CI installs both."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from cnnlab.studies.tune import run_tune
from cnnlab.studies.tune_settings import tune_settings

optuna = pytest.importorskip("optuna", reason="cnnlab tune needs the tune extra: pip install 'cnnlab[tune]'")

TRIALS = 4


def postgres_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name),
                         reverse=True):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A SQLAlchemy URL of a fresh database on a throwaway PostgreSQL server, stopped after the test."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    psycopg = pytest.importorskip("psycopg", reason="the psycopg driver is not installed: "
                                                    "pip install 'psycopg[binary]'")
    as_server = []
    # a short folder of its own (a Unix socket path must stay under 108 bytes), not under pytest's
    # tmp_path, whose parents only root may enter
    root = Path(tempfile.mkdtemp(prefix="cnnlab-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_server = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    data, log = root / "data", root / "server.log"

    def run(*command: str) -> None:
        subprocess.run([*as_server, *command], check=True, capture_output=True, timeout=120)

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=''", "start")
    except subprocess.CalledProcessError as error:
        shutil.rmtree(root, ignore_errors=True)
        raise AssertionError(f"the PostgreSQL server did not start: {error.stderr.decode(errors='replace')}") from None
    try:
        with psycopg.connect(host=str(root), port=port, user="postgres", dbname="postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE tune")
        yield f"postgresql+psycopg://postgres@/tune?host={root}&port={port}"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_real_postgresql_server(postgres_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = tune_settings("digits", ["train.epochs=2", "train.early_stopping=null"],
                             ["optimizer.lr=loguniform:1e-4:1e-1", "train.batch_size=choice:32,64"],
                             trials=TRIALS, workers=2, storage=postgres_url, study="pg-study", out=tmp_path / "study",
                             prune=False)
    outcome = run_tune(settings, show_progress=False)
    trials = optuna.load_study(study_name="pg-study", storage=postgres_url).get_trials()
    assert sorted(trial.number for trial in trials) == list(range(TRIALS)), "N trials in the database, none twice"
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    run_dirs = sorted(trial.user_attrs["run_dir"] for trial in trials)
    assert run_dirs == sorted(path.name for path in (tmp_path / "study").glob("trial-*"))
    assert len(set(run_dirs)) == TRIALS
    assert len({trial.user_attrs["worker"] for trial in trials}) == 2, "both worker processes ran trials"
    assert outcome.counts["complete"] == TRIALS
    assert not (tmp_path / "study" / "study.db").exists(), "the study lives in PostgreSQL, not in SQLite"
    assert "postgresql+psycopg://postgres@/tune" in (tmp_path / "study" / "report.md").read_text()
