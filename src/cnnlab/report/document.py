"""A report as a list of plain blocks (``cnnlab.report.blocks``), rendered to Markdown here and to one
self-contained HTML file by ``cnnlab.report.html_page`` (figures embedded as data URIs, every text escaped);
the figure writer and number formats the reports share. The blocks and ``render_html`` are importable from
here, the one module reports need."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from cnnlab.report import plots
from cnnlab.report.blocks import (
    Block, BulletList, Callout, Cell, Contents, Gallery, Heading, Image, ImageRow, Inline, KeyFigures, Link,
    Paragraph, Preformatted, Table, Thumbnail,
)
from cnnlab.report.figure_writer import FigureWriter
from cnnlab.report.html_page import link_target, render_html

__all__ = ["Block", "BulletList", "Callout", "Cell", "Contents", "FigureWriter", "Gallery", "Heading", "Image",
           "ImageRow", "Inline", "KeyFigures", "Link", "Paragraph", "Preformatted", "Table", "Thumbnail",
           "format_integer", "format_number", "format_percent", "format_probability", "format_seconds",
           "format_value", "markdown_text", "render_html", "render_markdown"]


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown; text that is not valid Unicode (undecodable folder names) shown escaped. The
    table of contents is the HTML page's alone (Markdown viewers make their own)."""
    parts = [text for text in (_markdown_block(block) for block in blocks) if text]
    return plots.unicode_safe("\n\n".join(parts) + "\n")


def _markdown_block(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + markdown_text(block.text)
    if isinstance(block, Paragraph):
        return markdown_inline(block.text)
    if isinstance(block, Callout):
        label = "Warning" if block.kind == "warning" else "Note"
        return f"> **{label}:** {markdown_text(block.text)}"
    if isinstance(block, BulletList):
        marks = [f"{i}." if block.ordered else "-" for i in range(1, len(block.items) + 1)]
        return "\n".join(f"{mark} {markdown_inline(item)}" for mark, item in zip(marks, block.items))
    if isinstance(block, Table):
        return _markdown_table(block)
    if isinstance(block, Image):
        return f"![{markdown_text(block.caption)}]({block.path})"
    if isinstance(block, ImageRow):
        return "\n\n".join(_markdown_block(image) for image in block.images)
    if isinstance(block, Preformatted):
        fence = "````" if "```" in block.text else "```"
        return f"{fence}\n{block.text.rstrip()}\n{fence}"
    if isinstance(block, KeyFigures):
        return " · ".join(f"**{markdown_text(label)}:** {markdown_text(value)}" for label, value in block.items)
    if isinstance(block, Contents):
        return ""
    if isinstance(block, Gallery):
        return "Images (in report.html): " + "; ".join(markdown_text(item.caption) for item in block.items)
    raise TypeError(f"unknown block {type(block).__name__}")


def _markdown_table(table: Table) -> str:
    headers = list(table.headers)
    if table.groups:
        # Markdown has one header row: prefix each grouped column with its group's label.
        labels = [label for label, span in table.groups for _ in range(span)]
        headers = [f"{label} {name}".strip() for label, name in zip(labels, headers)]
    lines = ["| " + " | ".join(markdown_text(cell) for cell in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(markdown_inline(cell.content if isinstance(cell, Cell) else cell)
                                        for cell in row) + " |")
    return "\n".join(lines)


# Enough to stop links, images, code spans, emphasis with * and table breaks; intraword _ stays readable.
MARKDOWN_SPECIAL = "\\`*[]|"


def markdown_text(text: object) -> str:
    """Text safe in a Markdown line or table cell: no raw HTML, no links, emphasis or cell breaks
    (class names come from a user's folder names)."""
    value = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = "".join("\\" + char if char in MARKDOWN_SPECIAL else char for char in value)
    return value.replace("\n", " ")


def markdown_inline(content: Inline) -> str:
    """Inline content as Markdown: a link to another file as a link (its path percent-encoded), a link
    within the page as its text alone (Markdown headings carry no ids of ours)."""
    if isinstance(content, list):
        return "".join(markdown_inline(part) for part in content)
    if isinstance(content, Link):
        if content.href.startswith("#"):
            return markdown_text(content.text)
        return f"[{markdown_text(content.text)}]({link_target(content.href)})"
    return markdown_text(content)


def format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def format_percent(fraction: Any) -> str:
    return "n/a" if fraction is None else f"{100 * float(fraction):.2f}%"


def format_probability(value: Any) -> str:
    """0.123 as "0.123"; below 0.001 in scientific notation, so confident errors still rank visibly."""
    if value is None:
        return "n/a"
    value = float(value)
    return f"{value:.3f}" if value >= 1e-3 or value == 0 else f"{value:.1e}"


def format_number(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def format_integer(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def format_seconds(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f} s"
