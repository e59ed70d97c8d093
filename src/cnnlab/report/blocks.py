"""The document model every report is built from: plain blocks of text, tables, figures and links,
with no markup in them. ``cnnlab.report.document`` renders them to Markdown and ``cnnlab.report.page``
to one self-contained HTML page; every text in a block is data, escaped by the renderers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass
class Link:
    """``text`` linking to ``href``: ``"#anchor"`` within the page or a path relative to the document
    (``"../01-mlp/report.html"``). Renderers percent-encode the path, so no scheme can hide in a folder name."""

    text: str
    href: str


# Inline content of a paragraph, a list item or a table cell: text, a link, or a run of both.
Inline = Union[str, Link, list[Union[str, Link]]]


@dataclass
class Heading:
    """A section heading. Every heading gets an id and a visible link to itself in HTML: ``anchor`` when
    given (links elsewhere on the page point to it), else one made from the text. ``listed`` headings
    (levels 2 and 3) appear in the page's table of contents."""

    text: str
    level: int = 2
    anchor: str | None = None
    listed: bool = True


@dataclass
class Paragraph:
    text: Inline


@dataclass
class Callout:
    """A boxed message; ``kind`` is "warning" or "note"."""

    text: str
    kind: str = "note"


@dataclass
class BulletList:
    items: list[Inline]
    ordered: bool = False


@dataclass
class Cell:
    """A table cell with a background ``shade`` from 0 (none) to 1 (full colour), as in a heat map;
    ``marked`` outlines it (a confusion matrix's diagonal)."""

    content: Inline
    shade: float | None = None
    marked: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Union[Inline, Cell]]]
    # Optional (label, span) pairs drawn as a header row above ``headers``.
    groups: list[tuple[str, int]] = field(default_factory=list)
    row_headers: bool = False  # the first cell of each row names the row
    kind: str = ""  # a style of table, e.g. "matrix" (compact, numbers right-aligned)


@dataclass
class Image:
    """A figure by its path relative to the document, e.g. ``figures/history.png``."""

    path: str
    caption: str


@dataclass
class ImageRow:
    images: list[Union[Image, Callout]]  # a figure that could not be drawn is a Callout in its place


@dataclass
class Preformatted:
    text: str


@dataclass
class KeyFigures:
    """The headline numbers shown large at the top of a page: (label, value) pairs."""

    items: list[tuple[str, str]]


@dataclass
class Contents:
    """Where the table of contents goes: every listed heading of levels 2 and 3, linked."""


@dataclass
class Thumbnail:
    """A small image embedded in the page itself (PNG bytes), shown ``width`` x ``height`` CSS pixels."""

    png: bytes
    caption: str
    width: int
    height: int


@dataclass
class Gallery:
    """Thumbnails in a wrapping grid (the images of one confused pair, say)."""

    items: list[Thumbnail]


Block = Union[Heading, Paragraph, Callout, BulletList, Table, Image, ImageRow, Preformatted, KeyFigures, Contents,
              Gallery]
