"""Errors a user can cause. The CLI catches these once and prints the message alone."""

from __future__ import annotations

import difflib
from typing import Callable, Iterable, Optional

from pydantic import BaseModel, ConfigDict, ValidationError


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


class StrictModel(BaseModel):
    """Base of every settings section a user writes: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


SectionLookup = Callable[[list[str]], Optional[type[BaseModel]]]


def explain_validation_error(error: ValidationError, prefix: list[str], section_at: SectionLookup,
                             extra_hints: Optional[dict[str, str]] = None) -> list[str]:
    """One message per pydantic error: the dotted field (``prefix`` + location), what is wrong and the value
    given; for an unknown key, the closest valid key and every valid key of that section (``section_at(location)``
    returns the section model for a location, or None). ``extra_hints`` replaces "did you mean" for some keys."""
    messages = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        field = ".".join([*prefix, *location]) or "(top level)"
        if item["type"] == "extra_forbidden":
            section = section_at(location[:-1])
            choices = list(section.model_fields) if section else []
            hint = (extra_hints or {}).get(location[-1]) or did_you_mean(location[-1], choices)
            valid = f" Valid keys here: {', '.join(choices)}." if choices else ""
            messages.append(f'unknown key "{field}".{hint}{valid}')
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = "" if isinstance(item.get("input"), dict) else f" (got {_short_repr(item.get('input'))})"
            messages.append(f"{field}: {message}{shown}" if location or prefix else message)
    return messages


def _short_repr(value: object, limit: int = 80) -> str:
    """repr() cut to ``limit`` characters, so a huge input never floods a message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
