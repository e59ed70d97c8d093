"""Write BENCHMARKS.md from the measured tables in bench/results/*.md (never from typed-in figures).

    python bench/collect_benchmarks.py

The GPU section says "not measured" until a GPU run has written its results file."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ORDER = ["cpu_speed", "fast_mnist", "fast_presets_cpu", "report_speed"]
GPU_RESULTS = ["gpu_fast_cifar10", "gpu_fast_mnist", "gpu_report_models"]

HEADER = """# Benchmarks

Every table below is written by a script in `bench/` (its command is in the table's text) into
`bench/results/NAME.json` and `.md`; this page is assembled from those files by
`python bench/collect_benchmarks.py`. Peers run in the same script run, on the same data and
machine, in rotating order, each in a fresh process; ratios are of medians. No figure here is
typed in by hand.
"""


def main() -> None:
    parts = [HEADER]
    names = [name for name in ORDER if (RESULTS / f"{name}.md").exists()]
    names += sorted(path.stem for path in RESULTS.glob("*.md") if path.stem not in ORDER + GPU_RESULTS
                    and not path.stem.endswith("-quick"))
    for name in names:
        text = (RESULTS / f"{name}.md").read_text().strip()
        parts.append(_demoted(text))
    gpu = [name for name in GPU_RESULTS if (RESULTS / f"{name}.md").exists()]
    parts.append("## GPU\n")
    if gpu:
        parts += [_demoted((RESULTS / f"{name}.md").read_text().strip()) for name in gpu]
    else:
        parts.append("Not measured: no session of this project has been lent a GPU yet (the `device` tool's status "
                     "said `can_start_another: false`). The rows the speed issue asks for (fast/cifar10 against "
                     "airbench94 on cifar10-jpeg over 5 seeds, fast/mnist under 1 s, every report model against its "
                     "report's time) stay unmeasured until then; nothing here estimates them.")
    (ROOT / "BENCHMARKS.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote BENCHMARKS.md from {len(names) + len(gpu)} result files")


def _demoted(text: str) -> str:
    """Each result file's headings one level down, under this page's title."""
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


if __name__ == "__main__":
    main()
