"""torch.compile and thread count on this CPU for fast/cifar10's training step (issue 17).

Each repetition trains every variant once, in rotating order, each as a fresh `cnnlab train fast/cifar10`
process on a cifar10-jpeg subset (the preset's recipe, fewer images and epochs):
  eager       train.compile=false, every core (cnnlab's default)
  compiled    train.compile=true: torch.compile (inductor, C++ on the CPU); its one-time cost apart
  1 thread    train.compile=false train.threads=1

The figure is the last epoch's time (the first carries warm-up) per training image; the ratio is
median(eager) / median(variant) over the repetitions. Compile time is what cnnlab reports in
metrics.json (compile_time_s). Accuracy is not compared: these runs are too short to mean anything.

    python bench/compile_cpu.py [--repeats 3] [--images 5120] [--epochs 2]

Writes bench/results/compile_cpu.json and .md. Never run it while anything else uses the CPU."""

from __future__ import annotations

import argparse
import statistics

from benchlib import cnnlab_train, hardware, hardware_line, versions, write_results

VARIANTS = {
    "eager": ["train.compile=false"],
    "compiled": ["train.compile=true"],
    "1 thread": ["train.compile=false", "train.threads=1"],
}


def run_variant(name: str, images: int, epochs: int) -> dict:
    overrides = ["dataset.name=cifar10-jpeg", f"dataset.subset={images}", "dataset.test_subset=2000",
                 f"train.epochs={epochs}", *VARIANTS[name]]
    metrics = cnnlab_train("fast/cifar10", overrides)
    last_epoch_s = metrics["epoch_times_s"][-1]
    return {"variant": name, "last_epoch_s": last_epoch_s, "ms_per_image": 1000 * last_epoch_s / images,
            "compile_time_s": metrics.get("compile_time_s"), "fast_path": metrics.get("fast_path"),
            "process_wall_s": metrics["process_wall_s"]}


def table(results: list[dict], images: int) -> str:
    rows = ["| variant | ms per training image (median) | each | vs eager | one-time compile, each run |", "|---|---|---|---|---|"]
    eager = statistics.median(r["ms_per_image"] for r in results if r["variant"] == "eager")
    for name in VARIANTS:
        mine = [r for r in results if r["variant"] == name]
        median = statistics.median(r["ms_per_image"] for r in mine)
        compile_times = [r["compile_time_s"] for r in mine if r["compile_time_s"]]
        # in run order: the first compile fills inductor's on-disk cache, the later ones read it
        compile_text = ", ".join(f"{seconds:.0f}" for seconds in compile_times) + " s" if compile_times else "-"
        each = ", ".join(f"{r['ms_per_image']:.2f}" for r in mine)
        rows.append(f"| {name} | {median:.2f} | {each} | {eager / median:.2f}x | {compile_text} |")
    faster = [name for name in VARIANTS if name != "eager" and eager > statistics.median(
        r["ms_per_image"] for r in results if r["variant"] == name)]
    verdict = f"Faster than eager: {', '.join(faster)}." if faster else \
        "Nothing was faster than eager on every core, cnnlab's default (train.compile stays off)."
    return "\n".join(rows) + "\n\n" + verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=5120, help="training images (a cifar10-jpeg subset)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    names, results = list(VARIANTS), []
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            results.append(run_variant(name, args.images, args.epochs))
            print(results[-1], flush=True)
    machine = hardware()
    markdown = "\n\n".join([
        "# torch.compile and threads on the CPU: fast/cifar10's training step",
        f"{hardware_line(machine)}. Command: `python bench/compile_cpu.py --repeats {args.repeats} --images "
        f"{args.images} --epochs {args.epochs}`; each run `cnnlab train fast/cifar10 dataset.name=cifar10-jpeg "
        f"dataset.subset={args.images} dataset.test_subset=2000 train.epochs={args.epochs}` plus the variant's "
        "settings, a fresh process; the last epoch's time per training image.",
        table(results, args.images),
        f"Precision and layout chosen: {results[0]['fast_path']}."])
    write_results("compile_cpu", {"hardware": machine, "versions": versions(), "args": vars(args),
                                  "results": results}, markdown)


if __name__ == "__main__":
    main()
