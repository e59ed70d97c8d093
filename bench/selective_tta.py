"""Test-time views for every test image against views for the unsure ones only (issue 17).

A trained run's model (cnnlab.load_run's rebuild, on the CPU) predicts its dataset's whole test set in
batches of the run's eval batch size, in the run's precision and layout:
  plain            one view
  every image      the run's test-time views (fast/cifar10: flip_shift, 6 views) for every image
  below P          the other views only for images whose plain top probability is under P
                   (`augment.test_time_below: P`)
Each repetition times every variant once, in rotating order; accuracy does not change between
repetitions. The share of images that got the extra views is given.

    python bench/selective_tta.py RUN_DIR [--below 0.6 0.7] [--repeats 3]

Writes bench/results/selective_tta.json and .md. Never run it while anything else uses the CPU."""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchlib import hardware, hardware_line, versions, write_results


def predict(model, images: torch.Tensor, labels: np.ndarray, mode: str, below: float | None, batch: int,
            bf16: bool) -> dict:
    from cnnlab.augment.test_time import predict_with_views

    outputs = []
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(images), batch):
            outputs.append(predict_with_views(model, images[start:start + batch], mode, below))
    seconds = time.perf_counter() - started
    probabilities = torch.cat(outputs).numpy()
    return {"seconds": seconds, "accuracy": float((probabilities.argmax(1) == labels).mean()),
            "top_probability": probabilities.max(1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--below", type=float, nargs="+", default=[0.6, 0.7])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from cnnlab.analysis.trained_run import load_trained_model
    from cnnlab.data import DatasetConfig, load_dataset
    import json
    from pathlib import Path

    metrics = json.loads((Path(args.run) / "metrics.json").read_text())
    trained = load_trained_model(Path(args.run))
    plan = metrics["fast_path"]
    dataset = load_dataset(DatasetConfig(name=metrics["dataset"]))
    images = trained.normalize(torch.from_numpy(np.ascontiguousarray(dataset.test_images)))
    model = trained.module
    if plan["channels_last"]:
        images, model = images.contiguous(memory_format=torch.channels_last), model.to(memory_format=torch.channels_last)
    mode, batch = metrics["test_time_augmentation"], trained.config["train"]["eval_batch_size"]
    variants = {"plain": ("none", None), "every image": (mode, None),
                **{f"below {p}": (mode, p) for p in args.below}}
    labels = np.asarray(dataset.test_labels)
    results: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            results[name].append(predict(model, images, labels, *variants[name], batch, plan["precision"] == "bf16"))
            print(name, results[name][-1]["seconds"], results[name][-1]["accuracy"], flush=True)
    every = statistics.median(r["seconds"] for r in results["every image"])
    rows = ["| variant | test accuracy | images given the extra views | seconds (median) | each | vs every image |",
            "|---|---|---|---|---|---|"]
    plain_top = results["plain"][0]["top_probability"]
    for name in names:
        median = statistics.median(r["seconds"] for r in results[name])
        first = results[name][0]
        below = variants[name][1]
        first["unsure_share"] = {"plain": 0.0, "every image": 1.0}.get(name) if below is None else \
            float((plain_top < below).mean())
        each = ", ".join(f"{r['seconds']:.1f}" for r in results[name])
        rows.append(f"| {name} | {first['accuracy']:.2%} | {first['unsure_share']:.1%} | {median:.1f} | {each} | "
                    f"{every / median:.2f}x |")
    markdown = "\n\n".join([
        "# Test-time views for the unsure images only",
        f"{hardware_line(hardware())}; {torch.get_num_threads()} threads. Command: `python bench/selective_tta.py "
        f"{args.run} --below {' '.join(map(str, args.below))} --repeats {args.repeats}`: the run's model "
        f"({metrics['model']}, {metrics['dataset']}, trained {metrics['epochs']} epochs), its {len(labels):,} test "
        f"images, {plan['precision']}, channels-last {plan['channels_last']}, batch {batch}, test-time views "
        f"`{mode}`.",
        "\n".join(rows)])
    for rows_of_variant in results.values():
        for row in rows_of_variant:
            row.pop("top_probability")
    write_results("selective_tta", {"hardware": hardware(), "versions": versions(), "args": vars(args),
                                    "results": results}, markdown)


if __name__ == "__main__":
    main()
