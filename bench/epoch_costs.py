"""What one epoch, and one full recipe run, of every report model costs on this machine.

    python bench/epoch_costs.py [--models PATTERN ...] [--steps 300] [--warmup 30] [--repeats 3] [--plain]
                                [--name epoch_costs]

For each zoo entry of the lab reports (000 to 004; CIFAR-10 read as cifar10-jpeg, MNIST as mnist) at its
recipe's batch size, augmentation and automatic compute plan (precision, layout: what `cnnlab train` would
choose here), `fit` trains --steps steps after --warmup steps of warm-up, --repeats times; the median
seconds per step, times the recipe's steps per epoch, plus the validation it runs, is the epoch's cost;
times its epochs, plus the test evaluation, the full run's. Entries whose pretrained weights are missing
are listed as skipped. With --plain, each repeat also times a plain PyTorch loop on the same model and
batches (pre-normalised images, `torch.optim`, no augmentation, no bookkeeping), interleaved with
cnnlab's, and the table shows the ratio of the medians.

The CPU is timed as it is: every row records the load average before and after it, since other work on
the same cores slows small-batch training several times over (on 2 cores, report004/three-blocks at batch 4
took 3.8 ms a step alone, 7.8 ms beside one busy process and 17-210 ms at a load of 5, measured here):
run it alone, or with train.threads=1 beside other work (recorded in the config; it changes the bits).
The run's cost is an upper bound where early stopping ends a recipe sooner.
Writes bench/results/NAME.json and .md (NAME from --name)."""

from __future__ import annotations

import argparse
import copy
import fnmatch
import os
import statistics
import time

import torch
from torch import nn

from benchlib import hardware, versions, write_results

from cnnlab.config import load_config
from cnnlab.errors import CnnlabError
from cnnlab.experiment import place_on_device, prepare_experiment
from cnnlab.models.zoo.registry import list_entries
from cnnlab.training.evaluation import evaluate_indices
from cnnlab.training.loop import _steps_per_epoch, fit

DATASETS = {"cifar10": "cifar10-jpeg", "mnist": "mnist"}


def report_models(patterns: list[str] | None) -> list[str]:
    """The zoo entries of the lab reports (000 to 004) on CIFAR-10 or MNIST, filtered by ``patterns``."""
    names = [entry.name for entry in list_entries()
             if entry.source.startswith("report") and entry.dataset in DATASETS]
    if patterns:
        names = [name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]
    return names


def plain_steps(model: nn.Module, setup, indices: torch.Tensor, config, plan) -> float:
    """Seconds per step of a plain PyTorch loop over ``indices`` in batches of the recipe's size."""
    data, batch_size, settings = setup.train_data, config.train.batch_size, config.optimizer
    images = data.images.float() * data.multiplier + data.offset
    if plan.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if settings.name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum, fused=True)
    else:
        kind = torch.optim.Adam if settings.name == "adam" else torch.optim.AdamW
        optimizer = kind(parameters, lr=settings.lr, fused=True)
    model.train()
    autocast = plan.precision != "fp32"
    dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float16
    started = time.perf_counter()
    steps = len(indices) // batch_size
    for step in range(steps):
        batch = indices[step * batch_size:(step + 1) * batch_size]
        with torch.autocast(plan.device.type, dtype=dtype, enabled=autocast):
            loss = nn.functional.cross_entropy(model(images[batch]).float(), data.labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # as cnnlab's loop reads the loss every step on a CPU
    return (time.perf_counter() - started) / steps


def cnnlab_steps(model: nn.Module, setup, indices: torch.Tensor, config, prepared) -> float:
    """Seconds per step of `fit` (cnnlab's loop, augmentation included) over ``indices``."""
    empty = indices[:0]
    result = fit(model, setup.train_data, indices, empty, config, augment=prepared.augmenter, show_progress=False,
                 plan=prepared.plan)
    if result.status != "complete":
        raise RuntimeError(f"timing run {result.status}: {result.stop_reason}")
    return result.train_time_s / _steps_per_epoch(len(indices), config.train.batch_size)


def evaluation_s_per_image(model: nn.Module, setup, indices: torch.Tensor, config, plan) -> float:
    """Seconds per image of validation (no gradients, the evaluation batch size), over ``indices``."""
    with torch.no_grad(), plan.autocast():
        evaluate_indices(model, setup.train_data, indices[:config.train.eval_batch_size], config.train.eval_batch_size)
        started = time.perf_counter()
        evaluate_indices(model, setup.train_data, indices, config.train.eval_batch_size)
    return (time.perf_counter() - started) / len(indices)


def measure(name: str, steps: int, warmup: int, repeats: int, plain: bool) -> dict:
    """One model's timings and the epoch and full-run costs extrapolated from them."""
    load_before = os.getloadavg()[0]
    dataset = DATASETS[next(entry.dataset for entry in list_entries() if entry.name == name)]
    config = load_config(name, [f"dataset.name={dataset}"])
    timing = load_config(name, [f"dataset.name={dataset}", "train.epochs=1", "train.early_stopping=null"])
    prepared = prepare_experiment(timing)
    setup = place_on_device(prepared)
    settings = config.train
    train = torch.as_tensor(prepared.train_indices)
    shuffled = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
    timed = shuffled[:steps * settings.batch_size]
    cnnlab_steps(copy.deepcopy(setup.model), setup, shuffled[:warmup * settings.batch_size], timing, prepared)
    seconds: dict[str, list[float]] = {"cnnlab": [], "plain": []}
    for _ in range(repeats):  # interleaved, so a change in the machine's load touches both alike
        seconds["cnnlab"].append(cnnlab_steps(copy.deepcopy(setup.model), setup, timed, timing, prepared))
        if plain:
            seconds["plain"].append(plain_steps(copy.deepcopy(setup.model), setup, timed, timing, prepared.plan))
    evaluation = evaluation_s_per_image(setup.model, setup, shuffled[:2000], timing, prepared.plan)
    step_s = statistics.median(seconds["cnnlab"])
    steps_per_epoch = _steps_per_epoch(len(train), settings.batch_size)
    validations = sum(1 for epoch in range(1, settings.epochs + 1)
                      if epoch % settings.validate_every == 0 or epoch == settings.epochs)
    validation_s = evaluation * len(prepared.val_indices)
    epoch_s = step_s * steps_per_epoch + validation_s
    run_s = (step_s * steps_per_epoch * settings.epochs + validation_s * validations
             + evaluation * len(prepared.dataset.test_labels))
    plan = prepared.plan
    return {
        "model": name, "dataset": dataset, "batch_size": settings.batch_size, "epochs": settings.epochs,
        "augmented": prepared.augmenter is not None, "precision": plan.precision, "channels_last": plan.channels_last,
        "reason": plan.reason, "threads": torch.get_num_threads(), "train_images": len(train),
        "validation_images": len(prepared.val_indices), "steps_per_epoch": steps_per_epoch, "steps_timed": steps,
        "step_ms": [s * 1e3 for s in seconds["cnnlab"]], "step_ms_median": step_s * 1e3,
        "plain_step_ms": [s * 1e3 for s in seconds["plain"]],
        "cnnlab_over_plain": step_s / statistics.median(seconds["plain"]) if plain else None,
        "evaluation_ms_per_image": evaluation * 1e3, "epoch_s": epoch_s, "run_s": run_s,
        "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
    }


def duration(seconds: float) -> str:
    """A duration in the largest sensible unit: 42 s, 12.5 min, 3.2 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def markdown(rows: list[dict], skipped: dict[str, str], machine: dict, arguments: argparse.Namespace) -> str:
    """The results as a Markdown page: the machine, then one row per model."""
    lines = ["# Epoch costs of the report models on this machine", "",
             f"CPU: {machine['cpu']} ({machine['cores']} cores), flags {', '.join(machine['cpu_flags']) or 'none'}; "
             f"torch {machine['versions']['torch']}, {rows[0]['threads'] if rows else '?'} threads; "
             f"{machine['date']}.", "",
             f"`python bench/epoch_costs.py --steps {arguments.steps} --warmup {arguments.warmup} "
             f"--repeats {arguments.repeats}{' --plain' if arguments.plain else ''}`: `fit` timed over "
             f"{arguments.steps} steps, {arguments.repeats} times after {arguments.warmup} steps of warm-up; the "
             "epoch adds its validation, the run its test evaluation. Load: the 1-minute load average before "
             "and after the row (above the core count, other work shared the CPU and the times are too high).", "",
             "| model | data | batch | precision | aug | ms/step (median, range) | cnnlab/plain | steps/epoch "
             "| epoch | epochs | full run | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        layout = "+CL" if row["channels_last"] else ""
        ratio = f"{row['cnnlab_over_plain']:.2f}" if row["cnnlab_over_plain"] else "-"
        lines.append(f"| {row['model']} | {row['dataset']} | {row['batch_size']} | {row['precision']}{layout} | "
                     f"{'yes' if row['augmented'] else 'no'} | {row['step_ms_median']:.2f} "
                     f"({min(row['step_ms']):.2f}-{max(row['step_ms']):.2f}) | {ratio} | {row['steps_per_epoch']} | "
                     f"{duration(row['epoch_s'])} | {row['epochs']} | {duration(row['run_s'])} | "
                     f"{row['load_average_before']:.1f}/{row['load_average_after']:.1f} |")
    lines += ["", "Precision reasons: " + "; ".join(sorted({f"{row['precision']}: {row['reason']}" for row in rows}))]
    if skipped:
        lines += ["", "Skipped:", *[f"- {name}: {why}" for name, why in skipped.items()]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="zoo names or glob patterns (default: every report model)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="also time a plain PyTorch loop (ratio of medians)")
    parser.add_argument("--name", default="epoch_costs", help="results file name in bench/results")
    arguments = parser.parse_args()
    names = report_models(arguments.models)
    if not names:
        parser.error(f"no report model matches {arguments.models}")
    machine = {**hardware(), "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M")}  # with cpu_flags
    rows, skipped = [], {}
    for name in names:
        try:
            rows.append(measure(name, arguments.steps, arguments.warmup, arguments.repeats, arguments.plain))
        except CnnlabError as error:  # a pretrained backbone whose weights file is not here
            skipped[name] = str(error).split(". ")[0]
            continue
        row = rows[-1]
        print(f"{name}: {row['step_ms_median']:.2f} ms/step, epoch {duration(row['epoch_s'])}, "
              f"run {duration(row['run_s'])} (load {row['load_average_before']:.1f})", flush=True)
    payload = {"machine": machine, "arguments": vars(arguments), "rows": rows, "skipped": skipped}
    write_results(arguments.name, payload, markdown(rows, skipped, machine, arguments))


if __name__ == "__main__":
    main()
