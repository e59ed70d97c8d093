"""Can frozen efficientnet-lite0 features do better than its pooled last stage? Variants of what is
read off the frozen backbone, each scored by cnnlab's own probes (logistic regression with C chosen
on a validation share, kNN with k chosen likewise) on one sample of cifar10-jpeg.

    python bench/frozen_feature_variants.py [--size 128] [--train 6000] [--test 2000]

Variants: the pooled last stage as `cnnlab features` reads it (bilinear upscaling), bicubic
upscaling, the average of an image's and its mirror image's features, the last stage before its
ReLU6, the last stage pooled to a 2x2 grid, the pooled last three stages concatenated, and the
square root of the pooled features. Accuracy, not speed: one process, nothing timed against a peer.
Writes bench/results/frozen_feature_variants.json and .md."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchlib import hardware, versions, write_results

C_VALUES = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03)


def extract(backbone, fast, images: np.ndarray, size: int, mode: str, flip: bool) -> dict[str, np.ndarray]:
    """Several readings of the frozen backbone for uint8 images (N, 3, H, W), in order."""
    module = backbone.module.eval()
    mean = torch.tensor(backbone.mean).view(1, -1, 1, 1)
    std = torch.tensor(backbone.std).view(1, -1, 1, 1)
    blocks = list(module.blocks)
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), 128):
        pixels = torch.from_numpy(np.ascontiguousarray(images[start:start + 128])).float() / 255
        pixels = F.interpolate(pixels, size=(size, size), mode=mode, align_corners=False).clamp(0, 1)
        views = [(pixels - mean) / std]
        if flip:
            views.append(views[0].flip(3))
        readings: dict[str, torch.Tensor] = {}
        for view in views:
            got: dict[str, torch.Tensor] = {}
            with torch.no_grad(), fast.autocast():
                features, pooled = view, []
                for index, block in enumerate(blocks):
                    if index == len(blocks) - 1:
                        got["preact"] = block[1](block[0](features)).float().mean((2, 3))  # conv, BN, no ReLU6
                    features = block(features)
                    if index >= len(blocks) - 3:
                        pooled.append(features.float().mean((2, 3)))
                last = features.float()
            got["pooled"] = pooled[-1]
            got["grid"] = F.adaptive_avg_pool2d(last, 2).flatten(1)
            got["stages"] = torch.cat(pooled, 1)
            for key, value in got.items():
                readings[key] = readings.get(key, 0) + value / len(views)
        for key, value in readings.items():
            out.setdefault(key, []).append(value)
    return {key: torch.cat(values).numpy() for key, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=2000)
    args = parser.parse_args()

    from cnnlab.data import DatasetConfig, load_dataset
    from cnnlab.training.precision import automatic_compute_plan
    from cnnlab.models.pretrained import load_backbone
    from cnnlab.analysis.probes import knn_probe, linear_probe

    torch.manual_seed(0)
    dataset = load_dataset(DatasetConfig(name="cifar10-jpeg", subset=args.train, test_subset=args.test))
    backbone = load_backbone("efficientnet-lite0")
    fast = automatic_compute_plan(torch.device("cpu"), (3, 224, 224), backbone.module)
    passes = {"bilinear": ("bilinear", False), "bicubic": ("bicubic", False), "flip": ("bilinear", True)}
    variants = [  # (label, pass, reading, square root)
        ("pooled last stage (what `cnnlab features` reads)", "bilinear", "pooled", False),
        ("same, bicubic upscaling", "bicubic", "pooled", False),
        ("same, averaged with the mirror image's features", "flip", "pooled", False),
        ("last stage before its ReLU6, pooled", "bilinear", "preact", False),
        ("last stage pooled to a 2x2 grid", "bilinear", "grid", False),
        ("last three stages pooled and concatenated", "bilinear", "stages", False),
        ("square root of the pooled last stage", "bilinear", "pooled", True),
    ]
    features, extraction_s = {}, {}
    for name, (mode, flip) in passes.items():
        started = time.perf_counter()
        features[name] = (extract(backbone, fast, dataset.train_images, args.size, mode, flip),
                          extract(backbone, fast, dataset.test_images, args.size, mode, flip))
        extraction_s[name] = time.perf_counter() - started
        print(f"{name}: features in {extraction_s[name]:.0f} s", flush=True)
    rows = []
    for label, pass_name, reading, root in variants:
        train, test = (part[reading] for part in features[pass_name])
        if root:
            train, test = np.sqrt(np.maximum(train, 0)), np.sqrt(np.maximum(test, 0))
        linear = linear_probe(train, dataset.train_labels, test, dataset.test_labels, c_values=C_VALUES)
        knn = knn_probe(train, dataset.train_labels, test, dataset.test_labels, dataset.n_classes)
        rows.append({"variant": label, "feature_dim": int(train.shape[1]), "linear_accuracy": linear.accuracy,
                     "C": linear.details["C"], "knn_accuracy": knn.accuracy, "k": knn.details["k"],
                     "extraction_s": extraction_s[pass_name]})
        print(rows[-1], flush=True)
    machine = hardware()
    standard_error = 100 * (0.8 * 0.2 / len(dataset.test_labels)) ** 0.5
    lines = [
        "# Frozen efficientnet-lite0 features: what else could be read off the backbone",
        "",
        f"cifar10-jpeg, {len(dataset.train_labels):,} training and {len(dataset.test_labels):,} test images "
        f"(seeded samples), upscaled to {args.size} px, ImageNet weights frozen; {machine['cpu']}, "
        f"{machine['cores']} cores. Command: `python bench/frozen_feature_variants.py --size {args.size} "
        f"--train {args.train} --test {args.test}`. Linear probe: logistic regression on standardised features, "
        f"C chosen from {', '.join(map(str, C_VALUES))} on a 10% validation share; kNN: cosine, k chosen likewise. "
        f"One test sample of {len(dataset.test_labels):,} images: a difference under about "
        f"{2 * standard_error:.1f} points (two standard errors at 80%) is noise.",
        "",
        "| features | dimensions | linear probe | C | kNN | k |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['feature_dim']} | {100 * row['linear_accuracy']:.2f}% | {row['C']} | "
                     f"{100 * row['knn_accuracy']:.2f}% | {row['k']} |")
    payload = {"hardware": machine, "versions": versions(), "size": args.size, "train_size": len(dataset.train_labels),
               "test_size": len(dataset.test_labels), "c_values": list(C_VALUES), "rows": rows,
               "extraction_s": extraction_s}
    write_results("frozen_feature_variants", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
