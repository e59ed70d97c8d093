"""Errors a user can cause. The CLI catches these once and prints the message alone."""

from __future__ import annotations

import difflib
from typing import Iterable


class CnnlabError(Exception):
    """An error with a message meant for the user: one paragraph, says what to do."""


class ConfigError(CnnlabError):
    """The experiment config (file, override or zoo entry) is wrong."""


class DataError(CnnlabError):
    """A dataset is missing, truncated or corrupt."""


class ShapeError(CnnlabError):
    """A layer cannot be applied to the shape that reaches it."""


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite during training."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the closest choice, or '' when none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' Did you mean "{matches[0]}"?' if matches else ""
