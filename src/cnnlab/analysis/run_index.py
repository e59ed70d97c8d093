"""The run index: an SQLite file (``FOLDER/index.sqlite``) listing the runs and multi-seed folders under
FOLDER, so that `cnnlab runs` answers without reading every folder and a short run id names a run.

Run folders stay the truth; the index is a cache of their metrics.json. It is built by scanning the
folder (`rebuild_index`, also when the file is missing or broken), updated when a run finishes
(`record_run`, called by `experiment.py` and the multi-seed aggregate), and checked on every listing
(`refresh_index`): a folder that is gone is dropped, one whose metrics.json changed is read again.

A run's id is the first 8 hex digits of the SHA-256 of its folder's resolved path (`run_id`). It needs
nothing written into the run (so read-only and earlier runs have one), is the same in every index and
process on this machine, and a copy of a run never shares its original's id. Moving a folder gives it a
new id (the index drops the old path on its next listing; `--rebuild` adds the new one).

Several processes may finish runs at once: the file is in WAL mode with a busy timeout, and every write
is one short ``BEGIN IMMEDIATE`` transaction. Recording never fails a run: a problem is one warning line."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from cnnlab import output_folders, runs
from cnnlab.analysis.run_rows import (COLUMNS, ID_LENGTH, describe_folder, folder_signature, passed_over,
                                      run_id, scan_folders)
from cnnlab.errors import CnnlabError

INDEX_FILE = "index.sqlite"
INDEX_FORMAT = "cnnlab-run-index/1"  # in the cnnlab_meta table: the mark that an index.sqlite is this one
ID_PATTERN = re.compile(r"[0-9a-f]{4,8}")  # what may name a run by id: 4 to 8 hex digits (a prefix is enough)
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cnnlab_meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS runs (path TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, part_of TEXT, "
    "name TEXT, dataset TEXT, model TEXT, n_seeds INTEGER, seeds_done INTEGER, status TEXT, test_accuracy REAL, "
    "test_accuracy_std REAL, test_loss REAL, train_time_s REAL, epochs INTEGER, started TEXT, signature TEXT)",
    "CREATE INDEX IF NOT EXISTS runs_by_id ON runs (id)",
    f"INSERT OR IGNORE INTO cnnlab_meta (key, value) VALUES ('format', '{INDEX_FORMAT}')",
)
UPSERT = f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class NotRunIndex(Exception):
    """An index.sqlite that is not cnnlab's run index (another program's database): left alone."""


@dataclass
class IndexedRun:
    """One row of the index, with ``folder`` the run's folder as found now."""

    folder: Path
    row: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.row[key]


def record_run(run_dir: Path) -> None:
    """Add or update ``run_dir`` (a run or multi-seed folder) in every run index of the folders above it.
    Never raises: the run is already written, so a problem with an index is one warning line."""
    try:
        folder = Path(run_dir).resolve()
        for index in [parent / INDEX_FILE for parent in folder.parents if (parent / INDEX_FILE).is_file()]:
            if any(passed_over(part) for part in folder.relative_to(index.parent).parts):
                continue  # a run built beside the one it replaces: recorded once it is in its place
            try:
                with connect(index, create=False) as connection:
                    row = describe_folder(folder, index.parent)
                    if row is not None:
                        with write_transaction(connection):
                            connection.execute(UPSERT, [row[column] for column in COLUMNS])
            except NotRunIndex:
                continue
    except Exception as error:  # noqa: BLE001 - whatever goes wrong, the finished run must not fail
        runs.log_line(f"warning: the run index was not updated for {run_dir} ({type(error).__name__}: {error}). "
                      "`cnnlab runs FOLDER --rebuild` rebuilds it from the folders.")


@contextlib.contextmanager
def connect(index: Path, create: bool) -> Iterator[sqlite3.Connection]:
    """A connection to ``index`` (created when ``create``) in WAL mode with a busy timeout. Raises
    NotRunIndex for another program's database, sqlite3.DatabaseError for a damaged file."""
    mode = "rwc" if create else "rw"
    connection = sqlite3.connect(f"{Path(index).resolve().as_uri()}?mode={mode}", uri=True,
                                 timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if create and not tables:
            connection.execute("PRAGMA journal_mode = WAL")  # kept by the file: readers never block the writer
            with write_transaction(connection):
                for statement in SCHEMA:
                    connection.execute(statement)
        elif "cnnlab_meta" not in tables or _format(connection) != INDEX_FORMAT:
            raise NotRunIndex(f"{index} is not a cnnlab run index (format {INDEX_FORMAT})")
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, holding the write lock from its start (no upgrade from a read that another
    writer could make fail)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _format(connection: sqlite3.Connection) -> Optional[str]:
    row = connection.execute("SELECT value FROM cnnlab_meta WHERE key = 'format'").fetchone()
    return row[0] if row else None


def open_index(folder: Path, rebuild: bool = False) -> Path:
    """``folder``'s index, ready to query: rebuilt from the folders when asked, missing or broken (a broken
    file is kept beside it as ``index.sqlite.broken-<time>``), otherwise refreshed (`refresh_index`)."""
    folder = Path(folder)
    index = folder / INDEX_FILE
    if not rebuild and index.is_file():
        try:
            refresh_index(folder)
            return index
        except NotRunIndex:
            raise CnnlabError(f"{index} is another program's SQLite database, not cnnlab's run index: move it away "
                              "or list another folder.") from None
        except sqlite3.OperationalError as error:  # locked for too long, or not readable: not damaged
            raise CnnlabError(f"{index} cannot be used now ({error}). If another cnnlab process is writing it, try "
                              "again; otherwise check the file's permissions.") from None
        except sqlite3.DatabaseError as error:  # not a database, or a damaged one
            aside = index.with_name(f"{INDEX_FILE}.broken-{_dt.datetime.now():%Y%m%d-%H%M%S}")
            runs.log_line(f"warning: {index} cannot be read ({error}); it is moved to {aside.name} and rebuilt.")
            os.replace(index, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{index}{suffix}")
    rebuild_index(folder)
    return index


def rebuild_index(folder: Path) -> int:
    """Scan ``folder`` for runs and multi-seed folders and make the index exactly what was found (one
    transaction, so a reader sees the old index or the new one); return how many rows it holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CnnlabError(f"{folder} is not a folder: give the folder that holds your runs (default: runs).")
    rows = [describe_folder(path, folder) for path in scan_folders(folder)]
    rows = [row for row in rows if row is not None]
    with connect(folder / INDEX_FILE, create=True) as connection, write_transaction(connection):
        connection.execute("DELETE FROM runs")
        connection.executemany(UPSERT, [[row[column] for column in COLUMNS] for row in rows])
    return len(rows)


def refresh_index(folder: Path) -> None:
    """Drop the rows of folders that are gone (or no longer runs); read again those whose metrics changed
    or whose id changed (the whole tree was moved). One stat or two per row."""
    folder = Path(folder)
    with connect(folder / INDEX_FILE, create=False) as connection:
        stored = connection.execute("SELECT path, id, kind, signature FROM runs").fetchall()
        removed, changed = [], []
        for path, stored_id, kind, signature in stored:
            run_dir = folder / path
            if not run_dir.is_dir() or output_folders.output_kind(run_dir) != kind:
                removed.append((path,))
            elif folder_signature(run_dir, kind) != signature or run_id(run_dir) != stored_id:
                row = describe_folder(run_dir, folder)
                if row is None:
                    removed.append((path,))
                else:
                    changed.append([row[column] for column in COLUMNS])
        if removed or changed:
            with write_transaction(connection):
                connection.executemany("DELETE FROM runs WHERE path = ?", removed)
                connection.executemany(UPSERT, changed)


def query_runs(folder: Path, conditions: Sequence[tuple[str, str, Any]] = (), order: Sequence[tuple[str, bool]] = (),
               limit: Optional[int] = None, include_seed_runs: bool = False) -> list[IndexedRun]:
    """Rows of ``folder``'s index: ``conditions`` (column, operator, value) all hold, sorted by ``order``
    ((column, descending), missing values last), at most ``limit``. Columns and operators are checked by
    the caller against `COLUMNS`; a text value with * or ? matches as a glob pattern."""
    where, parameters = ([] if include_seed_runs else ["part_of IS NULL"]), []
    for column, operator, value in conditions:
        if column not in COLUMNS or operator not in ("=", "!=", "<", "<=", ">", ">="):
            raise ValueError(f"bad condition {column} {operator}")
        if isinstance(value, str) and operator in ("=", "!=") and any(mark in value for mark in "*?["):
            where.append(f"{column} {'NOT ' if operator == '!=' else ''}GLOB ?")
        elif isinstance(value, str):
            where.append(f"{column} {operator} ? COLLATE NOCASE")
        else:
            where.append(f"{column} {operator} ?")
        parameters.append(value)
    sql = f"SELECT {', '.join(COLUMNS)} FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
    for column, _ in order:
        if column not in COLUMNS:
            raise ValueError(f"bad sort column {column}")
    sorting = [f"{column} IS NULL, {column} {'DESC' if descending else 'ASC'}" for column, descending in order]
    sql += " ORDER BY " + ", ".join(sorting + ["path"]) + (" LIMIT ?" if limit is not None else "")
    with connect(Path(folder) / INDEX_FILE, create=False) as connection:
        rows = connection.execute(sql, parameters + ([limit] if limit is not None else [])).fetchall()
    return [IndexedRun(Path(folder) / row[0], dict(zip(COLUMNS, row))) for row in rows]


def resolve_run(text: str | Path, start: Optional[Path] = None) -> Path:
    """``text`` as a run folder: itself when it exists or cannot be a run id; otherwise the one run whose id
    begins with it, looked up in the run indexes of ``start`` (default: the current folder) and the folders
    above it, in their `runs/` subfolders and in themselves (``./runs``'s index is built when there is none).
    CnnlabError says when the id is unknown or begins the ids of several runs."""
    path = Path(text)
    if os.path.lexists(path) or not ID_PATTERN.fullmatch(str(text)):
        return path
    start = Path(start or Path.cwd()).resolve()
    indexes = lookup_indexes(start)
    if not indexes and (start / "runs").is_dir():
        rebuild_index(start / "runs")
        indexes = [start / "runs" / INDEX_FILE]
    matches = find_run_id(str(text), indexes)
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = "; ".join(f"{run_id(match)} {match}" for match in matches[:10])
        raise CnnlabError(f'"{text}" begins the ids of {len(matches)} runs: {listed}. Give more of the id (up to '
                          f"{ID_LENGTH} hex digits), or the folder itself.")
    where = (f"the run index{'es' if len(indexes) > 1 else ''} {', '.join(map(str, indexes))}" if indexes else
             f"any run index (none in {start}/runs, {start} or the folders above)")
    raise CnnlabError(f'"{text}" is neither a folder nor the id of a run in {where}. `cnnlab runs FOLDER` lists '
                      "runs with their ids; `cnnlab runs FOLDER --rebuild` indexes a folder of runs that was copied "
                      "or moved there (an id is made from the folder's path, so a moved run has a new one).")


def lookup_indexes(start: Path) -> list[Path]:
    """The run indexes an id is looked up in: ``start``'s and its parents' `runs/index.sqlite` and
    `index.sqlite`, nearest first."""
    found: list[Path] = []
    for folder in (start, *start.parents):
        for index in (folder / "runs" / INDEX_FILE, folder / INDEX_FILE):
            if index.is_file() and index not in found:
                found.append(index)
    return found


def find_run_id(prefix: str, indexes: Sequence[Path]) -> list[Path]:
    """The existing folders whose run id begins with ``prefix``, in any of ``indexes`` (each once)."""
    matches: list[Path] = []
    for index in indexes:
        try:
            with connect(index, create=False) as connection:
                paths = [row[0] for row in connection.execute("SELECT path FROM runs WHERE id LIKE ?", (prefix + "%",))]
                if not paths:  # the stored ids may predate a move of the whole tree: compute them now
                    paths = [row[0] for row in connection.execute("SELECT path FROM runs")]
        except (NotRunIndex, sqlite3.DatabaseError):
            continue
        for path in paths:
            folder = (index.parent / path).resolve()
            if folder not in matches and folder.is_dir() and run_id(folder).startswith(prefix):
                matches.append(folder)
    return matches
