"""A report as a list of plain blocks, rendered to Markdown and to one self-contained
HTML file (figures embedded as base64 data URIs, every text escaped); the figure
writer and number formats the reports share."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from cnnlab import runs
from cnnlab.report import plots


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Callout:
    """A boxed message; ``kind`` is "warning" or "note"."""

    text: str
    kind: str = "note"


@dataclass
class BulletList:
    items: list[str]
    ordered: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    # Optional (label, span) pairs drawn as a header row above ``headers``.
    groups: list[tuple[str, int]] = field(default_factory=list)


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


Block = Union[Heading, Paragraph, Callout, BulletList, Table, Image, ImageRow, Preformatted]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
figure { margin: .8em 0; display: inline-block; vertical-align: top; }
figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; }
.row { display: flex; flex-wrap: wrap; gap: 1em; }
.callout { padding: .8em 1em; border-radius: 4px; margin: 1em 0; }
.warning { background: #fdecea; border-left: 6px solid #c0392b; }
.note { background: #eef5fb; border-left: 6px solid #2e86c1; }
"""


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown; text that is not valid Unicode (undecodable folder names) shown escaped."""
    parts = [_markdown_block(block) for block in blocks]
    return plots.unicode_safe("\n\n".join(parts) + "\n")


def _markdown_block(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + markdown_text(block.text)
    if isinstance(block, Paragraph):
        return markdown_text(block.text)
    if isinstance(block, Callout):
        label = "Warning" if block.kind == "warning" else "Note"
        return f"> **{label}:** {markdown_text(block.text)}"
    if isinstance(block, BulletList):
        marks = [f"{i}." if block.ordered else "-" for i in range(1, len(block.items) + 1)]
        return "\n".join(f"{mark} {markdown_text(item)}" for mark, item in zip(marks, block.items))
    if isinstance(block, Table):
        return _markdown_table(block)
    if isinstance(block, Image):
        return f"![{markdown_text(block.caption)}]({block.path})"
    if isinstance(block, ImageRow):
        return "\n\n".join(_markdown_block(image) for image in block.images)
    if isinstance(block, Preformatted):
        fence = "````" if "```" in block.text else "```"
        return f"{fence}\n{block.text.rstrip()}\n{fence}"
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
        lines.append("| " + " | ".join(markdown_text(cell) for cell in row) + " |")
    return "\n".join(lines)


# Enough to stop links, images, code spans, emphasis with * and table breaks; intraword _ stays readable.
MARKDOWN_SPECIAL = "\\`*[]|"


def markdown_text(text: object) -> str:
    """Text safe in a Markdown line or table cell: no raw HTML, no links, emphasis or cell breaks
    (class names come from a user's folder names)."""
    value = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = "".join("\\" + char if char in MARKDOWN_SPECIAL else char for char in value)
    return value.replace("\n", " ")


def render_html(blocks: Sequence[Block], title: str, images: Mapping[str, bytes]) -> str:
    """A standalone page; ``images`` maps each Image path to its PNG bytes. Every text is escaped, and
    text that is not valid Unicode (undecodable folder names) is shown escaped."""
    body = plots.unicode_safe("\n".join(_html_block(block, images) for block in blocks))
    title = plots.unicode_safe(title)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: Block, images: Mapping[str, bytes]) -> str:
    escape = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Callout):
        kind = "warning" if block.kind == "warning" else "note"
        return f'<div class="callout {kind}">{escape(block.text)}</div>'
    if isinstance(block, BulletList):
        tag = "ol" if block.ordered else "ul"
        items = "".join(f"<li>{escape(item)}</li>" for item in block.items)
        return f"<{tag}>{items}</{tag}>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Image):
        return _html_image(block, images)
    if isinstance(block, ImageRow):
        return '<div class="row">' + "".join(_html_image(image, images) if isinstance(image, Image)
                                            else _html_block(image, images) for image in block.images) + "</div>"
    if isinstance(block, Preformatted):
        return f"<pre>{escape(block.text.rstrip())}</pre>"
    raise TypeError(f"unknown block {type(block).__name__}")


def _html_table(table: Table) -> str:
    escape = html.escape
    head = ""
    if table.groups:
        head = "<tr>" + "".join(f'<th colspan="{span}">{escape(label)}</th>' for label, span in table.groups) + "</tr>"
    head += "<tr>" + "".join(f"<th>{escape(str(name))}</th>" for name in table.headers) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in table.rows)
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _html_image(image: Image, images: Mapping[str, bytes]) -> str:
    caption = html.escape(image.caption)
    png = images.get(image.path)
    if png is None:
        return f"<figure><figcaption>{caption} (figure missing)</figcaption></figure>"
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


class FigureWriter:
    """Saves figures under ``<folder>/figures`` and keeps their bytes for the HTML."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pngs: dict[str, bytes] = {}
        self.failures: list[str] = []  # names of the figures that could not be drawn

    def add(self, name: str, figure: Any, caption: str) -> Union[Image, Callout]:
        """Save ``figure`` (a Figure, or a function that draws one) as figures/<name>.png and return its
        Image block. A figure that cannot be drawn never stops a report: it becomes a Callout naming the
        figure and the error (writing the file may still fail, with the file named, as every write does)."""
        path = f"{runs.FIGURES_DIR}/{name}.png"
        try:
            png = plots.figure_to_png(figure() if callable(figure) else figure)
        except Exception as error:  # noqa: BLE001 - any drawing failure, by design: the report goes on
            self.failures.append(name)
            detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            return Callout(f"The figure \"{name}\" ({caption}) could not be drawn: {type(error).__name__}"
                           f"{': ' + detail if detail else ''}. The rest of the report is complete.", "warning")
        runs.write_bytes_atomic(self.folder / path, png)
        self.pngs[path] = png
        return Image(path, caption)


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
