"""Frozen EfficientNet-Lite0 feature extraction on this CPU: what compute_features runs against compiled forms.

bench/frozen_features_study.py found a batch of 64 spends 19% of its time in batch norm and 22% in
ReLU6's clamp, work a compiler can fold into the convolutions. Variants, on every core, bfloat16
autocast and channels-last (the best eager setting there), batch 64, inference_mode:
  eager              the module as cnnlab's feature extraction runs it
  torch.compile      inductor (C++ on the CPU); its one-time cost timed apart
  jit freeze         torch.jit.trace + torch.jit.freeze + optimize_for_inference (folds batch norm into
                     the convolutions, oneDNN layouts)
Each repetition times every variant once on the same cifar10-jpeg test images (224 px, uint8 -> bilinear
-> 0.5/0.5), in rotating order; the ratio is median(eager) / median(variant). The largest difference
between a variant's features and eager's is reported (both in bfloat16).

    python bench/feature_extraction_speed.py [--images 512] [--repeats 3]

Writes bench/results/feature_extraction_speed.json and .md. Never run it while anything else uses the CPU."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchlib import hardware, hardware_line, versions, write_results
from frozen_features_study import prepare

SIZE, BATCH = 224, 64


def extract(forward, images: np.ndarray) -> torch.Tensor:
    outputs = []
    for start in range(0, len(images), BATCH):
        pixels = prepare(images[start:start + BATCH], SIZE, channels_last=True)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            outputs.append(forward(pixels).float())
    return torch.cat(outputs)


def variants(module: torch.nn.Module, example: torch.Tensor) -> tuple[dict, dict]:
    """name -> forward function, and name -> one-time preparation seconds (compiling on the example batch)."""
    forwards, setup = {"eager": module}, {"eager": 0.0}
    started = time.perf_counter()
    compiled = torch.compile(module)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        compiled(example)
        setup["torch.compile"] = time.perf_counter() - started
        forwards["torch.compile"] = compiled
        started = time.perf_counter()
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(module, example).eval()))
        frozen(example)
        frozen(example)
    setup["jit freeze"] = time.perf_counter() - started
    forwards["jit freeze"] = frozen
    return forwards, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from cnnlab.data import DatasetConfig, load_dataset
    from cnnlab.models.pretrained import load_backbone

    module = load_backbone("efficientnet-lite0").module.eval().to(memory_format=torch.channels_last)
    images = load_dataset(DatasetConfig(name="cifar10-jpeg", subset=1, test_subset=args.images)).test_images
    forwards, setup = variants(module, prepare(images[:BATCH], SIZE, channels_last=True))
    reference = extract(module, images[:BATCH])
    names, seconds = list(forwards), {name: [] for name in forwards}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            started = time.perf_counter()
            extract(forwards[name], images)
            seconds[name].append(time.perf_counter() - started)
            print(name, seconds[name][-1], flush=True)
    rows = ["| variant | ms per image (median) | each | vs eager | one-time setup | max feature difference |",
            "|---|---|---|---|---|---|"]
    eager = statistics.median(seconds["eager"])
    results = []
    for name in names:
        median = statistics.median(seconds[name])
        difference = (extract(forwards[name], images[:BATCH]) - reference).abs().max().item()
        each = ", ".join(f"{1000 * s / len(images):.1f}" for s in seconds[name])
        rows.append(f"| {name} | {1000 * median / len(images):.1f} | {each} | {eager / median:.2f}x | "
                    f"{setup[name]:.0f} s | {difference:.3f} |")
        results.append({"variant": name, "seconds": seconds[name], "setup_s": setup[name],
                        "max_feature_difference": difference})
    machine = hardware()
    markdown = "\n\n".join([
        "# Frozen EfficientNet-Lite0 feature extraction: eager against compiled",
        f"{hardware_line(machine)}; {torch.get_num_threads()} threads. Command: `python "
        f"bench/feature_extraction_speed.py --images {args.images} --repeats {args.repeats}`: cifar10-jpeg test "
        f"images at {SIZE} px, batch {BATCH}, bfloat16 autocast, channels-last, inference_mode.",
        "\n".join(rows),
        f"At the eager rate, 60,000 images take {60_000 * eager / len(images) / 60:.1f} min here."])
    write_results("feature_extraction_speed", {"hardware": machine, "versions": versions(), "args": vars(args),
                                               "threads": torch.get_num_threads(), "results": results}, markdown)


if __name__ == "__main__":
    main()
