"""Fine-tuning step time of efficientnet-lite0 on this CPU: cnnlab's bfloat16 fast path (depthwise
convolutions in float32 while training, `cnnlab.training.precision.DepthwiseInFloat32`) against plain
bfloat16 autocast and against float32, all channels-last.

    python bench/depthwise_cpu.py [--size 128] [--batch 64] [--repeats 3]

Each variant runs in a fresh process, in rotating order, --repeats times; a process times 6 steps
after 2 warm-up steps (forward, loss, backward, SGD step on random images) and reports their median.
Writes bench/results/depthwise_cpu.json and .md."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from benchlib import hardware, run_json, versions, write_results

VARIANTS = {
    "cnnlab bf16 (depthwise in fp32)": "fast",
    "plain bf16 autocast": "plain",
    "fp32": "fp32",
}


def worker(variant: str, size: int, batch: int) -> None:
    import torch
    import torch.nn.functional as F

    from cnnlab.training.precision import ComputePlan
    from cnnlab.models.pretrained import load_backbone

    torch.manual_seed(0)
    network = torch.nn.Sequential(load_backbone("efficientnet-lite0").module, torch.nn.Linear(1280, 10))
    network = network.train().to(memory_format=torch.channels_last)
    cpu = torch.device("cpu")
    if variant == "fast":
        context = ComputePlan(cpu, "bf16", True, False).autocast
    elif variant == "plain":
        context = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    else:
        context = ComputePlan(cpu, "fp32", True, False).autocast
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,))
    times = []
    for step in range(8):
        started = time.perf_counter()
        with context():
            loss = F.cross_entropy(network(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - started)
    print(json.dumps({"step_s": statistics.median(times)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.size, args.batch)
        return
    names = list(VARIANTS)
    steps: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            result = run_json([sys.executable, __file__, "--worker", VARIANTS[name], "--size", str(args.size),
                               "--batch", str(args.batch)])
            steps[name].append(result["step_s"])
            print(f"{name}: {result['step_s']:.3f} s/step", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in steps.items()}
    ours = medians[names[0]]
    machine = hardware()
    lines = [
        "# Fine-tuning efficientnet-lite0 on a CPU: depthwise convolutions in float32",
        "",
        f"{machine['cpu']}, {machine['cores']} cores; {args.size} px inputs, batch {args.batch}, channels-last. "
        f"Command: `python bench/depthwise_cpu.py --size {args.size} --batch {args.batch} --repeats {args.repeats}` "
        "(each variant in a fresh process, rotating order; a repeat is the median of 6 training steps).",
        "",
        "| variant | s per step (median) | ms per image | time vs cnnlab |",
        "|---|---|---|---|",
    ]
    for name in names:
        lines.append(f"| {name} | {medians[name]:.3f} | {1000 * medians[name] / args.batch:.1f} | "
                     f"{medians[name] / ours:.2f}x |")
    payload = {"hardware": machine, "versions": versions(), "size": args.size, "batch": args.batch,
               "repeats": args.repeats, "step_s": steps, "median_step_s": medians}
    write_results("depthwise_cpu", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
