"""Shared fixtures: where the offline datasets are, and no network in tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_datasets() -> Path | None:
    """The offline dataset folder: $CNNLAB_DATA, else ../shared/datasets beside the repo."""
    candidates = [os.environ.get("CNNLAB_DATA"), REPO.parent / "shared" / "datasets"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One cache for the whole test session, so a decoded dataset is decoded once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, session_cache):
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(session_cache))


@pytest.fixture
def datasets_dir() -> Path:
    found = shared_datasets()
    if found is None:
        pytest.skip("offline datasets (../shared/datasets or $CNNLAB_DATA) not present")
    return found
