"""CPU speed against peers, same model, recipe, data and machine, in one script run.

Peers, each in a fresh process, in rotating order within every repetition (so slow drifts of the
machine hit all of them alike):
  cnnlab        `cnnlab train MODEL` with its automatic fast path (bf16 autocast where the CPU has
                AMX, channels-last where it helps, fused optimiser, index-gather batches)
  cnnlab-fp32   the same command with train.precision=fp32 train.channels_last=false, to show how
                much of the gain is numeric precision and how much is the training machinery
  plain-pytorch bench/peers/plain_pytorch.py: the reports' code style (PIL + ToTensor per image,
                DataLoader, textbook loop, float32)
  keras-tf      bench/peers/keras_tf.py in .venv-keras (Keras 3 + TensorFlow CPU), when installed

Times are training epochs only (no data loading, compilation or evaluation); the ratio is
median(peer) / median(cnnlab), so 1.5 means cnnlab took two thirds of the peer's time.

    CNNLAB_DATA=../shared/datasets python bench/cpu_speed.py [--repeats 3] [--quick]

Writes bench/results/cpu_speed.json and .md. Never run it while anything else uses the CPU."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchlib import ROOT, cnnlab_train, hardware, hardware_line, mean_std, run_json, versions, write_results

KERAS_PYTHON = ROOT / ".venv-keras" / "bin" / "python"
CASES = [
    # the reports' recipes: Adam lr 1e-3, batch 32; whole training set, no validation split (as Keras' fit)
    {"model": "keras/mnist/model1", "dataset": "mnist", "epochs": 2, "subset": None},
    # praisnet costs minutes per epoch in float32 here: one epoch on a fixed 10,000-image sample
    {"model": "torch/cifar10/praisnet", "dataset": "cifar10-jpeg", "epochs": 1, "subset": 10000},
]


def export_arrays(case: dict, folder: Path) -> Path:
    """The exact arrays cnnlab trains on (same loader, same seeded subset), for the peers."""
    from cnnlab.data import DatasetConfig, load_dataset

    dataset = load_dataset(DatasetConfig(name=case["dataset"], subset=case["subset"]))
    path = folder / f"{case['dataset']}.npz"
    np.savez(path, train_images=dataset.train_images, train_labels=dataset.train_labels,
             test_images=dataset.test_images, test_labels=dataset.test_labels)
    return path


def run_peer(peer: str, case: dict, data: Path, seed: int) -> dict:
    common = ["--data", str(data), "--model", case["model"], "--epochs", str(case["epochs"]), "--seed", str(seed)]
    if peer.startswith("cnnlab"):
        overrides = [f"dataset.name={case['dataset']}", f"train.epochs={case['epochs']}", "train.validation_split=0",
                     f"train.seed={seed}"] + ([f"dataset.subset={case['subset']}"] if case["subset"] else [])
        if peer == "cnnlab-fp32":
            overrides += ["train.precision=fp32", "train.channels_last=false"]
        metrics = cnnlab_train(case["model"], overrides)
        return {"train_time_s": metrics["train_time_s"], "epoch_times_s": metrics["epoch_times_s"],
                "test_accuracy": metrics["test_accuracy"], "fast_path": metrics.get("fast_path")}
    if peer == "plain-pytorch":
        return run_json([sys.executable, "bench/peers/plain_pytorch.py", *common])
    return run_json([str(KERAS_PYTHON), "bench/peers/keras_tf.py", *common], env={"TF_CPP_MIN_LOG_LEVEL": "2"})


def keras_version() -> str | None:
    if not KERAS_PYTHON.exists():
        return None
    result = run_json([str(KERAS_PYTHON), "-c", "import json, keras, tensorflow as tf; "
                                                "print(json.dumps({'keras': keras.__version__, 'tf': tf.__version__}))"])
    return f"keras {result['keras']}, tensorflow-cpu {result['tf']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="run one case, by model name")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2,000 images, 1 epoch (results not kept)")
    args = parser.parse_args()
    keras = keras_version()
    peers = ["cnnlab", "cnnlab-fp32", "plain-pytorch"] + (["keras-tf"] if keras else [])
    cases = [case for case in CASES if args.only in (None, case["model"])]
    if args.quick:
        cases = [{**case, "subset": 2000, "epochs": 1} for case in cases]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for case in cases:
            data = export_arrays(case, Path(folder))
            runs = {peer: [] for peer in peers}
            for repeat in range(args.repeats):
                order = peers[repeat % len(peers):] + peers[:repeat % len(peers)]
                for peer in order:
                    outcome = run_peer(peer, case, data, seed=repeat)
                    print(f"{case['model']} repeat {repeat + 1} {peer}: {outcome['train_time_s']:.1f}s "
                          f"acc {outcome['test_accuracy']:.4f}", file=sys.stderr, flush=True)
                    runs[peer].append(outcome)
            results.append({**case, "images": int(np.load(data)["train_labels"].shape[0]), "runs": runs})

    lines = ["# CPU: cnnlab against peers, same model and recipe", "",
             f"Hardware: {hardware_line()}. Versions: torch "
             f"{versions()['torch']}; {keras or 'Keras-TF not installed'}.",
             f"Command: `CNNLAB_DATA=../shared/datasets python bench/cpu_speed.py --repeats {args.repeats}{' --only ' + args.only if args.only else ''}`. "
             "Each repetition runs every peer once, in rotating order; seeds 0..n-1.", ""]
    for result in results:
        base = statistics.median(run["train_time_s"] for run in result["runs"]["cnnlab"])
        lines += [f"## {result['model']} on {result['dataset']}: {result['epochs']} epoch(s), "
                  f"{result['images']:,} training images, batch 32, Adam 1e-3", "",
                  "| peer | median s/epoch | images/s | test accuracy (mean ± std) | time ratio peer / cnnlab |",
                  "|---|---|---|---|---|"]
        for peer, outcomes in result["runs"].items():
            median = statistics.median(run["train_time_s"] for run in outcomes)
            per_epoch = median / result["epochs"]
            lines.append(f"| {peer} | {per_epoch:.2f} | {result['images'] / per_epoch:,.0f} | "
                         f"{mean_std([run['test_accuracy'] for run in outcomes])} | {median / base:.2f} |")
        lines.append("")
    payload = {"hardware": hardware(), "versions": versions({"keras_tf": keras}), "repeats": args.repeats,
               "command": " ".join(["python", *sys.argv]), "results": results}
    name = "cpu_speed" if not args.only else f"cpu_speed-{args.only.replace('/', '-')}"
    write_results(name + ("-quick" if args.quick else ""), payload, "\n".join(lines))


if __name__ == "__main__":
    main()
