"""Class names and other data as figure text: the one place that makes them safe and short.

Class names, run labels and captions are data (a user's folder names), never markup. Every text that
reaches matplotlib goes through ``plain_text``: its ``$`` is escaped (matplotlib would start math text at a
``$`` pair, and a lone ``\\frac`` could raise while the report is drawn), bytes a file system could not decode
and control characters are shown as ``\\xNN`` escapes (two names that differ only there stay distinct), and
each line is cut to a number of characters. ``fit_text`` goes further and cuts a text to a width in points,
measured with the same font metrics matplotlib draws with, so a caption or tick label of a 60-character class
name ends in an ellipsis inside its cell instead of running over its neighbours. Tables keep the full names.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Sequence

from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.font_manager import FontProperties

# Longest line of data text drawn in a figure before any measuring; longer names are cut with an ellipsis.
MAX_LABEL_CHARS = 40
MAX_LINE_CHARS = 80
ELLIPSIS = "\u2026"
# The smallest font any figure uses, in points at the figure's displayed size (plots.DISPLAY_DPI).
MIN_FONT_PT = 9.0
# Figures are laid out and drawn at this many pixels per inch (and saved at twice it): text is measured at it,
# with its hinting, so a measured width is the drawn one (the saved one, less hinted, is as wide or narrower).
LAYOUT_DPI = 100
WIDTH_MARGIN = 0.98  # the share of the room a cut text may fill


def unicode_safe(text: object) -> str:
    """``text`` encodable as UTF-8: bytes a file system could not decode (surrogate escapes) become
    ``\\xNN``, so a folder name that is not UTF-8 is shown instead of crashing a write."""
    text = str(text)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def plain_text(text: object, max_chars: int = MAX_LINE_CHARS) -> str:
    """Data as figure text: shown literally (``$`` escaped, so never math text), undecodable bytes and
    control characters as escapes, each line cut to ``max_chars``. The one way data reaches a figure."""
    lines = []
    for line in unicode_safe(text).split("\n"):
        line = "".join(char if unicodedata.category(char) != "Cc" else f"\\x{ord(char):02x}" for char in line)
        lines.append(_escape_math(_cut(line, max_chars)))
    return "\n".join(lines)


def plain_labels(names: Sequence[object], max_chars: int = MAX_LABEL_CHARS) -> list[str]:
    """``plain_text`` of each name (tick labels, legends); a leading "_" is kept visible (matplotlib
    would hide such a legend entry)."""
    return [(" " if str(name).startswith("_") else "") + plain_text(name, max_chars) for name in names]


def text_width_pt(text: str, font_pt: float) -> float:
    """Width in points of one line of figure text (already ``plain_text``: an escaped ``\\$`` is drawn as
    one ``$``) at ``font_pt``, with matplotlib's own font and metrics."""
    return _measure(text.replace(r"\$", "$"), float(font_pt))


def fit_text(text: object, width_pt: float, font_pt: float = MIN_FONT_PT, prefix: str = "", suffix: str = "") -> str:
    """``prefix`` + ``plain_text(text)`` + ``suffix`` on one line, the text cut with an ellipsis so the whole is
    at most ``width_pt`` wide at ``font_pt``: "true: " and a mark after the name stay readable whatever the name
    (``prefix`` and ``suffix`` are cnnlab's own words, drawn as they are)."""
    line = plain_text(str(text).replace("\n", " "), MAX_LINE_CHARS)
    limit = width_pt * WIDTH_MARGIN
    full = text_width_pt(prefix + line + suffix, font_pt)
    if full <= limit:
        return prefix + line + suffix
    raw = _unescape_math(line)
    # a first guess from the share of the width that fits, then one character at a time
    keep = max(0, min(int(len(raw) * limit / max(full, 1e-9)), len(raw) - 1))
    while True:
        candidate = prefix + _escape_math(raw[:keep].rstrip()) + ELLIPSIS + suffix
        if keep == 0 or text_width_pt(candidate, font_pt) <= limit:
            return candidate
        keep -= 1


def fit_labels(names: Sequence[object], width_pt: float, font_pt: float = MIN_FONT_PT) -> list[str]:
    """Tick labels: each name ``fit_text`` to ``width_pt``, a leading "_" kept visible as in ``plain_labels``."""
    return [(" " if str(name).startswith("_") else "") + fit_text(name, width_pt, font_pt) for name in names]


def widest_pt(labels: Sequence[str], font_pt: float = MIN_FONT_PT) -> float:
    """The width in points of the widest of ``labels`` (0 for none)."""
    return max((text_width_pt(label, font_pt) for label in labels), default=0.0)


def _cut(line: str, max_chars: int) -> str:
    return line[:max_chars - 1] + ELLIPSIS if len(line) > max_chars else line


def _escape_math(line: str) -> str:
    return line.replace("$", r"\$")


def _unescape_math(line: str) -> str:
    return line.replace(r"\$", "$")


@lru_cache(maxsize=1)
def _renderer() -> RendererAgg:
    return RendererAgg(1, 1, LAYOUT_DPI)


@lru_cache(maxsize=8192)
def _measure(text: str, font_pt: float) -> float:
    width, _, _ = _renderer().get_text_width_height_descent(text, FontProperties(size=font_pt), ismath=False)
    return float(width) * 72 / LAYOUT_DPI
