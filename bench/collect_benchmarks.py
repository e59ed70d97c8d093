"""Write BENCHMARKS.md from the measured tables in bench/results/*.md (never from typed-in figures).

    python bench/collect_benchmarks.py

The GPU section says "not measured" until a GPU run has written its results file."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from benchlib import REPORTED_FLAGS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ORDER = ["cpu_speed", "fast_mnist", "fast_presets_cpu", "report_speed"]
# bench/gpu.sh writes the first three
GPU_RESULTS = ["gpu_fast_cifar10", "gpu_fast_mnist", "gpu_transfer", "gpu_report_models"]
# accuracy diagnostics of the reproduction runs, cited in docs/reproduction.md's notes, not speed results
REPRODUCTION_DIAGNOSTICS = ("batch_norm_recalibration-", "train_accuracy-")

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
                    and not path.stem.endswith("-quick") and not path.stem.startswith(REPRODUCTION_DIAGNOSTICS))
    for name in names:
        text = (RESULTS / f"{name}.md").read_text().strip()
        parts.append(_with_machine(_demoted(text), _machine_line(name)))
    gpu = [name for name in GPU_RESULTS if (RESULTS / f"{name}.md").exists()]
    parts.append("## GPU\n")
    if gpu:
        parts += [_demoted((RESULTS / f"{name}.md").read_text().strip()) for name in gpu]
    else:
        parts.append("Not measured: no session of this project has been lent a GPU yet (the `device` tool's status "
                     "said `can_start_another: false`). The rows the speed issue asks for (fast/cifar10 against "
                     "airbench94 on cifar10-jpeg over 5 seeds, fast/mnist under 1 s, "
                     "transfer/efficientnet-lite0-finetune at 224 px, every report model against its report's time) "
                     "stay unmeasured until then; nothing here estimates them. `bench/gpu.sh` (see its header) "
                     "measures the first three in one run.")
    (ROOT / "BENCHMARKS.md").write_text("\n\n".join(parts) + "\n")
    print(f"wrote BENCHMARKS.md from {len(names) + len(gpu)} result files")


def _machine_line(name: str) -> str:
    """Where a result was measured, from its JSON file: CPU model, cores and the CPU flags that decide
    precision and kernels. A result written before the flags were recorded takes those that another
    result recorded for the same CPU model, said so, where all such results agree."""
    try:
        payload = json.loads((RESULTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return "Measured on: not recorded in its JSON file (see the text below)."
    machine = _machine(payload)
    if not machine.get("cpu"):
        known = "; ".join(f"{cpu}: {' '.join(flags)}" for cpu, flags in sorted(_recorded_flags().items()))
        return f"Measured on: see the hardware column (the flags the bench results recorded for each CPU model: {known})."
    flags = machine.get("cpu_flags")
    if flags:
        flag_text = f"flags {' '.join(flags)}"
    elif machine["cpu"] in _recorded_flags():
        flag_text = (f"CPU flags not recorded by this older run; the {machine['cpu']} of the sessions that recorded "
                     f"them had {' '.join(_recorded_flags()[machine['cpu']])}")
    else:
        flag_text = "CPU flags not recorded by this older run"
    gpu = f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU"
    return f"Measured on: {machine['cpu']}, {machine.get('cores', '?')} cores, {flag_text}, {gpu}."


def _machine(payload: dict) -> dict:
    return payload.get("hardware") or payload.get("machine") or {}


@functools.cache  # every section asks; the result files are read once
def _recorded_flags() -> dict[str, list[str]]:
    """CPU model -> the precision-deciding flags its results recorded, for the models whose results all agree."""
    seen: dict[str, set[tuple[str, ...]]] = {}
    for path in RESULTS.glob("*.json"):
        try:
            machine = _machine(json.loads(path.read_text()))
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(machine, dict) and machine.get("cpu") and machine.get("cpu_flags"):
            flags = tuple(sorted(flag for flag in machine["cpu_flags"] if flag in REPORTED_FLAGS))
            seen.setdefault(machine["cpu"], set()).add(flags)
    return {cpu: list(sets.pop()) for cpu, sets in seen.items() if len(sets) == 1}


def _with_machine(text: str, machine_line: str) -> str:
    """The section with its machine line right under its heading."""
    heading, _, rest = text.partition("\n")
    return f"{heading}\n\n*{machine_line}*\n{rest}"


def _demoted(text: str) -> str:
    """Each result file's headings one level down, under this page's title."""
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


if __name__ == "__main__":
    main()
