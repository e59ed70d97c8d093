"""The reports in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright for Python)
renders a run report, a suite page and a comparison of real digits runs, a multi-seed page, and a report whose
class names are hostile and long, at 1280 px and at 390 px as a phone (which honours the viewport tag). Screenshots of every
page land in test-artifacts/browser/ (git ignores it; CI keeps it as an artefact).

Chromium is found at $CNNLAB_CHROMIUM, else `chromium` or `chromium-browser` on the PATH; the tests are skipped
without it or without the playwright package. As root, Chromium runs with --no-sandbox."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from cnnlab.bundled import bundled_suite
from cnnlab.report.comparison import compare_runs
from cnnlab.report.run_report import write_report
from cnnlab.report.seeds_report import write_seeds_report
from cnnlab.studies.suite import load_suite, run_suite

playwright_api = pytest.importorskip("playwright.sync_api")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the run-folder builder beside this file
from gallery_runs import make_gallery_run, make_seeds_folder  # noqa: E402

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (set CNNLAB_CHROMIUM)")]
ARTIFACTS = Path(os.environ.get("CNNLAB_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
WIDTHS = {"desktop": 1280, "phone": 390}
HOSTILE_NAMES = ["<script>alert(1)</script>", "$x$", "<img src=x onerror=alert(2)>", "b" * 60,
                 "a_very_long_class_name_with_underscores_that_goes_on_for_ever", "plain"]

IMAGES_DECODED = "Array.from(document.images).map(image => image.complete && image.naturalWidth > 0)"
BROKEN_LINKS = """Array.from(document.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href'))
    .filter(href => !document.getElementById(decodeURIComponent(href.slice(1))))"""
CONTENTS = "Array.from(document.querySelectorAll('nav.toc a')).map(a => a.getAttribute('href'))"


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        arguments = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=arguments)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """A two-experiment digits suite (its page and each run's report), a comparison of its runs made
    elsewhere, a hand-built run with hostile class names and a hand-built multi-seed folder."""
    root = tmp_path_factory.mktemp("browser")
    suite = load_suite(bundled_suite("digits-quick"), ["train.epochs=2"])
    written = run_suite(suite, root / "suite", show_progress=False)
    run_dirs = sorted(path.parent for path in (root / "suite").glob("*/report.html"))
    assert len(run_dirs) == 2
    comparison = compare_runs(run_dirs, root / "comparison")
    hostile = make_gallery_run(root / "hostile", HOSTILE_NAMES, n=400)
    write_report(hostile)
    seeds = make_seeds_folder(root / "seeds")
    for seed_run in ("seed-1", "seed-2"):
        write_report(seeds / seed_run)
    return {"report": run_dirs[1] / "report.html", "suite": written["html"], "comparison": comparison["html"],
            "hostile": hostile / "report.html", "seeds": write_seeds_report(seeds)[1]}


class Opened:
    """A page opened at one width, recording console errors, page errors and dialogs."""

    def __init__(self, browser, path: Path, width: int):
        phone = width < 600
        self.context = browser.new_context(viewport={"width": width, "height": 844 if phone else 900},
                                           is_mobile=phone, has_touch=phone, device_scale_factor=1)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.goto(path.as_uri(), wait_until="load")

    def evaluate(self, script: str):
        return self.page.evaluate(script)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.joinpath("browser").mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / "browser" / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture(params=list(WIDTHS.items()), ids=list(WIDTHS))
def width(request) -> tuple[str, int]:
    return request.param


@pytest.mark.parametrize("name", ["report", "suite", "comparison", "hostile", "seeds"])
def test_page_renders_cleanly(browser, pages, name, width):
    label, pixels = width
    opened = Opened(browser, pages[name], pixels)
    try:
        opened.screenshot(f"{name}-{label}")
        assert opened.errors == [] and opened.dialogs == []
        assert opened.evaluate("innerWidth") == pixels  # the viewport tag is honoured on a phone
        decoded = opened.evaluate(IMAGES_DECODED)
        assert decoded and all(decoded), "every image decoded"
        assert opened.evaluate("document.scrollingElement.scrollWidth") <= pixels, "no sideways page scroll"
        assert opened.evaluate(BROKEN_LINKS) == []
        contents = opened.evaluate(CONTENTS)
        assert len(contents) >= (5 if name in ("report", "hostile") else 3)
        assert opened.evaluate("document.querySelectorAll('script').length") == 0
        overflowing = opened.evaluate("""Array.from(document.querySelectorAll('figure img'))
            .filter(image => !image.closest('.gallery') && image.getBoundingClientRect().right > innerWidth + 1)
            .length""")
        assert overflowing == 0, "figures fit the width"
    finally:
        opened.close()


def test_confusion_cell_opens_its_gallery_and_comes_back(browser, pages, width):
    opened = Opened(browser, pages["report"], width[1])
    page = opened.page
    try:
        cell = page.locator("table.matrix a").first
        target = cell.get_attribute("href")
        assert target.startswith("#pair-")
        cell.click()
        assert page.evaluate("location.hash") == target
        heading = page.locator(f"[id='{target[1:]}']")
        playwright_api.expect(heading).to_be_in_viewport()
        gallery = page.locator(f"[id='{target[1:]}'] + p + .gallery img")
        assert gallery.count() >= 1
        assert all(page.evaluate(IMAGES_DECODED))
        page.locator(f"[id='{target[1:]}'] + p a").click()
        assert page.evaluate("location.hash") == "#confusion-matrix"
        playwright_api.expect(page.locator("table.matrix")).to_be_in_viewport()
    finally:
        opened.close()


def test_hostile_class_names_stay_text(browser, pages, width):
    opened = Opened(browser, pages["hostile"], width[1])
    try:
        text = opened.evaluate("document.body.innerText")
        for name in HOSTILE_NAMES:
            assert name in text
        assert opened.dialogs == [] and opened.errors == []
        assert opened.evaluate("document.querySelectorAll('img[src=x], script').length") == 0
        opened.page.locator("table.matrix a").first.click()  # every link on the page is one of ours
        assert opened.dialogs == []
    finally:
        opened.close()


def test_suite_and_comparison_link_the_run_reports(browser, pages):
    opened = Opened(browser, pages["suite"], WIDTHS["desktop"])
    page = opened.page
    try:
        assert page.title() == "digits-quick"
        assert page.locator("h1").inner_text().startswith("digits-quick")
        assert "MLP against a small CNN" in page.locator("body").inner_text()
        links = page.locator("a[href$='report.html']")
        assert links.count() == 2
        links.nth(0).click()
        page.wait_for_load_state("load")
        assert page.url.endswith("/report.html") and page.title().startswith("cnnlab report")
        page.locator("a[href='../comparison.html']").click()  # and back up to the suite
        page.wait_for_load_state("load")
        assert page.url == pages["suite"].as_uri()
        page.goto(pages["comparison"].as_uri(), wait_until="load")
        links = page.locator("a[href$='report.html']")
        assert links.count() == 2 and links.nth(1).get_attribute("href").startswith("../suite/")
        links.nth(1).click()
        page.wait_for_load_state("load")
        assert page.url == pages["report"].as_uri()
        page.locator("figure a").first.click()  # a figure opens full size
        page.wait_for_load_state("load")
        assert page.url.endswith(".png") and all(page.evaluate(IMAGES_DECODED))
        assert opened.errors == []
    finally:
        opened.close()


@pytest.mark.parametrize("name, pixels, side_by_side", [("comparison", 1280, True), ("comparison", 390, False)])
def test_comparison_figures_sit_side_by_side_on_a_wide_screen(browser, pages, name, pixels, side_by_side):
    opened = Opened(browser, pages[name], pixels)
    try:
        boxes = opened.evaluate("""Array.from(document.querySelectorAll('.row')).map(row =>
            Array.from(row.querySelectorAll(':scope > figure')).map(figure => {
                const box = figure.getBoundingClientRect(); return [box.left, box.top, box.width]; }))""")
        assert boxes and all(len(row) == 2 for row in boxes)
        for first, second in boxes:
            if side_by_side:
                assert first[1] == second[1] and second[0] >= first[0] + first[2], "two columns"
                assert first[2] >= 500, "each figure at least 500 px wide"
            else:
                assert first[0] == second[0] and second[1] > first[1], "one column"
    finally:
        opened.close()


def test_print_layout_wraps_code_and_keeps_headings_with_their_section(browser, pages):
    opened = Opened(browser, pages["report"], WIDTHS["desktop"])
    try:
        opened.page.emulate_media(media="print")
        styles = opened.evaluate("""[getComputedStyle(document.querySelector('pre')).whiteSpace,
            getComputedStyle(document.querySelector('h2')).breakAfter,
            getComputedStyle(document.querySelector('.table-wrap')).overflowX]""")
        assert styles == ["pre-wrap", "avoid", "visible"]
        assert opened.page.pdf(format="A4")[:4] == b"%PDF"
    finally:
        opened.close()
