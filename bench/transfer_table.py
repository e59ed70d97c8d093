"""docs/transfer.md's "Measured results" table, from the run folders bench/transfer_cifar10.sh writes.

    python bench/transfer_table.py [runs/transfer]

Every figure comes from a metrics.json; the section between the markers is replaced. A run whose
folder is no longer on disk (run folders are not kept in git) keeps the row(s) this script wrote
for it before, so re-running one experiment does not drop the others."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "transfer.md"
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "transfer"
    text = DOC.read_text()
    previous = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n").split("\n") if BEGIN in text else []
    rows = ["| experiment | dataset | train / test images | input | epochs | test accuracy | time | hardware | command |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, command in (
            ("features-lite0-224px", "`cnnlab features efficientnet-lite0 --dataset cifar10-jpeg "
                                     "--out runs/transfer/features-lite0-224px`"),
            ("features-lite0-128px", "`cnnlab features efficientnet-lite0 --dataset cifar10-jpeg --input-size 128 "
                                     "--out runs/transfer/features-lite0-128px`"),
            # the same at 224 px after extraction went through torch.compile (not read from the feature cache)
            ("features-lite0-224px-compiled", "`cnnlab features efficientnet-lite0 --dataset cifar10-jpeg --no-cache "
                                              "--out runs/transfer/features-lite0-224px-compiled`")):
        features = folder / name / "metrics.json"
        if not features.exists():
            rows += _previous_rows(previous, name)
            continue
        m = json.loads(features.read_text())
        size = m["input_size"]
        sizes = f"{m['train_size']:,} / {m['test_size']:,}"
        rows.append(f"| frozen features, kNN (k={m['k']}, cosine) | {m['dataset']} | {sizes} | {size} px | "
                    f"- | {m['knn_accuracy']:.2%} | extraction {m['extraction_time_s']:.0f} s + kNN "
                    f"{m['knn_fit_time_s']:.1f} s | {_hardware(m)} | {command} |")
        rows.append(f"| frozen features, logistic-regression probe (C={m['linear_C']:g}) | {m['dataset']} | {sizes} | {size} px | "
                    f"- | {m['linear_accuracy']:.2%} | extraction {m['extraction_time_s']:.0f} s + fit "
                    f"{m['linear_fit_time_s']:.1f} s | {_hardware(m)} | {command} |")
    for name, label in (("lite0-linear-128px", "frozen base, linear head trained (features cached)"),
                        ("lite0-finetune-128px-full-2ep", "full fine-tuning (base lr x0.1, ImageNet batch-norm "
                                                          "statistics, 0.3-epoch warm-up, cosine)"),
                        ("lite0-finetune-160px-full-2ep", "full fine-tuning, same recipe at 160 px")):
        path = folder / name
        if not (path / "metrics.json").exists():
            rows += _previous_rows(previous, name)
            continue
        m = json.loads((path / "metrics.json").read_text())
        environment = json.loads((path / "environment.json").read_text())
        command = _cnnlab_command(environment["command"])
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
    study = _batchnorm_study(folder / "bn-study-9k") or _previous_study(previous)
    table = "\n".join(rows + study)
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + BEGIN + "\n" + table + "\n" + text[text.index(END):]
    else:
        text = text.rstrip() + "\n\n" + BEGIN + "\n" + table + "\n" + END + "\n"
    DOC.write_text(text)
    print(table)


def _previous_rows(previous: list[str], run_name: str) -> list[str]:
    """The rows written before for the run folder ``runs/transfer/RUN_NAME`` (found by its --out)."""
    pattern = re.compile(rf"--out runs/transfer/{re.escape(run_name)}[`\s]")
    return [line for line in previous if line.startswith("| ") and pattern.search(line)]


def _previous_study(previous: list[str]) -> list[str]:
    """The batch-norm study written before: everything after the first table's blank line."""
    return previous[previous.index(""):] if "" in previous else []


def _batchnorm_study(folder: Path) -> list[str]:
    """The one-epoch recipe comparison on a 9,000-image sample (runs A-F), settings read from each run."""
    runs = sorted(path for path in folder.glob("*") if (path / "metrics.json").exists())
    if not runs:
        return []
    first = json.loads((runs[0] / "metrics.json").read_text())
    environment = json.loads((runs[0] / "environment.json").read_text())
    rows = ["", "Fine-tuning recipes compared for one epoch on a sample: "
            f"{first['train_size']:,} training images ({first['validation_size']:,} held out), "
            f"{first['test_size']:,} test images, {first['transfer']['input_size']} px, batch 64, 0.2-epoch warm-up "
            f"then cosine, flips and shifts; {environment['cpu']}, {environment['cpu_count']} cores, "
            f"{first['fast_path']['precision']}. Each run is `cnnlab train transfer/efficientnet-lite0-finetune "
            "dataset.name=cifar10-jpeg model.input_size=128 dataset.subset=10000 dataset.test_subset=2000 "
            "train.epochs=1 schedule.warmup_epochs=0.2` with the overrides in `bench/transfer_cifar10.sh`; the "
            "settings below are what each run recorded.", "",
            "| run | batch-norm statistics | optimiser | head lr | backbone lr | test accuracy | training time |",
            "|---|---|---|---|---|---|---|"]
    for path in runs:
        m = json.loads((path / "metrics.json").read_text())
        optimizer = yaml.safe_load((path / "config.yaml").read_text())["optimizer"]
        transfer = m["transfer"]
        batchnorm = "ImageNet's, kept (frozen)" if transfer["batchnorm"] == "frozen" else "updated (train)"
        name = optimizer["name"] + (" (momentum 0.9, Nesterov)" if optimizer.get("nesterov") else "")
        rows.append(f"| {path.name} | {batchnorm} | {name} | {optimizer['lr']:g} | "
                    f"{optimizer['lr'] * transfer['backbone_lr_factor']:g} | {m['test_accuracy']:.2%} | "
                    f"{m['train_time_s']:.0f} s |")
    return rows


def _cnnlab_command(recorded: str) -> str:
    """The recorded command line as the `cnnlab` command it is (runs started as `python -m cnnlab` from
    a source snapshot record the path of cnnlab/__main__.py)."""
    program, _, arguments = recorded.partition(" ")
    if program.endswith(("cnnlab/__main__.py", "/cnnlab", "cnnlab")):
        return f"cnnlab {arguments}"
    return recorded


def _hardware(metrics: dict) -> str:
    environment = metrics["environment"]  # recorded by the run itself
    return environment["gpu"] or f"{environment['cpu']}, {environment['cpu_count']} cores"


if __name__ == "__main__":
    main()
