"""Frozen efficientnet-lite0 on cifar10-jpeg (issue 17): how fast can its features be extracted on
a CPU, where do the linear probe's missing points go (input size, JPEG blocks), and do the weights
give ImageNet behaviour on labelled photos?

    OMP_NUM_THREADS=1 taskset -c 0 python bench/frozen_features_study.py [--speed-images 512] \
        [--train 3000] [--test 1000] [--sizes 160 224 288] [--blur-sigma 0.7]

1. Speed: features/s of cifar10-jpeg images (uint8 -> bilinear upscaling to 224 px -> 0.5/0.5
   normalisation -> pooled last stage), one thread, inference_mode, for float32 and bfloat16
   autocast, contiguous and channels-last, batch 64 and 256; plus what `compute_features` runs
   today (bfloat16 autocast, contiguous, no_grad, batch 256), bfloat16 with the depthwise
   convolutions in float32, and where the time of one batch goes by operator.
2. Accuracy: linear probe (cnnlab's, C chosen on a validation share, as
   bench/frozen_feature_variants.py) and kNN on a seeded sample, per input size, and at 224 px with
   a light Gaussian blur at 32 px before upscaling (does de-blocking the JPEG copy help?).
3. Weights: ImageNet top-5 on scikit-learn's and scikit-image's labelled photos (resize the short
   side to 256, centre crop 224) with the package's own classifier head (`_fc`, which
   `load_backbone` drops), and zero-shot: the share of cifar10-jpeg test images of five classes
   whose ImageNet top-1 falls in a plausible set of ImageNet classes.
Writes bench/results/frozen_features_study.json and .md."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from benchlib import hardware, versions, write_results
from frozen_feature_variants import C_VALUES

# ImageNet indices a CIFAR-10 class plausibly lands on (zero-shot check)
IMAGENET_SETS = {
    "cat": range(281, 286),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "automobile": (407, 436, 468, 479, 511, 581, 609, 627, 656, 661, 705, 717, 751, 817),
    "truck": (555, 569, 573, 586, 595, 603, 654, 675, 717, 734, 757, 864, 867),
    "airplane": (403, 404, 405, 895, 908),
    "ship": (403, 472, 484, 510, 554, 576, 625, 628, 693, 724, 780, 814, 833, 871, 913, 914),
}
PHOTOS = {  # name: (loader, what ImageNet should say)
    "china.jpg": ("sklearn", "a temple/palace (e.g. 483 castle, 698 palace, 832 stupa, 668 mosque)"),
    "flower.jpg": ("sklearn", "a flower (e.g. 985 daisy) or an insect on it (e.g. 309 bee)"),
    "chelsea": ("skimage", "a tabby cat (281-285)"),
    "coffee": ("skimage", "espresso 967 / cup 968 / coffee mug 504"),
    "rocket": ("skimage", "missile 657 / projectile 744 / space shuttle 812"),
    "astronaut": ("skimage", "a person in a suit (e.g. 834 suit, 617 lab coat, 652 military uniform)"),
}


class DepthwiseFloat32(TorchFunctionMode):
    """Depthwise convolutions in float32 with autocast off (the rest stays bfloat16): times them alone."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and args[1].dim() == 4 and args[1].shape[1] == 1 and args[0].shape[1] > 1:
            with torch.autocast("cpu", enabled=False):
                return func(*(a.float() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)
        return func(*args, **kwargs)


def prepare(images: np.ndarray, size: int, blur_sigma: float = 0.0, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 3, h, w) -> optional Gaussian blur at h x w -> bilinear to size -> (x - 0.5) / 0.5."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).float() / 255
    if blur_sigma > 0:
        offsets = torch.arange(-2, 3, dtype=torch.float32)
        kernel = torch.exp(-offsets ** 2 / (2 * blur_sigma ** 2))
        kernel = kernel / kernel.sum()
        kernel2d = (kernel[:, None] * kernel[None, :]).expand(3, 1, 5, 5)
        pixels = F.conv2d(F.pad(pixels, (2, 2, 2, 2), mode="reflect"), kernel2d, groups=3)
    if pixels.shape[-1] != size:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    pixels = (pixels - 0.5) / 0.5
    return pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels


def features_of(module, images: np.ndarray, size: int, batch: int, bf16: bool, channels_last: bool,
                inference: bool = True, depthwise_fp32: bool = False, blur_sigma: float = 0.0) -> torch.Tensor:
    """Pooled last-stage features (N, 1280) float32 of uint8 images."""
    module = module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    outputs = []
    for start in range(0, len(images), batch):
        pixels = prepare(images[start:start + batch], size, blur_sigma, channels_last)
        with (torch.inference_mode() if inference else torch.no_grad()), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if depthwise_fp32:
                with DepthwiseFloat32():
                    outputs.append(module(pixels).float())
            else:
                outputs.append(module(pixels).float())
    return torch.cat(outputs)


def speed_study(module, images: np.ndarray) -> tuple[list[dict], list[dict]]:
    settings = [  # label, batch, bf16, channels_last, inference_mode, depthwise in fp32
        ("fp32, contiguous", 64, False, False, True, False),
        ("fp32, channels-last", 64, False, True, True, False),
        ("fp32, channels-last", 256, False, True, True, False),
        ("bf16 autocast, contiguous", 64, True, False, True, False),
        ("bf16 autocast, channels-last", 64, True, True, True, False),
        ("bf16 autocast, channels-last", 256, True, True, True, False),
        ("bf16 autocast, channels-last, depthwise convs in fp32", 64, True, True, True, True),
        ("what compute_features runs: bf16 autocast, contiguous, no_grad", 256, True, False, False, False),
    ]
    rows = []
    for label, batch, bf16, channels_last, inference, depthwise in settings:
        features_of(module, images[:16], 224, 16, bf16, channels_last, inference, depthwise)  # warm-up
        started = time.perf_counter()
        features_of(module, images, 224, batch, bf16, channels_last, inference, depthwise)
        seconds = time.perf_counter() - started
        rows.append({"setting": label, "batch": batch, "images": len(images), "seconds": seconds,
                     "features_per_s": len(images) / seconds, "ms_per_image": 1000 * seconds / len(images)})
        print(rows[-1], flush=True)
    return rows, operator_profile(module, images[:64])


def operator_profile(module, images: np.ndarray) -> list[dict]:
    """Self CPU time by operator of one batch of 64 at 224 px, bf16 autocast, channels-last."""
    pixels = prepare(images, 224, channels_last=True)
    module = module.to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        module(pixels[:8])
        with torch.profiler.profile() as profile:
            module(pixels)
    events = sorted(profile.key_averages(), key=lambda event: -event.self_cpu_time_total)
    total = sum(event.self_cpu_time_total for event in events)
    return [{"operator": event.key, "calls": event.count, "self_ms": event.self_cpu_time_total / 1000,
             "share": event.self_cpu_time_total / total} for event in events[:7]]


def accuracy_study(module, classifier, dataset, sizes: list[int], blur_sigma: float):
    from cnnlab.analysis.probes import knn_probe, linear_probe

    passes = [(size, 0.0) for size in sizes] + [(224, blur_sigma)]
    rows, zero_shot = [], {}
    for size, sigma in passes:
        started = time.perf_counter()
        train = features_of(module, dataset.train_images, size, 64, True, True, blur_sigma=sigma)
        test = features_of(module, dataset.test_images, size, 64, True, True, blur_sigma=sigma)
        seconds = time.perf_counter() - started
        linear = linear_probe(train.numpy(), dataset.train_labels, test.numpy(), dataset.test_labels, c_values=C_VALUES)
        knn = knn_probe(train.numpy(), dataset.train_labels, test.numpy(), dataset.test_labels, dataset.n_classes)
        label = f"{size} px" + (f", Gaussian blur sigma {sigma} px at 32 px first" if sigma else "")
        rows.append({"input": label, "size": size, "blur_sigma": sigma, "linear_accuracy": linear.accuracy,
                     "C": linear.details["C"], "knn_accuracy": knn.accuracy, "k": knn.details["k"],
                     "extraction_s": seconds, "ms_per_image": 1000 * seconds / (len(train) + len(test))})
        print(rows[-1], flush=True)
        if size == 224:
            zero_shot[label] = zero_shot_shares(classifier(test), dataset.test_labels, dataset.classes)
    return rows, zero_shot


def zero_shot_shares(logits: torch.Tensor, labels: np.ndarray, classes: list[str]) -> dict:
    top1 = logits.argmax(1).numpy()
    shares = {}
    for name, indices in IMAGENET_SETS.items():
        chosen = labels == classes.index(name)
        shares[name] = {"images": int(chosen.sum()), "share": float(np.isin(top1[chosen], list(indices)).mean())}
    return shares


def photo_study(module, classifier, categories: list[str]) -> list[dict]:
    from sklearn.datasets import load_sample_image

    rows = []
    for name, (source, expected) in PHOTOS.items():
        if source == "sklearn":
            photo = load_sample_image(name)
        else:
            try:
                import skimage.data
            except ImportError:
                continue
            photo = getattr(skimage.data, name)()
        pixels = torch.from_numpy(np.ascontiguousarray(photo[..., :3])).permute(2, 0, 1)[None].float() / 255
        height, width = pixels.shape[-2:]
        scale = 256 / min(height, width)
        pixels = F.interpolate(pixels, size=(round(height * scale), round(width * scale)), mode="bilinear",
                               antialias=True, align_corners=False)
        top, left = (pixels.shape[-2] - 224) // 2, (pixels.shape[-1] - 224) // 2
        pixels = pixels[..., top:top + 224, left:left + 224]
        for normalisation, (mean, std) in {"0.5/0.5": (0.5, 0.5), "ImageNet mean/std": (
                torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))}.items():
            with torch.inference_mode():
                probabilities = classifier(module((pixels - mean) / std)).softmax(1)[0]
            values, indices = probabilities.topk(5)
            rows.append({"photo": name, "normalisation": normalisation, "expected": expected,
                         "top5": [(int(i), categories[int(i)], float(v)) for v, i in zip(values, indices)]})
            print(rows[-1], flush=True)
    return rows


def imagenet_categories() -> list[str]:
    try:
        from torchvision.models import ResNet18_Weights
        return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    except ImportError:
        return [f"class {index}" for index in range(1000)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-images", type=int, default=512)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224, 288])
    parser.add_argument("--blur-sigma", type=float, default=0.7)
    args = parser.parse_args()

    from cnnlab.data import DatasetConfig, load_dataset
    from cnnlab.models.pretrained import load_backbone

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    backbone = load_backbone("efficientnet-lite0")
    module = backbone.module.eval()
    state = torch.load(backbone.weights_path, map_location="cpu", weights_only=True)
    head = torch.nn.Linear(1280, 1000).eval()
    head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})

    def classifier(features: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return head(features.float())

    speed_data = load_dataset(DatasetConfig(name="cifar10-jpeg", subset=1, test_subset=args.speed_images))
    speed_rows, profile_rows = speed_study(module, speed_data.test_images)
    photo_rows = photo_study(module, classifier, imagenet_categories())
    dataset = load_dataset(DatasetConfig(name="cifar10-jpeg", subset=args.train, test_subset=args.test))
    accuracy_rows, zero_shot = accuracy_study(module, classifier, dataset, args.sizes, args.blur_sigma)

    machine = hardware()
    machine["cpu_flags"] = sorted(flag for flag in cpu_flags() if flag.startswith(("avx", "amx", "fma")))
    command = "OMP_NUM_THREADS=1 taskset -c 0 python " + " ".join(["bench/frozen_features_study.py", *sys.argv[1:]])
    payload = {"hardware": machine, "versions": versions(), "threads": threads, "command": command,
               "train_size": len(dataset.train_labels), "test_size": len(dataset.test_labels),
               "speed": speed_rows, "profile": profile_rows, "photos": photo_rows, "accuracy": accuracy_rows,
               "zero_shot": zero_shot, "imagenet_sets": {key: list(value) for key, value in IMAGENET_SETS.items()}}
    write_results("frozen_features_study", payload, markdown(payload))


def cpu_flags() -> set[str]:
    from cnnlab.training.precision import read_cpu_flags
    return set(read_cpu_flags())


def markdown(payload: dict) -> str:
    machine = payload["hardware"]
    standard_error = 100 * (0.8 * 0.2 / payload["test_size"]) ** 0.5
    lines = [
        "# Frozen efficientnet-lite0 on cifar10-jpeg: extraction speed, input size, JPEG blocks, the weights",
        "",
        f"{machine['cpu']} ({', '.join(machine['cpu_flags'])}), {payload['threads']} thread(s); torch "
        f"{payload['versions']['torch']}. Command: `{payload['command']}`.",
        "",
        "## 1. Extraction speed (cifar10-jpeg test images at 224 px, upscaling and normalisation included)",
        "",
        "| setting | batch | images | features/s | ms/image |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {row['setting']} | {row['batch']} | {row['images']} | {row['features_per_s']:.1f} | "
              f"{row['ms_per_image']:.1f} |" for row in payload["speed"]]
    lines += ["", "Where one batch of 64 goes (bf16 autocast, channels-last, inference_mode), self CPU time:", "",
              "| operator | calls | ms | share |", "|---|---|---|---|"]
    lines += [f"| {row['operator']} | {row['calls']} | {row['self_ms']:.0f} | {100 * row['share']:.0f}% |"
              for row in payload["profile"]]
    lines += ["", f"## 2. Linear probe by input size ({payload['train_size']:,} train / {payload['test_size']:,} test "
              "images, seeded samples; bf16 autocast, channels-last)", "",
              f"Linear probe as in frozen_feature_variants.py (C from {', '.join(map(str, C_VALUES))} on a 10% "
              f"validation share); kNN cosine. Differences under about {2 * standard_error:.1f} points (two standard "
              "errors at 80%) are noise.", "",
              "| input | linear probe | C | kNN | k | extraction ms/image |", "|---|---|---|---|---|---|"]
    lines += [f"| {row['input']} | {100 * row['linear_accuracy']:.2f}% | {row['C']} | {100 * row['knn_accuracy']:.2f}% | "
              f"{row['k']} | {row['ms_per_image']:.1f} |" for row in payload["accuracy"]]
    lines += ["", "## 3. The weights: ImageNet top-5 on labelled photos (short side 256, centre crop 224)", "",
              "| photo | normalisation | expected | top-5 (index name probability) |", "|---|---|---|---|"]
    lines += [f"| {row['photo']} | {row['normalisation']} | {row['expected']} | "
              + "; ".join(f"{index} {name} {probability:.2f}" for index, name, probability in row["top5"]) + " |"
              for row in payload["photos"]]
    lines += ["", "Zero-shot: share of cifar10-jpeg test images of a class whose ImageNet top-1 is in the class's set "
              "(sets in the JSON):", "", "| input | " + " | ".join(IMAGENET_SETS) + " |",
              "|---|" + "---|" * len(IMAGENET_SETS)]
    for label, shares in payload["zero_shot"].items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * shares[name]['share']:.0f}% (of {shares[name]['images']})"
                                                  for name in IMAGENET_SETS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
