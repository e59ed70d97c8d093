"""Screenshots of cnnlab's HTML reports for docs/screenshots/ (the README shows them): a digits run's report,
a CIFAR-10 report with the real class names, and a comparison, each at desktop (1280 px) and phone (390 px)
width, plus the CIFAR-10 confusion matrix and a confused pair's gallery. Rendered in headless Chromium.

    CNNLAB_DATA=/path/to/datasets python3 tools/screenshots.py [--out docs/screenshots] [--work runs/screenshots]

It trains what it shows, into --work (complete runs there are reused, so a second call only re-renders):
the bundled digits-quick suite (an MLP against the example CNN, 10 epochs; its comparison page and the CNN's
report) and keras/cifar10/model6 on cifar10-jpeg with the first 1,000 training images for 1 epoch (about a
minute on one CPU core; the point is the page, not the accuracy). Needs the playwright package and Chromium
($CNNLAB_CHROMIUM, else `chromium` on the PATH)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
CIFAR_OVERRIDES = {"dataset.name": "cifar10-jpeg", "dataset.subset": 1000, "train.epochs": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "screenshots")
    parser.add_argument("--work", type=Path, default=REPOSITORY / "runs" / "screenshots")
    parser.add_argument("--chromium", default=os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium"))
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("No Chromium found: install Debian's chromium or give --chromium PATH.")
    pages = build_pages(args.work)
    shots = [("digits-report", pages["digits"], "", WIDTHS), ("cifar10-report", pages["cifar10"], "", WIDTHS),
             ("comparison", pages["comparison"], "", WIDTHS),
             ("cifar10-confusion", pages["cifar10"], "#confusion-matrix", {"desktop": WIDTHS["desktop"]}),
             ("cifar10-gallery", pages["cifar10"], "#confused-pair-images", {"phone": WIDTHS["phone"]})]
    args.out.mkdir(parents=True, exist_ok=True)
    for written in take_screenshots(args.chromium, shots, args.out):
        print(written)


def build_pages(work: Path) -> dict[str, Path]:
    """Train (or reuse) the runs and return the HTML page of each shot."""
    from cnnlab import api, runs
    from cnnlab.bundled import bundled_suite
    from cnnlab.report.run_report import write_report
    from cnnlab.studies.suite import load_suite, run_suite

    written = run_suite(load_suite(bundled_suite("digits-quick")), work / "digits-quick", show_progress=False)
    for report in (work / "digits-quick").glob(f"*/{runs.REPORT_HTML_FILE}"):
        write_report(report.parent)  # a reused run: re-rendered with the current report code
    digits = sorted((work / "digits-quick").glob("*-cnn"))[0]
    cifar = work / "cifar10"
    if runs.is_complete(cifar):
        write_report(cifar)  # re-rendered with the current report code
    else:
        api.train("keras/cifar10/model6", out=cifar, overrides=CIFAR_OVERRIDES, progress=False, overwrite=True)
    return {"digits": digits / runs.REPORT_HTML_FILE, "cifar10": cifar / runs.REPORT_HTML_FILE,
            "comparison": written["html"]}


def take_screenshots(chromium: str, shots: list, out: Path) -> list[Path]:
    """One viewport-sized PNG per (page, width): ``<name>-<width name>.png`` in ``out``."""
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=["--no-sandbox"] if os.geteuid() == 0 else [])
        for name, page_path, fragment, widths in shots:
            for width_name, (width, height) in widths.items():
                phone = width < 600
                context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=phone,
                                              has_touch=phone, device_scale_factor=1)
                page = context.new_page()
                page.goto(page_path.as_uri() + fragment, wait_until="load")
                target = out / f"{name}-{width_name}.png"
                page.screenshot(path=str(target))
                written.append(target)
                context.close()
        browser.close()
    return written


if __name__ == "__main__":
    main()
