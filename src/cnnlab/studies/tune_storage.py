"""Where a `cnnlab tune` study lives and how its workers share it: Optuna imported on demand, the storage
(any SQLAlchemy URL Optuna takes), the study's lock, claiming a trial under it, the sampler and pruner each
worker builds, and a trial as a row of the study's files.

A study of N trials runs N trials however many workers share it: a worker starts a trial (``study.ask()``)
only while the study holds fewer than N started or finished trials, and decides that under the study's lock
(a file lock beside a SQLite database; an advisory lock in PostgreSQL). Other databases have no lock here:
several workers may then start a few trials beyond N. A trial stopped by a signal does not count."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import warnings
from typing import Any, Iterator

from cnnlab.errors import CnnlabError, ConfigError, shorten
from cnnlab.studies.tune_settings import ParamSpec, TuneSettings


def claim_trial(study: Any, planned: int) -> Any:
    """A new trial of ``study`` (``study.ask()``), or None when it already has ``planned`` trials started or
    finished (an interrupted trial does not count). Call it under the study's lock."""
    counted = [trial for trial in study.get_trials(deepcopy=False) if counts_toward_budget(trial)]
    return study.ask() if len(counted) < planned else None


@contextlib.contextmanager
def study_lock(url: str, study: str) -> Iterator[None]:
    """Hold the study's lock: a file lock beside a SQLite database, an advisory lock in PostgreSQL.
    Other databases have none (several workers may then start a few trials beyond the planned number)."""
    kind = backend(url)
    if kind == "sqlite":
        with open(sqlite_path(url) + ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif kind == "postgresql":
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(study.encode("utf-8")).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            engine.dispose()
    else:
        yield


def mask_url(url: str) -> str:
    """A storage URL without its password, for files and messages."""
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not separator or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.partition(':')[0]}:***@{host}"


def load_optuna() -> Any:
    """The optuna module (CnnlabError saying what to install when it is missing), its own log lines off."""
    try:
        import optuna
    except ImportError:
        raise CnnlabError("cnnlab tune needs Optuna: pip install 'cnnlab[tune]' (or pip install optuna).") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # cnnlab prints one line per trial itself
    return optuna


def open_storage(url: str, optuna: Any) -> Any:
    """Optuna's storage at ``url`` (a SQLite file waits up to a minute for another worker's write)."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if backend(url) == "sqlite" else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError:
        raise CnnlabError(f"The storage {mask_url(url)} needs its database driver: for postgresql+psycopg:// "
                          "pip install 'cnnlab[postgres]' (or 'psycopg[binary]').") from None
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's errors for a URL it cannot open
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CnnlabError(f"Cannot open the study storage {mask_url(url)}: {shorten(detail, 300)}. Check the URL, "
                          "that the database server runs and that the database exists.") from None


def make_sampler(settings: TuneSettings, worker: int, optuna: Any) -> Any:
    """The sampler of worker ``worker`` of a command: seeded with seed + worker when a seed is given."""
    seed = None if settings.sampler.seed is None else settings.sampler.seed + worker
    if settings.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with _quiet_experimental(optuna):  # constant_liar: running trials count as bad ones, so workers spread out
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(settings: TuneSettings, optuna: Any) -> Any:
    """The median pruner the settings describe, or none."""
    pruner = settings.pruner
    if pruner.name == "none":
        return optuna.pruners.NopPruner()
    # a report's step is the epoch (from 1): the first epoch that may be pruned is warmup_epochs + 1
    return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs + 1)


@contextlib.contextmanager
def _quiet_experimental(optuna: Any) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def counts_toward_budget(trial: Any) -> bool:
    """Started or finished, and not stopped by a signal (that trial is run again in its place)."""
    state = trial.state.name
    return state != "WAITING" and not (state == "FAIL" and trial.user_attrs.get("interrupted"))


def trial_row(trial: Any, specs: list[ParamSpec]) -> dict[str, Any]:
    """A trial as the study's files hold it; a pruned trial's value is its last reported one."""
    duration, attributes = None, trial.user_attrs
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
    value = trial.value if trial.state.name == "COMPLETE" else None
    if trial.state.name == "PRUNED" and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]  # its last report
    return {"number": trial.number, "state": trial.state.name.lower(), "value": value,
            "params": {spec.key: trial.params.get(spec.key) for spec in specs}, "epochs": attributes.get("epochs"),
            "duration_s": duration, "run_dir": attributes.get("run_dir"), "worker": attributes.get("worker"),
            "failure": attributes.get("failure") or ("interrupted" if attributes.get("interrupted") else None),
            "intermediate": {str(step): reported for step, reported in sorted(trial.intermediate_values.items())},
            "started": trial.datetime_start.isoformat() if trial.datetime_start else None}


def check_storage_url(url: str) -> None:
    """ConfigError for what cannot be a study's storage: no URL, an in-memory SQLite database."""
    if "://" not in url:
        raise ConfigError(f"--storage {shorten(mask_url(url))} is not a database URL: give e.g. "
                          "sqlite:///runs/study.db or postgresql+psycopg://user:password@host/database.")
    if backend(url) == "sqlite" and sqlite_path(url) in ("", ":memory:"):
        raise ConfigError("--storage: an in-memory SQLite database would lose the study; give a file, e.g. "
                          "sqlite:///runs/study.db.")


def backend(url: str) -> str:
    """"sqlite", "postgresql", "mysql", ...: the database of a SQLAlchemy URL, without its driver."""
    return url.partition("://")[0].partition("+")[0].lower()


def sqlite_path(url: str) -> str:
    """The file of a sqlite:/// URL ("" or ":memory:" for an in-memory database)."""
    return url.partition("://")[2].removeprefix("/").partition("?")[0]
