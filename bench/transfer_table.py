"""docs/transfer.md's "Measured results" table, from the run folders bench/transfer_cifar10.sh writes.

    python bench/transfer_table.py [runs/transfer]

Every figure comes from a metrics.json; the section between the markers is replaced."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "transfer.md"
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "transfer"
    rows = ["| experiment | dataset | train / test images | input | epochs | test accuracy | time | hardware | command |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, command in (
            ("features-lite0-128px", "`cnnlab features efficientnet-lite0 --dataset cifar10-jpeg --input-size 128 "
                                     "--out runs/transfer/features-lite0-128px`"),
            ("features-lite0-224px-20k", "`cnnlab features efficientnet-lite0 --dataset cifar10-jpeg --subset 20000 "
                                         "--out runs/transfer/features-lite0-224px-20k`")):
        features = folder / name / "metrics.json"
        if not features.exists():
            continue
        m = json.loads(features.read_text())
        size = m["input_size"]
        sizes = f"{m['train_size']:,} / {m['test_size']:,}"
        rows.append(f"| frozen features, kNN (k={m['k']}, cosine) | {m['dataset']} | {sizes} | {size} px | "
                    f"- | {m['knn_accuracy']:.2%} | extraction {m['extraction_time_s']:.0f} s + kNN "
                    f"{m['knn_fit_time_s']:.1f} s | {_hardware(m)} | {command} |")
        rows.append(f"| frozen features, logistic-regression probe | {m['dataset']} | {sizes} | {size} px | "
                    f"- | {m['linear_accuracy']:.2%} | extraction {m['extraction_time_s']:.0f} s + fit "
                    f"{m['linear_fit_time_s']:.1f} s | {_hardware(m)} | {command} |")
    for name, label in (("lite0-linear-128px", "frozen base, linear head trained (features cached)"),
                        ("lite0-finetune-128px-10k-1ep", "full fine-tuning (base lr x0.1, 1-epoch warm-up, cosine)"),
                        ("lite0-finetune-128px-10k-2ep", "full fine-tuning (base lr x0.1, 0.3-epoch warm-up, cosine)")):
        path = folder / name
        if not (path / "metrics.json").exists():
            continue
        m = json.loads((path / "metrics.json").read_text())
        environment = json.loads((path / "environment.json").read_text())
        command = environment["command"].split("/bin/", 1)[-1]
        sizes = f"{m['train_size'] + m['validation_size']:,} ({m['validation_size']:,} held out) / {m['test_size']:,}"
        transfer = m.get("transfer", {})
        cached = ""
        if transfer.get("features_cached"):
            cached = (f" + features {transfer['features_time_s']:.0f} s" if "features_time_s" in transfer else
                      " (the head on cached features; computing them takes as long as the features row's extraction)")
        rows.append(f"| {label} | {m['dataset']} | {sizes} | {m.get('transfer', {}).get('input_size', '?')} px | "
                    f"{m['epochs']} | {m['test_accuracy']:.2%} | training {m['train_time_s']:.0f} s{cached} | "
                    f"{environment['cpu']}, {environment['cpu_count']} cores, {m.get('fast_path', {}).get('precision')} "
                    f"| `{command}` |")
    table = "\n".join(rows)
    text = DOC.read_text()
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + BEGIN + "\n" + table + "\n" + text[text.index(END):]
    else:
        text = text.rstrip() + "\n\n" + BEGIN + "\n" + table + "\n" + END + "\n"
    DOC.write_text(text)
    print(table)


def _hardware(metrics: dict) -> str:
    environment = metrics["environment"]  # recorded by the run itself
    return environment["gpu"] or f"{environment['cpu']}, {environment['cpu_count']} cores"


if __name__ == "__main__":
    main()
