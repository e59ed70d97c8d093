"""The document model (``cnnlab.report.blocks``) as one self-contained HTML page: figures embedded as data
URIs, no script, every text escaped (class names and folder names are data), readable on a phone and on
paper.

What the page does for its reader, with HTML and CSS alone: a viewport for phones; an id and a visible
link on every heading; a table of contents; tables that scroll sideways inside their own box; figures at
their drawn size (a 2x PNG shown at half its pixels) that open full size from ``figures/``; figure rows
side by side from 1,100 px; print rules that keep headings with what follows and wrap long lines."""

from __future__ import annotations

import base64
import html
import re
import struct
from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import quote

from cnnlab.report import plots
from cnnlab.report.blocks import (
    Block, BulletList, Callout, Cell, Contents, Gallery, Heading, Image, ImageRow, Inline, KeyFigures, Link,
    Paragraph, Preformatted, Table, Thumbnail,
)

# A figure is shown at (its size in inches) x this many CSS pixels, whatever resolution it was drawn at.
CSS_PIXELS_PER_INCH = 100
MAX_ANCHOR_CHARS = 60

STYLE = """
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em;
       color: #222; line-height: 1.45; overflow-wrap: anywhere; }
body.wide { max-width: 1640px; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .2em; font-size: 1.7em; }
h2 { border-bottom: 1px solid #ddd; margin-top: 1.8em; }
h1, h2, h3, h4 { scroll-margin-top: .5em; }
a.anchor { color: #999; text-decoration: none; font-weight: normal; margin-left: .3em; font-size: .8em; }
a.anchor:hover, a.anchor:focus { color: #2e86c1; }
:target { scroll-margin-top: .5em; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: .8em 0; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; overflow-wrap: normal;
         vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
table.matrix { font-size: .8em; }
table.matrix td { text-align: right; padding: .15em .45em; min-width: 2.4em; }
table.matrix td.marked { font-weight: 600; outline: 2px solid #555; outline-offset: -2px; }
table.matrix a { color: inherit; display: block; }
td.dark, td.dark a { color: #fff; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; overflow-wrap: normal; }
figure { margin: .8em 0; min-width: 0; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: .85em; color: #555; }
.row { display: grid; grid-template-columns: minmax(0, 1fr); gap: 1em; align-items: start; }
@media (min-width: 1100px) { .row { grid-template-columns: repeat(2, minmax(0, 1fr)); } }
.callout { padding: .8em 1em; border-radius: 4px; margin: 1em 0; }
.warning { background: #fdecea; border-left: 6px solid #c0392b; }
.note { background: #eef5fb; border-left: 6px solid #2e86c1; }
.headline { display: flex; flex-wrap: wrap; gap: .6em; margin: 1em 0; padding: 0; }
.headline div { flex: 1 1 auto; border: 1px solid #ddd; border-radius: 6px; padding: .35em .8em; min-width: 8em; }
.headline dt { font-size: .8em; color: #555; }
.headline dd { margin: 0; font-size: 1.3em; font-weight: 600; }
nav.toc { background: #f8f8f8; border: 1px solid #e3e3e3; border-radius: 6px; padding: .5em 1em; }
nav.toc > ol { columns: 2 18em; column-gap: 2em; margin: .3em 0; padding-left: 1.2em; }
nav.toc li { break-inside: avoid; }
nav.toc ol ol { font-size: .9em; padding-left: 1.1em; }
.gallery { display: flex; flex-wrap: wrap; gap: .6em; }
.gallery figure { margin: 0; flex: 0 0 auto; }
.gallery img { display: block; max-width: none; image-rendering: pixelated; border: 1px solid #ccc; }
.gallery figcaption { font-size: .75em; }
@media (max-width: 600px) {
  body { padding: 0 .6em; margin: .8em auto; }
  h1 { font-size: 1.4em; }
  .headline { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .headline div { min-width: 0; }
  .headline dd { font-size: 1.05em; }
}
@media print {
  body { max-width: none; margin: 0; }
  h1, h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  figure, tr, .headline div, .gallery figure { break-inside: avoid; page-break-inside: avoid; }
  pre { white-space: pre-wrap; overflow-wrap: anywhere; overflow: visible; }
  .table-wrap { overflow: visible; }
  a.anchor { display: none; }
  nav.toc { break-after: page; }
}
"""


@dataclass
class _Anchor:
    text: str
    level: int
    anchor: str
    listed: bool


def render_html(blocks: Sequence[Block], title: str, images: Mapping[str, bytes], wide: bool = False) -> str:
    """A standalone page; ``images`` maps each Image path to its PNG (or SVG) bytes. Every text is escaped,
    and text that is not valid Unicode (undecodable folder names) is shown escaped. ``wide`` widens the page
    for side-by-side comparisons."""
    anchors = assign_anchors(blocks)
    heading_anchors = iter(anchors)
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(_html_heading(next(heading_anchors)))
        elif isinstance(block, Contents):
            parts.append(_html_contents(anchors))
        else:
            parts.append(_html_block(block, images))
    body = plots.unicode_safe("\n".join(parts))
    body_class = ' class="wide"' if wide else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(plots.unicode_safe(title))}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body{body_class}>\n{body}\n</body>\n</html>\n"
    )


def anchor_slug(text: str) -> str:
    """An id made of lower-case letters, digits and hyphens from heading text ("section" when none is left)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:MAX_ANCHOR_CHARS].strip("-")
    return slug or "section"


def assign_anchors(blocks: Sequence[Block]) -> list[_Anchor]:
    """One unique id per heading, in page order: a heading's own ``anchor`` as given, the others made from
    their text with -2, -3, ... when taken."""
    headings = [block for block in blocks if isinstance(block, Heading)]
    taken = {heading.anchor for heading in headings if heading.anchor}
    if len(taken) < sum(1 for heading in headings if heading.anchor):
        raise ValueError("two headings of one page ask for the same anchor")
    result = []
    for heading in headings:
        anchor = heading.anchor
        if not anchor:
            base = anchor = anchor_slug(heading.text)
            number = 2
            while anchor in taken:
                anchor, number = f"{base}-{number}", number + 1
            taken.add(anchor)
        result.append(_Anchor(heading.text, heading.level, anchor, heading.listed))
    return result


def _html_heading(anchor: _Anchor) -> str:
    level, target = anchor.level, html.escape(anchor.anchor)
    return (f'<h{level} id="{target}">{html.escape(anchor.text)}<a class="anchor" href="#{target}" '
            f'aria-label="Link to this section">#</a></h{level}>')


def _html_contents(anchors: list[_Anchor]) -> str:
    """The listed headings of levels 2 and 3 as nested ordered lists."""
    sections: list[tuple[_Anchor, list[_Anchor]]] = []
    for anchor in anchors:
        if anchor.listed and anchor.level == 2:
            sections.append((anchor, []))
        elif anchor.listed and anchor.level == 3 and sections:
            sections[-1][1].append(anchor)
    items = []
    for section, subsections in sections:
        nested = "".join(f"<li>{_contents_link(sub)}</li>" for sub in subsections)
        items.append(f"<li>{_contents_link(section)}" + (f"<ol>{nested}</ol>" if nested else "") + "</li>")
    return f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{"".join(items)}</ol></nav>'


def _contents_link(anchor: _Anchor) -> str:
    return f'<a href="#{html.escape(anchor.anchor)}">{html.escape(anchor.text)}</a>'


def _html_block(block: Block, images: Mapping[str, bytes]) -> str:
    escape = html.escape
    if isinstance(block, Paragraph):
        return f"<p>{inline_html(block.text)}</p>"
    if isinstance(block, Callout):
        kind = "warning" if block.kind == "warning" else "note"
        return f'<div class="callout {kind}">{escape(block.text)}</div>'
    if isinstance(block, BulletList):
        tag = "ol" if block.ordered else "ul"
        return f"<{tag}>" + "".join(f"<li>{inline_html(item)}</li>" for item in block.items) + f"</{tag}>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Image):
        return _html_image(block, images)
    if isinstance(block, ImageRow):
        return '<div class="row">' + "".join(_html_image(image, images) if isinstance(image, Image)
                                            else _html_block(image, images) for image in block.images) + "</div>"
    if isinstance(block, Preformatted):
        return f"<pre>{escape(block.text.rstrip())}</pre>"
    if isinstance(block, KeyFigures):
        cells = "".join(f"<div><dt>{escape(label)}</dt><dd>{escape(value)}</dd></div>" for label, value in block.items)
        return f'<dl class="headline">{cells}</dl>'
    if isinstance(block, Gallery):
        return '<div class="gallery">' + "".join(_html_thumbnail(item) for item in block.items) + "</div>"
    raise TypeError(f"unknown block {type(block).__name__}")


def inline_html(content: Inline) -> str:
    """Text escaped; a Link as an <a> whose href is percent-encoded (a folder name can never become a
    scheme such as javascript:) and then escaped."""
    if isinstance(content, list):
        return "".join(inline_html(part) for part in content)
    if isinstance(content, Link):
        return f'<a href="{html.escape(link_target(content.href))}">{html.escape(content.text)}</a>'
    return html.escape(str(content))


def link_target(href: str) -> str:
    """``href`` percent-encoded: a fragment keeps its ``#``, a path its ``/``; ``:`` is always encoded."""
    if href.startswith("#"):
        return "#" + quote(href[1:], safe="-_.", errors="surrogateescape")
    return quote(href, safe="/-_.~", errors="surrogateescape")


def _html_table(table: Table) -> str:
    escape = html.escape
    head = ""
    if table.groups:
        head = "<tr>" + "".join(f'<th colspan="{span}">{escape(label)}</th>' for label, span in table.groups) + "</tr>"
    head += "<tr>" + "".join(f'<th scope="col">{escape(str(name))}</th>' for name in table.headers) + "</tr>"
    body = "".join("<tr>" + "".join(_html_cell(cell, table.row_headers and number == 0)
                                    for number, cell in enumerate(row)) + "</tr>" for row in table.rows)
    kind = f' class="{escape(table.kind)}"' if table.kind else ""
    return f'<div class="table-wrap"><table{kind}><thead>{head}</thead><tbody>{body}</tbody></table></div>'


def _html_cell(cell: Inline | Cell, header: bool) -> str:
    if header:
        return f'<th scope="row">{inline_html(cell.content if isinstance(cell, Cell) else cell)}</th>'
    if not isinstance(cell, Cell):
        return f"<td>{inline_html(cell)}</td>"
    classes = ["marked"] if cell.marked else []
    style = ""
    if cell.shade:
        shade = min(max(float(cell.shade), 0.0), 1.0)
        # a blue of the figures' "Blues" colour map, stronger with the value; white text on the dark end
        style = f' style="background-color: rgba(33, 102, 172, {shade:.3f})"'
        classes += ["dark"] if shade > 0.55 else []
    class_attribute = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{class_attribute}{style}>{inline_html(cell.content)}</td>"


def _html_image(image: Image, images: Mapping[str, bytes]) -> str:
    caption = html.escape(image.caption)
    data = images.get(image.path)
    if data is None:
        return f"<figure><figcaption>{caption} (figure missing)</figcaption></figure>"
    svg = image.path.lower().endswith(".svg")
    kind = "image/svg+xml" if svg else "image/png"
    size = "" if svg else _size_attributes(data)
    encoded = base64.b64encode(data).decode("ascii")
    target = html.escape(link_target(image.path))
    return (f'<figure><a href="{target}" title="Open the figure full size">'
            f'<img src="data:{kind};base64,{encoded}" alt="{caption}"{size}></a>'
            f"<figcaption>{caption}</figcaption></figure>")


def _html_thumbnail(item: Thumbnail) -> str:
    encoded = base64.b64encode(item.png).decode("ascii")
    caption = html.escape(item.caption)
    return (f'<figure style="width: {item.width + 2}px"><img src="data:image/png;base64,{encoded}" '
            f'alt="{caption}" width="{item.width}" '
            f'height="{item.height}"><figcaption>{caption}</figcaption></figure>')


def png_display_size(png: bytes) -> tuple[int, int] | None:
    """The CSS size of a PNG figure: its pixels scaled by ``CSS_PIXELS_PER_INCH`` / its resolution (the pHYs
    chunk matplotlib writes; 100 dpi when absent), so a figure drawn at 2x shows at its drawn size, sharp."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", png[16:24])
    dots_per_inch = 100.0
    position = png.find(b"pHYs", 8, 4096)
    if position >= 0 and len(png) >= position + 13:
        per_metre, _, unit = struct.unpack(">IIB", png[position + 4:position + 13])
        if unit == 1 and per_metre > 0:
            dots_per_inch = per_metre * 0.0254
    scale = CSS_PIXELS_PER_INCH / dots_per_inch
    return max(1, round(width * scale)), max(1, round(height * scale))


def _size_attributes(png: bytes) -> str:
    size = png_display_size(png)
    return "" if size is None else f' width="{size[0]}" height="{size[1]}"'
