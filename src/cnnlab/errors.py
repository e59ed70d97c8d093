"""Errors a user can cause. The CLI catches these once and prints the message alone."""

from __future__ import annotations

import difflib
import os
from typing import Any, Callable, Iterable, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError


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


class TrainingInterrupted(CnnlabError):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint; ``run_dir`` can be resumed."""

    def __init__(self, message: str, run_dir: object = None, signal_number: int = 2):
        super().__init__(message)
        self.run_dir = run_dir
        self.signal_number = signal_number


MAX_SHOWN_CHARACTERS = 80  # a user's value quoted in a message is cut to this
MAX_SUGGESTED_WORD = 64  # "did you mean" compares words up to this long (difflib is quadratic in their length)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the closest choice, or '' when none is close (or ``word`` is too long to
    be a misspelling of one)."""
    if len(word) > MAX_SUGGESTED_WORD:
        return ""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' Did you mean "{matches[0]}"?' if matches else ""


def shorten(text: str, limit: int = MAX_SHOWN_CHARACTERS) -> str:
    """``text`` cut to ``limit`` characters (ending in "..." when cut), so a huge input never floods a message."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short_repr(value: object, limit: int = MAX_SHOWN_CHARACTERS) -> str:
    """repr() cut to ``limit`` characters; an integer too long to print whole is described by its length."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, (str, bytes)) and len(value) > limit:
        value = value[:limit]  # repr() of the whole would copy all of it
    return shorten(repr(value), limit)


class StrictModel(BaseModel):
    """Base of every settings section a user writes: unknown keys are errors, assignments are validated,
    numbers are finite and typed as written (``true`` is not 1, "3" is not 3; an integer is a valid float).
    Tuple fields are annotated ``Annotated[tuple[...], TUPLE_FROM_LIST]`` so that YAML lists reach them."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


def _tuple_from_list(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# A YAML list given where a strict section wants a tuple: the items are still validated strictly.
TUPLE_FROM_LIST = BeforeValidator(_tuple_from_list)


def physical_memory_bytes() -> int:
    """This machine's memory in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def require_memory(n_bytes: int, what: str, remedy: str, error: type[CnnlabError] = ConfigError) -> None:
    """Raise ``error`` before allocating when ``n_bytes`` (an estimate for ``what``) exceed this machine's
    memory; the message gives both sizes and ``remedy`` (what to change)."""
    available = physical_memory_bytes()
    if available and n_bytes > available:
        raise error(f"{what} needs about {_gibibytes(n_bytes)} of memory, more than this machine's "
                    f"{_gibibytes(available)}. {remedy}")


def _gibibytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.1f} MiB"


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
            messages.append(f'unknown key "{shorten(field)}".{hint}{valid}')
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = "" if isinstance(item.get("input"), dict) else f" (got {short_repr(item.get('input'))})"
            messages.append(f"{shorten(field)}: {shorten(message, 400)}{shown}" if location or prefix else message)
    return messages
