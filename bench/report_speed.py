"""How long analysis and the whole report take, from a run directory's saved artefacts.

    python bench/report_speed.py RUN_DIR [RUN_DIR ...] [--repeats 5]

For each run: the analysis object (confusion, worst-N, per-class metrics from the saved
probabilities) and `write_report` (every figure, Markdown and HTML) are timed, median over the
repeats. Writes bench/results/report_speed.json and .md."""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import hardware, hardware_line, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from cnnlab import runs
    from cnnlab.analysis.interpretation import Interpretation
    from cnnlab.report.run_report import write_report

    rows = []
    for run_dir in args.run_dirs:
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / run_dir.name
            shutil.copytree(run_dir, copy)  # the original run directory is left as it was
            analysis_times, report_times = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                Interpretation.from_run(copy)
                analysis_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                write_report(copy)
                report_times.append(time.perf_counter() - started)
            test_size = len(runs.load_npz(copy / runs.PREDICTIONS_FILE)["labels"])
        rows.append({"run": run_dir.name, "test_size": test_size, "analysis_s": statistics.median(analysis_times),
                     "report_s": statistics.median(report_times), "report_times_s": report_times})
        print(rows[-1], file=sys.stderr, flush=True)
    lines = ["# Analysis and report time from saved artefacts", "",
             f"{hardware_line()}. Command: `python bench/report_speed.py RUN_DIR ... "
             f"--repeats {args.repeats}` (medians; the report includes every figure and Grad-CAM).", "",
             "| run | test images | analysis s | whole report s |", "|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['test_size']:,} | {r['analysis_s']:.3f} | {r['report_s']:.2f} |" for r in rows]
    write_results("report_speed", {"hardware": hardware(), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
