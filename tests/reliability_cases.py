"""The corpus of tests/test_reliability.py: hostile and careless inputs, each a `Case` that writes its
inputs into its own folder and names the `cnnlab` command line to run there (cwd = that folder).

Every payload in the corpus (a pickle or YAML tag calling os.system, builtins.eval, ...) does one
thing only: create the file MARKER beside the case folders, so "a payload ran" is that file existing."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from PIL import Image

from cnnlab import runs

MARKER = "PAYLOAD-RAN"
TINY_CONFIG = """name: tiny
dataset: {name: digits, subset: 300, test_subset: 80}
model:
  layers: ["Conv2D: 4, 3, 1, same", "MaxPooling: 2, 2", "Flatten", "Dense: 10, softmax"]
train: {epochs: 1, batch_size: 64, seed: 0, validation_split: 0.1}
"""
HOSTILE_NAMES = ["$x$", "a$b", "<script>alert(1)</script>", "\\frac{1}{0}", "$\\undefined$", "n" * 60,
                 "caf\udce9", "\udcff\udcfe"]
RUN_FIGURES = {"history.png", "per_class.png", "confusion.png", "confusion_normalized.png", "predictions.png"}
FEATURES = ["--dataset", "digits", "--out", "out", "--subset", "60", "--test-subset", "30", "--device", "cpu",
            "--quiet"]


@dataclass
class Case:
    """One input: ``build(folder, template_run)`` writes it and returns the command line's arguments."""

    name: str
    kind: str
    build: Callable[[Path, Path], list[str]]
    expect: str = "refused"  # "refused": a clean message; "completes": exit 0 and ``check`` passes
    targets: tuple[str, ...] = ("out",)  # the only folders (in the case folder) the command may change
    check: Callable[[Path], bool] = lambda folder: True
    check_passes: bool = False


def payload(folder: Path) -> str:
    """The shell command every payload runs: it only creates the marker file."""
    return f"touch {folder.parent / MARKER}"


class _System:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content)
    return path


def build_template(folder: Path) -> Path:
    """One tiny trained run (digits, one epoch) that the run-folder cases copy and damage."""
    from cnnlab.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "tiny.yaml", TINY_CONFIG)
    saved = os.getcwd()
    os.chdir(folder)
    try:
        code = main(["train", "tiny.yaml", "--out", "run", "--quiet"])
    finally:
        os.chdir(saved)
    if code != 0:
        raise RuntimeError(f"the template run could not be trained (exit {code})")
    return folder / "run"


# --------------------------------------------------------------------------- config and overrides

def config_case(name: str, content: bytes | str, *overrides: str, path: str = "c.yaml") -> Case:
    def build(folder: Path, template: Path) -> list[str]:
        text = content.replace("PAYLOAD", payload(folder)) if isinstance(content, str) else content
        write(folder / path, text)
        return ["train", path, *overrides, "--out", "out", "--quiet"]
    return Case(name, "config and overrides", build)


def command_case(name: str, kind: str, argv: list[str], setup: Callable[[Path], None] = lambda folder: None) -> Case:
    def build(folder: Path, template: Path) -> list[str]:
        write(folder / "tiny.yaml", TINY_CONFIG)
        setup(folder)
        return argv
    return Case(name, kind, build)


def tiny_with(line: str) -> str:
    """The tiny config with one section replaced or added (a YAML mapping merges by top-level key)."""
    config = yaml.safe_load(TINY_CONFIG)
    config.update(yaml.safe_load(line))
    return yaml.safe_dump(config)


def deep_nesting(depth: int) -> str:
    return "a: " + "[" * depth + "]" * depth + "\n"


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join(['*' + chr(97 + level)] * 10)}]\n" for level in range(8))

CONFIG_CASES = [
    config_case("config-empty", ""),
    config_case("config-comments-only", "# nothing but a comment\n# and another\n"),
    config_case("config-top-level-list", "- train\n- epochs\n"),
    config_case("config-top-level-scalar", "just text\n"),
    config_case("config-yaml-syntax-error", "train: {epochs: 1\nmodel: [\n"),
    config_case("config-python-tag-payload", '!!python/object/apply:os.system ["PAYLOAD"]\n'),
    config_case("config-python-name-tag", "train: !!python/name:os.system\n"),
    config_case("config-duplicate-keys", TINY_CONFIG + "train: {epochs: 2}\n"),
    config_case("config-unknown-key", TINY_CONFIG + "trian: {epochs: 2}\n"),
    config_case("config-unknown-nested-key", tiny_with("train: {epoch: 2}")),
    config_case("config-epochs-true", tiny_with("train: {epochs: true}")),
    config_case("config-lr-infinite", tiny_with("optimizer: {name: adam, lr: .inf}")),
    config_case("config-lr-nan", tiny_with("optimizer: {name: adam, lr: .nan}")),
    config_case("config-lr-negative", tiny_with("optimizer: {name: adam, lr: -1}")),
    config_case("config-epochs-negative", tiny_with("train: {epochs: -3}")),
    config_case("config-seed-negative", tiny_with("train: {epochs: 1, seed: -1}")),
    config_case("config-seed-over-32-bits", tiny_with("train: {epochs: 1, seed: 1099511627776}")),
    config_case("config-image-size-huge", tiny_with("dataset: {name: digits, image_size: 1000000}")),
    config_case("config-dense-width-huge", tiny_with('model: {layers: ["Flatten", "Dense: 1000000000", "Dense: 10"]}')),
    config_case("config-kernel-huge-same", tiny_with('model: {layers: ["Conv2D: 4, 5000, 1, same", "Flatten", '
                                                     '"Dense: 10"]}')),
    config_case("config-threads-huge", tiny_with("train: {epochs: 1, threads: 1000000}")),
    config_case("config-batch-size-zero", tiny_with("train: {epochs: 1, batch_size: 0}")),
    config_case("config-validation-split-over-one", tiny_with("train: {epochs: 1, validation_split: 1.5}")),
    config_case("config-unknown-dataset", tiny_with("dataset: {name: imagenet-42}")),
    config_case("config-subset-negative", tiny_with("dataset: {name: digits, subset: -5}")),
    config_case("config-unknown-optimizer", tiny_with("optimizer: {name: adamw2}")),
    config_case("config-unknown-schedule", tiny_with("schedule: {name: zigzag}")),
    config_case("config-layer-notation-garbage", tiny_with('model: {layers: ["Conv2D: many, big"]}')),
    config_case("config-alias-bomb", ALIAS_BOMB),
    config_case("config-deep-nesting", deep_nesting(20000)),
    config_case("config-not-utf8", b"name: caf\xe9\ntrain: {epochs: 1}\n"),
    config_case("config-binary-garbage", bytes(range(256)) * 4),
    config_case("config-2-mib", "# " + "x" * (2 << 20) + "\n"),
    config_case("config-50-mb", b"a: [" + b"1, " * (17 << 20) + b"1]\n"),
    command_case("config-is-a-folder", "config and overrides", ["train", "folder", "--out", "out", "--quiet"],
                 lambda folder: (folder / "folder").mkdir()),
    command_case("config-missing", "config and overrides", ["train", "missing.yaml", "--out", "out", "--quiet"]),
    command_case("config-from-dev-zero", "config and overrides", ["train", "/dev/zero", "--out", "out", "--quiet"]),
    command_case("override-without-equals", "config and overrides", ["train", "tiny.yaml", "train.epochs", "--out",
                                                                      "out", "--quiet"]),
    command_case("override-empty-key", "config and overrides", ["train", "tiny.yaml", "=3", "--out", "out"]),
    command_case("override-not-a-number", "config and overrides", ["train", "tiny.yaml", "train.epochs=abc",
                                                                    "--out", "out"]),
    command_case("override-unknown-key", "config and overrides", ["train", "tiny.yaml", "nosuch.key=1", "--out",
                                                                   "out"]),
    command_case("override-epochs-true", "config and overrides", ["train", "tiny.yaml", "train.epochs=true", "--out",
                                                                   "out"]),
    command_case("override-2-mib-value", "config and overrides", ["train", "tiny.yaml", "name=" + "x" * (2 << 20),
                                                                   "--out", "out"]),
    command_case("override-python-tag", "config and overrides", ["train", "tiny.yaml",
                                                                  "train.epochs=!!python/object/apply:os.system "
                                                                  f"['touch ../{MARKER}']",
                                                                  "--out", "out"]),
    command_case("train-data-dir-is-a-file", "config and overrides", ["train", "tiny.yaml", "--data-dir", "tiny.yaml",
                                                                 "--out", "out", "--quiet"]),
]


# --------------------------------------------------------------------------- damaged run folders

def copy_run(template: Path, destination: Path) -> Path:
    shutil.copytree(template, destination, symlinks=True)
    return destination


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def payload_pickle(folder: Path) -> bytes:
    return pickle.dumps(_System(payload(folder)), protocol=2)


def object_npz(folder: Path, **arrays: np.ndarray) -> bytes:
    """An .npz whose first array is an object array: a pickle (with a payload) inside the zip."""
    buffer = io.BytesIO()
    np.savez(buffer, probabilities=np.array([_System(payload(folder))], dtype=object), **arrays)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def safetensors_bytes() -> bytes:
    from safetensors.numpy import save
    return save({"foreign.weight": np.zeros((3, 3), dtype=np.float32)})


def run_case(name: str, command: str, damage: Callable[[Path, Path], None], expect: str = "refused",
             check: Callable[[Path], bool] = lambda folder: True) -> Case:
    """The template run, copied and damaged by ``damage(run_dir, case_folder)``, given to ``command``."""
    def build(folder: Path, template: Path) -> list[str]:
        run_dir = copy_run(template, folder / "run")
        damage(run_dir, folder)
        if command == "report":
            return ["report", "run"]
        if command == "compare":
            copy_run(template, folder / "good")
            return ["compare", "good", "run", "--out", "out"]
        return ["features", "run", *FEATURES]
    targets = ("run",) if command == "report" else ("out",)
    return Case(f"{command}-{name}", "damaged run folders", build, expect, targets, check)


def replace_file(filename: str, content: Callable[[Path], bytes] | bytes) -> Callable[[Path, Path], None]:
    def damage(run_dir: Path, folder: Path) -> None:
        data = content(folder) if callable(content) else content
        target = run_dir / filename
        if target.is_symlink() or target.exists():
            target.unlink()
        write(target, data)
    return damage


def edit_metrics(**changes) -> Callable[[Path, Path], None]:
    def damage(run_dir: Path, folder: Path) -> None:
        metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
        metrics.update(changes)
        write(run_dir / runs.METRICS_FILE, json.dumps(metrics))
    return damage


def report_mentions(text: str) -> Callable[[Path], bool]:
    return lambda folder: text in (folder / "run" / runs.REPORT_MARKDOWN_FILE).read_text(encoding="utf-8")


def figures_link_outside(run_dir: Path, folder: Path) -> None:
    shutil.rmtree(run_dir / runs.FIGURES_DIR)
    (run_dir / runs.FIGURES_DIR).symlink_to(folder.parent / "outside", target_is_directory=True)


WEIGHTS, PREDICTIONS, EXAMPLES = runs.WEIGHTS_FILE, runs.PREDICTIONS_FILE, runs.EXAMPLES_FILE
METRICS, HISTORY, CONFIG = runs.METRICS_FILE, runs.HISTORY_FILE, runs.CONFIG_FILE
TEN_NAMES = np.array([str(k) for k in range(10)])

RUN_CASES = [
    run_case("weights-truncated", "features", lambda run, folder: truncate(run / WEIGHTS)),
    run_case("weights-garbage", "features", replace_file(WEIGHTS, b"not a safetensors file" * 20)),
    run_case("weights-foreign", "features", replace_file(WEIGHTS, lambda folder: safetensors_bytes())),
    run_case("weights-empty", "features", replace_file(WEIGHTS, b"")),
    run_case("weights-missing", "features", lambda run, folder: (run / WEIGHTS).unlink()),
    run_case("weights-pickle-payload", "features", replace_file(WEIGHTS, payload_pickle)),
    run_case("weights-truncated", "report", lambda run, folder: truncate(run / WEIGHTS), "completes",
             report_mentions(WEIGHTS)),
    run_case("weights-foreign", "report", replace_file(WEIGHTS, lambda folder: safetensors_bytes()), "completes",
             report_mentions(WEIGHTS)),
    run_case("predictions-truncated", "report", lambda run, folder: truncate(run / PREDICTIONS)),
    run_case("predictions-garbage", "report", replace_file(PREDICTIONS, b"garbage" * 100)),
    run_case("predictions-object-array", "report", replace_file(PREDICTIONS, lambda folder: object_npz(
        folder, labels=np.zeros(1, np.int64), class_names=TEN_NAMES))),
    run_case("predictions-pickle-payload", "report", replace_file(PREDICTIONS, payload_pickle)),
    run_case("predictions-missing-array", "report", replace_file(PREDICTIONS, npz_bytes(labels=np.zeros(3, np.int64)))),
    run_case("predictions-wrong-shape", "report", replace_file(PREDICTIONS, npz_bytes(
        probabilities=np.zeros((4, 3, 2), np.float32), labels=np.zeros(4, np.int64), class_names=TEN_NAMES))),
    run_case("predictions-labels-out-of-range", "report", replace_file(PREDICTIONS, npz_bytes(
        probabilities=np.full((4, 10), 0.1, np.float32), labels=np.array([0, 1, 99, -4]), class_names=TEN_NAMES))),
    run_case("predictions-text-probabilities", "report", replace_file(PREDICTIONS, npz_bytes(
        probabilities=np.full((2, 10), "x"), labels=np.zeros(2, np.int64), class_names=TEN_NAMES))),
    run_case("predictions-truncated", "compare", lambda run, folder: truncate(run / PREDICTIONS)),
    run_case("predictions-object-array", "compare", replace_file(PREDICTIONS, lambda folder: object_npz(
        folder, labels=np.zeros(1, np.int64), class_names=TEN_NAMES))),
    run_case("predictions-object-array", "features", replace_file(PREDICTIONS, lambda folder: object_npz(
        folder, labels=np.zeros(1, np.int64), class_names=TEN_NAMES))),
    run_case("examples-truncated", "report", lambda run, folder: truncate(run / EXAMPLES)),
    run_case("examples-object-array", "report", replace_file(EXAMPLES, lambda folder: npz_bytes(
        indices=np.array([_System(payload(folder))], dtype=object), images=np.zeros((1, 1, 8, 8), np.uint8)))),
    run_case("examples-float-images", "report", replace_file(EXAMPLES, npz_bytes(
        indices=np.arange(2), images=np.zeros((2, 1, 8, 8), np.float64)))),
    run_case("examples-missing-images", "features", replace_file(EXAMPLES, npz_bytes(indices=np.arange(2)))),
    run_case("metrics-list", "report", replace_file(METRICS, b"[1, 2, 3]")),
    run_case("metrics-string", "report", replace_file(METRICS, b'"complete"')),
    run_case("metrics-wrong-types", "report", edit_metrics(test_accuracy="high", params=[1], name={"a": 1})),
    run_case("metrics-augmentation-number", "report", edit_metrics(augmentation=5)),
    run_case("metrics-invalid-json", "report", replace_file(METRICS, b'{"status": "complete", ')),
    run_case("metrics-not-utf8", "report", replace_file(METRICS, b'{"name": "caf\xe9"}')),
    run_case("metrics-deep-nesting", "report", replace_file(METRICS, b"[" * 100000 + b"]" * 100000)),
    run_case("metrics-empty", "report", replace_file(METRICS, b"")),
    run_case("metrics-missing", "report", lambda run, folder: (run / METRICS).unlink()),
    run_case("metrics-list", "compare", replace_file(METRICS, b"[]")),
    run_case("metrics-list", "features", replace_file(METRICS, b"[]")),
    run_case("metrics-normalization-damaged", "features", edit_metrics(normalization={"mean": "abc"})),
    run_case("history-garbage-text", "report", replace_file(HISTORY, b"hello world\nthis is, not a history\n")),
    run_case("history-binary", "report", replace_file(HISTORY, bytes(range(256)) * 8)),
    run_case("history-not-utf8", "report", replace_file(HISTORY, b"epoch,train_loss\n1,0.5\xff\n")),
    run_case("history-extra-fields", "report", replace_file(HISTORY, b"epoch,train_loss\n1,0.5,7,8\n")),
    run_case("history-garbage", "compare", replace_file(HISTORY, b"epoch,val_loss\none,two\n")),
    run_case("config-list", "report", replace_file(CONFIG, b"- a\n- b\n")),
    run_case("config-python-tag-payload", "report", replace_file(
        CONFIG, lambda folder: f'!!python/object/apply:os.system ["{payload(folder)}"]\n'.encode())),
    run_case("config-invalid-yaml", "report", replace_file(CONFIG, b"model: [\n")),
    run_case("config-not-utf8", "report", replace_file(CONFIG, b"name: caf\xe9\n")),
    run_case("config-worst-n-text", "report", replace_file(CONFIG, b"analysis: {worst_n: many}\n")),
    run_case("config-list", "features", replace_file(CONFIG, b"- a\n")),
    run_case("config-python-tag-payload", "features", replace_file(
        CONFIG, lambda folder: f'!!python/object/apply:os.system ["{payload(folder)}"]\n'.encode())),
    run_case("config-model-garbage", "features", replace_file(CONFIG, b"model: {name: 5}\n")),
    run_case("summary-not-utf8", "report", replace_file(runs.SUMMARY_FILE, b"Layer \xff\xfe\n")),
    run_case("environment-list", "report", replace_file(runs.ENVIRONMENT_FILE, b"[1]")),
    run_case("augmentation-object-array", "report", lambda run, folder: (edit_metrics(augmentation=["flip"])(
        run, folder), replace_file(runs.AUGMENTATION_FILE, lambda f: npz_bytes(
            originals=np.array([_System(payload(f))], dtype=object), augmented=np.zeros(1)))(run, folder))),
    run_case("figures-link-outside", "report", figures_link_outside, "either"),
]


# --------------------------------------------------------------------------- class names are data

def fake_run(run_dir: Path, class_names: list[str], seed: int = 0) -> Path:
    """A run folder written with runs' own helpers, predictions over ``class_names``."""
    rng = np.random.default_rng(seed)
    n, k = 60, len(class_names)
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.0
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    runs.write_npz_atomic(run_dir / PREDICTIONS, probabilities=probabilities, labels=labels,
                          class_names=np.array(class_names))
    runs.write_npz_atomic(run_dir / EXAMPLES, indices=np.arange(n), images=rng.integers(0, 256, (n, 3, 8, 8),
                                                                                        dtype=np.uint8))
    runs.write_json_atomic(run_dir / METRICS, {"name": "$name$", "dataset": "imagefolder", "status": "complete"})
    history = [{"epoch": epoch, "train_loss": 1 / epoch, "train_accuracy": 0.5, "val_loss": 1.1 / epoch,
                "val_accuracy": 0.5, "lr": 0.1, "epoch_time_s": 1.0} for epoch in (1, 2, 3)]
    runs.write_csv_atomic(run_dir / HISTORY, history, runs.HISTORY_COLUMNS)
    return run_dir


def every_figure(folder: Path, report: str = "run/report.md", figures: str = "run/figures") -> bool:
    names = {path.name for path in (folder / figures).iterdir()}
    text = (folder / report).read_text(encoding="utf-8")
    return "could not be drawn" not in text and (RUN_FIGURES <= names if "run" in figures else len(names) >= 2)


def hostile_tree(folder: Path, names: list[str]) -> None:
    for index, name in enumerate(names):
        for image in range(6):
            colour = ((index * 40) % 256, (image * 30) % 256, 128)
            path = folder / "tree" / name / f"{image}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), colour).save(path)


def hostile_train(folder: Path, template: Path) -> list[str]:
    hostile_tree(folder, HOSTILE_NAMES)
    config = yaml.safe_load(TINY_CONFIG)
    config["dataset"] = {"name": "imagefolder:tree", "image_size": 8}
    config["model"]["layers"][-1] = "Dense: classes"
    write(folder / "c.yaml", yaml.safe_dump(config))
    return ["train", "c.yaml", "--out", "out", "--quiet"]


NAME_CASES = [
    Case("report-hostile-class-names", "hostile class names",
         lambda folder, template: ["report", str(fake_run(folder / "run", HOSTILE_NAMES))], "completes", ("run",),
         every_figure),
    Case("compare-hostile-class-names", "hostile class names",
         lambda folder, template: ["compare", str(fake_run(folder / "a", HOSTILE_NAMES)),
                                   str(fake_run(folder / "b", HOSTILE_NAMES[::-1], seed=1)), "--out", "out"],
         "completes", ("out",), lambda folder: every_figure(folder, "out/comparison.md", "out/figures")),
    Case("train-imagefolder-hostile-folder-names", "hostile class names", hostile_train, "completes", ("out",),
         lambda folder: every_figure(folder, "out/report.md", "out/figures") and
         RUN_FIGURES <= {path.name for path in (folder / "out" / "figures").iterdir()}),
    Case("explore-imagefolder-hostile-folder-names", "hostile class names",
         lambda folder, template: (hostile_tree(folder, HOSTILE_NAMES), ["explore", "imagefolder:tree", "--out",
                                                                         "out"])[1],
         "completes", ("out",), lambda folder: every_figure(folder, "out/explore.md", "out/figures")),
]
