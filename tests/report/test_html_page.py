"""The HTML page's structure without a browser: a viewport, unique ids, a table of contents whose links
resolve, tables in scrolling boxes, figures linked full size, confusion cells linked to their galleries,
links to the runs' reports, no script and every text escaped. (tests/report/test_browser.py renders the
same pages in Chromium.)"""

from __future__ import annotations

import io
import os
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from matplotlib.figure import Figure

from cnnlab import runs
from cnnlab.analysis.interpretation import Interpretation
from cnnlab.report.comparison import write_comparison
from cnnlab.report.confusion_gallery import GALLERY_BYTES, PER_PAIR, gallery_indices, pair_members
from cnnlab.report.document import (
    Callout, Cell, Contents, Gallery, Heading, Image, ImageRow, KeyFigures, Link, Paragraph, Preformatted, Table,
    Thumbnail, render_html, render_markdown,
)
from cnnlab.report.html_page import anchor_slug, link_target, png_display_size
from cnnlab.report.run_report import write_report
from cnnlab.report.seeds_report import write_seeds_report

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the run-folder builder beside this file
from gallery_runs import interpretation_of, make_gallery_run, make_seeds_folder  # noqa: E402

HOSTILE = "<script>alert(1)</script>"
LONG_NAME = "a_very_long_class_name_that_goes_on_and_on_" + "x" * 17  # 60 characters
NAMES = ["zero", HOSTILE, "$x$", LONG_NAME]


class Page(HTMLParser):
    """Every element of a page with its attributes and the tags of its ancestors."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str], tuple[str, ...]]] = []
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.text_parts: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        ancestors = tuple(f"{name}.{parent.get('class', '')}" for name, parent in self.stack)
        self.elements.append((tag, attributes, ancestors))
        if tag not in self.VOID:
            self.stack.append((tag, attributes))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        self.text_parts.append(data)

    def tags(self, tag: str) -> list[tuple[dict[str, str], tuple[str, ...]]]:
        return [(attributes, ancestors) for name, attributes, ancestors in self.elements if name == tag]

    def ids(self) -> list[str]:
        return [attributes["id"] for _, attributes, _ in self.elements if "id" in attributes]

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def check_page(text: str, folder: Path | None = None) -> Page:
    """The promises every page keeps; returns the parsed page for more checks."""
    page = Page(text)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert "<script" not in text.lower()
    assert not any(name.startswith("on") for _, attributes, _ in page.elements for name in attributes)  # onclick=
    ids = page.ids()
    assert len(ids) == len(set(ids)), "ids are unique"
    for attributes, _ in page.tags("a"):
        href = attributes["href"]
        assert not href.lower().startswith(("javascript:", "data:")), href
        if href.startswith("#"):
            assert unquote(href[1:]) in ids, f"{href} has no target"
        elif folder is not None and "://" not in href:
            assert (folder / unquote(href)).exists(), f"{href} does not exist beside the page"
    for tag in ("h1", "h2", "h3", "h4"):
        for attributes, _ in page.tags(tag):
            assert attributes.get("id"), f"a {tag} without an id"
    for _, ancestors in page.tags("table"):
        assert ancestors and ancestors[-1] == "div.table-wrap", "a table outside its scrolling box"
    for attributes, ancestors in page.tags("img"):
        assert attributes["src"].startswith("data:image/"), "images are embedded"
    return page


def test_document_renders_anchors_contents_and_boxes():
    png = _png(2.0, 1.0, dots_per_inch=200)
    blocks = [Heading("Title", 1), KeyFigures([("Test accuracy", "97.00%"), ("Model", HOSTILE)]), Contents(),
              Heading("Results"), Paragraph(["See ", Link("the other run", "../b c/report.html"), "."]),
              Table(["name", "value"], [[HOSTILE, Cell("3", shade=0.8, marked=True)]], row_headers=True),
              Heading("Results"), Heading("Detail", 3), ImageRow([Image("figures/a.png", "A figure"),
                                                                   Callout("could not be drawn", "warning")]),
              Heading("Pair", 3, anchor="pair-1-2", listed=False), Gallery([Thumbnail(png, "#1", 64, 64)]),
              Preformatted("x" * 300)]
    text = render_html(blocks, f"title {HOSTILE}", {"figures/a.png": png}, wide=True)
    page = check_page(text)
    assert page.ids() == ["title", "results", "results-2", "detail", "pair-1-2"]
    contents = [attributes["href"] for attributes, ancestors in page.tags("a") if "nav.toc" in ancestors]
    assert contents == ["#results", "#results-2", "#detail"]  # an unlisted heading stays out
    assert [attributes["href"] for attributes, ancestors in page.tags("a") if "h2." in ancestors] == [
        "#results", "#results-2"]  # each heading links to itself
    assert '<a href="../b%20c/report.html">the other run</a>' in text
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert '<body class="wide">' in text and "@media print" in text and "white-space: pre-wrap" in text
    figure_links = [attributes["href"] for attributes, ancestors in page.tags("a") if "figure." in ancestors]
    assert figure_links == ["figures/a.png"]  # opens full size
    image = next(attributes for attributes, ancestors in page.tags("img") if "a." in ancestors)
    assert (image["width"], image["height"]) == ("200", "100")  # a 2x figure shown at its drawn size
    cell = next(attributes for attributes, _ in page.tags("td"))
    assert cell["class"] == "marked dark" and "rgba(33, 102, 172, 0.800)" in cell["style"]
    assert [attributes.get("scope") for attributes, _ in page.tags("th")][-1] == "row"


def test_markdown_keeps_links_to_files_and_drops_page_only_parts():
    blocks = [Heading("Title", 1), KeyFigures([("Test accuracy", "97.00%")]), Contents(),
              Paragraph([Link("report", "01-mlp/report.html"), " and ", Link("a pair", "#pair-1-2")]),
              Table(["a"], [[Cell(Link("[x]", "#pair-0-1"))]]), Gallery([Thumbnail(b"", "#4: 0.9", 8, 8)])]
    markdown = render_markdown(blocks)
    assert "**Test accuracy:** 97.00%" in markdown and "Contents" not in markdown
    assert "[report](01-mlp/report.html) and a pair" in markdown
    assert "| \\[x\\] |" in markdown and "Images (in report.html): #4: 0.9" in markdown


def test_links_and_anchors_cannot_carry_markup_or_schemes():
    assert link_target("javascript:alert(1)") == "javascript%3Aalert%281%29"
    assert link_target("#pair-1-2") == "#pair-1-2"
    assert link_target('../x"y/report.html') == "../x%22y/report.html"
    assert link_target("caf\udce9/report.html") == "caf%E9/report.html"  # an undecodable folder name
    assert anchor_slug(HOSTILE) == "script-alert-1-script" and anchor_slug("日本") == "section"
    assert len(anchor_slug(LONG_NAME * 3)) <= 60
    with pytest.raises(ValueError, match="same anchor"):
        render_html([Heading("a", anchor="x"), Heading("b", anchor="x")], "t", {})


def test_png_display_size_reads_the_resolution():
    assert png_display_size(_png(3.0, 2.0, dots_per_inch=200)) == (300, 200)
    assert png_display_size(_png(3.0, 2.0, dots_per_inch=100)) == (300, 200)
    assert png_display_size(b"not a png") is None


def test_gallery_indices_are_bounded_per_pair_and_in_bytes():
    interpretation = interpretation_of(n=3000, n_classes=4)
    members = pair_members(interpretation)
    for (true_class, predicted_class), indices in members.items():
        assert true_class != predicted_class
        assert np.all(interpretation.labels[indices] == true_class)
        assert np.all(interpretation.predictions[indices] == predicted_class)
        assert np.all(np.diff(interpretation.p_pred[indices]) <= 0), "most confident errors first"
    wrong = np.flatnonzero(interpretation.predictions != interpretation.labels)
    assert sorted(np.concatenate(list(members.values()))) == sorted(wrong)
    chosen = gallery_indices(interpretation, image_bytes=64)
    expected = np.unique(np.concatenate([indices[:PER_PAIR] for indices in members.values()]))
    np.testing.assert_array_equal(chosen, expected)
    large = gallery_indices(interpretation, image_bytes=GALLERY_BYTES // 20)  # room for 20 images
    assert len(large) == 20 and set(large) <= set(chosen)
    perfect = Interpretation.from_arrays(np.eye(3), [0, 1, 2], ["a", "b", "c"])
    assert gallery_indices(perfect, 64).size == 0


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    return make_gallery_run(tmp_path_factory.mktemp("hostile") / "run", NAMES)


def test_run_report_page_links_every_confused_cell_to_its_gallery(hostile_run):
    _, html_path = write_report(hostile_run)
    text = html_path.read_text()
    page = check_page(text, hostile_run)
    interpretation = Interpretation.from_run(hostile_run)
    matrix = interpretation.confusion()
    cell_links = [attributes["href"] for attributes, ancestors in page.tags("a") if "table.matrix" in ancestors]
    expected = [f"#pair-{t}-{p}" for t in range(4) for p in range(4) if t != p and matrix[t, p]]
    assert cell_links == expected and len(expected) > 6
    ids = page.ids()
    for href in expected:  # each gallery: its heading, then its thumbnails
        position = text.index(f'id="{href[1:]}"')
        gallery = text.index('<div class="gallery">', position)
        assert text.count("<img", position, gallery) == 0 and href[1:] in ids
    contents = [attributes["href"] for attributes, ancestors in page.tags("a") if "nav.toc" in ancestors]
    assert "#confusion-matrix" in contents and "#confused-pair-images" in contents
    assert not any(href.startswith("#pair-") for href in contents)
    assert text.index('class="headline"') < text.index('class="toc"') < text.index('id="headline-metrics"')
    assert HOSTILE in page.text and "$x$" in page.text and LONG_NAME in page.text  # shown as text


def test_comparison_and_suite_pages_link_the_run_reports(hostile_run, tmp_path):
    other = make_gallery_run(tmp_path / "suite" / "02-other", NAMES, seed=3)
    write_report(other)
    write_report(hostile_run)
    paths = write_comparison([hostile_run, other], tmp_path / "suite", title=f"suite {HOSTILE}",
                             description="Two runs & a description.")
    text = paths["html"].read_text()
    page = check_page(text, paths["html"].parent)
    reports = [attributes["href"] for attributes, _ in page.tags("a") if attributes["href"].endswith("report.html")]
    assert reports == [Path(os.path.relpath(hostile_run / "report.html", tmp_path / "suite")).as_posix(),
                       "02-other/report.html"]
    assert f"<title>suite {HOSTILE.replace('<', '&lt;').replace('>', '&gt;')}</title>" in text
    assert "Two runs &amp; a description." in text and '<body class="wide">' in text
    markdown = paths["md"].read_text()
    assert "[report](02-other/report.html)" in markdown
    assert "same 0 to 1 colour scale" in text


def test_seeds_page_links_each_seed_report(tmp_path):
    folder = make_seeds_folder(tmp_path / "seeds")
    names = ["seed-1", "seed-2"]
    seed_pages = [write_report(folder / name)[1] for name in names]  # in a multi-seed folder: linked up to it
    _, html_path = write_seeds_report(folder)
    page = check_page(html_path.read_text(), folder)
    assert [attributes["href"] for attributes, _ in page.tags("a")
            if attributes["href"].endswith("report.html")] == ["seed-1/report.html", "seed-2/report.html"]
    assert "50.00% ± 10.00 (2 seeds)" in page.text
    seed_page = check_page(seed_pages[0].read_text(), folder / "seed-1")
    assert "../report.html" in [attributes["href"] for attributes, _ in seed_page.tags("a")]


def _png(width_in: float, height_in: float, dots_per_inch: int) -> bytes:
    figure = Figure(figsize=(width_in, height_in))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dots_per_inch)
    return buffer.getvalue()


@pytest.mark.slow
def test_training_saves_the_images_of_every_confused_pair(tmp_path):
    from cnnlab.config import load_config
    from cnnlab.experiment import run_experiment

    run_dir = run_experiment(load_config("digits", ["train.epochs=1", "optimizer.lr=0.0002"]), out=tmp_path / "run",
                             show_progress=False)
    interpretation = Interpretation.from_run(run_dir)
    saved = set(runs.load_npz(run_dir / runs.EXAMPLES_FILE)["indices"].tolist())
    members = pair_members(interpretation)
    wanted = set(np.concatenate([indices[:PER_PAIR] for indices in members.values()]).tolist())
    assert not wanted <= set(interpretation.example_indices(50).tolist()), "the other sections do not hold them all"
    for indices in members.values():
        assert set(indices[:PER_PAIR].tolist()) <= saved
    page = check_page((run_dir / runs.REPORT_HTML_FILE).read_text(), run_dir)
    assert {attributes["id"] for attributes, _ in page.tags("h3") if attributes["id"].startswith("pair-")} == {
        f"pair-{true_class}-{predicted_class}" for true_class, predicted_class in members}
