"""The `cnnlab` command line's parser: one sub-command per entry of `COMMANDS`, each with --help, the
options several commands share as parent parsers, and the examples shown by `cnnlab --help`."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab import __version__

EPILOG = """examples:
  cnnlab train digits                                   train the offline default (examples/digits.yaml)
  cnnlab train keras/mnist/model1 train.epochs=3        a zoo model with its report's recipe, 3 epochs
  cnnlab train my.yaml optimizer.lr=0.01 --out runs/x   dotted overrides, chosen run directory
  cnnlab train keras/mnist/model1 --seeds 3             3 seeds, one folder: a run each and mean ± std
  cnnlab summary keras/mnist/model2 --dataset mnist     Keras-style model summary
  cnnlab report runs/RUN                                rebuild a report from saved artefacts
  cnnlab compare runs/A runs/B --out runs/cmp           comparison table and overlaid curves
  cnnlab models                                         the zoo, the example configs and the suites
  cnnlab predict runs/RUN photo.jpg images/             class probabilities for your own images
  cnnlab export runs/RUN                                ONNX: uint8 in, probabilities out; checked with onnxruntime

  cnnlab explore cifar10-jpeg                            shapes, class balance, sample images
  cnnlab augment-preview keras/cifar10/model9           originals beside augmented images
  cnnlab suite report000-keras-mnist                    a whole report's study, then one comparison

  cnnlab runs --sort -test_accuracy                     your runs, with ids usable wherever a run folder is
  cnnlab tune digits --param optimizer.lr=loguniform:1e-4:1e-1 --trials 20 --workers 2   Optuna on validation
  cnnlab tensorboard runs/RUN                           TensorBoard event files for a trained run
  torchrun --nproc-per-node=2 -m cnnlab train CONFIG    one run on two processes (data-parallel)

  cnnlab lr-find keras/cifar10/model9 --out runs/lrf    loss against learning rate, with a suggested lr
  cnnlab features runs/RUN --dataset digits             kNN and linear probe on a run's penultimate features
  cnnlab features efficientnet-lite0 --dataset cifar10-jpeg --out runs/feat   the same for a pretrained backbone

datasets: digits, mnist, fashion-mnist, cifar10, cifar10-jpeg, imagefolder:PATH. Files are read
from --data-dir, $CNNLAB_DATA or ~/.cache/cnnlab (downloaded there with checksums when online).

exit codes: 0 done; 2 a usage error or bad input (one paragraph names the file or field; --debug shows
the traceback); 3 training diverged; 130 / 143 interrupted by Ctrl-C (SIGINT) / SIGTERM, checkpoint kept."""


MAX_WORKERS = 64
MAX_SEED_COUNT = 100  # training.settings.MAX_SEEDS, not imported: `cnnlab --help` loads no stage
DATA_DIR_HELP = "where datasets are found (default: $CNNLAB_DATA, then ~/.cache/cnnlab)"
SEEDS_HELP = ("train {what} with N seeds, train.seed, train.seed+1, ... (0..N-1 by default; sets train.seeds) "
              "into one folder: a run per seed in seed-<s>/, and their mean ± std (sample, ddof=1), min and max in "
              "the folder's metrics.json and report; run again, it skips complete seeds and resumes unfinished ones")


@dataclass(frozen=True)
class SharedOptions:
    """Parent parsers (argparse ``parents=[...]``) holding the options several commands share."""

    debug: argparse.ArgumentParser  # --debug, accepted after the command too (cnnlab train x.yaml --debug)
    data_dir: argparse.ArgumentParser  # --data-dir
    experiment: argparse.ArgumentParser  # CONFIG and its KEY=VALUE overrides
    overwrite: argparse.ArgumentParser  # --overwrite: replace cnnlab's own earlier output in --out


def build_parser() -> argparse.ArgumentParser:
    """The `cnnlab` parser: one sub-command per entry of COMMANDS, each with --help and the shared options."""
    parser = argparse.ArgumentParser(
        prog="cnnlab", description="Image-classification experiments with CNNs: one YAML file, one command, a full report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    shared = _shared_options()
    for add_command in (_add_train, _add_report, _add_compare, _add_summary, _add_models, _add_explore,
                        _add_augment_preview, _add_suite, _add_lr_find, _add_features, _add_predict, _add_export,
                        _add_tune, _add_runs, _add_tensorboard):
        add_command(commands, shared)
    return parser


def _shared_options() -> SharedOptions:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    experiment = argparse.ArgumentParser(add_help=False)
    experiment.add_argument("config", help="experiment YAML file, an example's name (digits) or a zoo name "
                                                "such as keras/mnist/model1")
    experiment.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=3")
    overwrite = argparse.ArgumentParser(add_help=False)
    overwrite.add_argument("--overwrite", action="store_true", help="replace cnnlab's earlier output in --out: the "
                           "new one is built beside it and swapped in once complete (never your own folders)")
    return SharedOptions(debug, data_dir, experiment, overwrite)


def _add_train(commands: Any, shared: SharedOptions) -> None:
    train = commands.add_parser(
        "train", parents=[shared.debug, shared.data_dir, shared.overwrite],
        help="train and evaluate one experiment, write its run directory and report",
        description="Train CONFIG (a YAML file or a zoo name) with KEY=VALUE overrides, evaluate on the test set "
                    "and write the report (its folder printed last). Ctrl-C or SIGTERM stop with a checkpoint.")
    train.add_argument("config", nargs="?", help="experiment YAML file, an example's name (digits) or a zoo name "
                                                 "such as keras/mnist/model1 "
                                                 "(with --resume: leave out, the run's own config.yaml is used)")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=3")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue an interrupted run from its checkpoint, with its own config (only "
                            "train.epochs=N raised is accepted, to train longer)")
    train.add_argument("--out", type=Path, help="run directory (default: runs/<timestamp>-<name>)")
    train.add_argument("--quiet", action="store_true", help="no progress output, only the run directory")
    train.add_argument("--weights", metavar="PATH",
                       help="pretrained backbone weights file (.pth or .safetensors): sets model.weights")
    train.add_argument("--seeds", type=_seed_count, metavar="N", help=SEEDS_HELP.format(what="the experiment"))


def _add_report(commands: Any, shared: SharedOptions) -> None:
    report = commands.add_parser("report", parents=[shared.debug],
                                 help="rebuild report.md and report.html from a run directory")
    report.add_argument("run_dir", type=Path, help="a run directory written by cnnlab train, or its id (cnnlab runs)")
    report.add_argument("--worst", type=_worst_count, default=None,
                        help="how many worst-classified images to show, 1 to 50 (default: the config's analysis.worst_n)")


def _add_compare(commands: Any, shared: SharedOptions) -> None:
    compare = commands.add_parser("compare", parents=[shared.debug, shared.overwrite],
                                  help="compare finished runs: table and overlaid validation curves")
    compare.add_argument("run_dirs", nargs="+", type=Path, help="finished run directories, or their ids (cnnlab runs)")
    compare.add_argument("--out", type=Path, required=True, help="folder for comparison.csv/.md/.html")


def _add_summary(commands: Any, shared: SharedOptions) -> None:
    summary = commands.add_parser("summary", parents=[shared.debug],
                                  help="print a Keras-style summary of a zoo model or a config's model")
    summary.add_argument("model", help="zoo name or experiment YAML file")
    summary.add_argument("--dataset", help="dataset whose input shape to use (default: the model's own)")
    summary.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP + " (only image folders need reading)")


def _add_models(commands: Any, shared: SharedOptions) -> None:
    commands.add_parser("models", parents=[shared.debug],
                        help="list the zoo: name, dataset, parameters, description, source report")


def _add_explore(commands: Any, shared: SharedOptions) -> None:
    explore = commands.add_parser(
        "explore", parents=[shared.debug, shared.data_dir, shared.overwrite],
        help="shape, value range, class balance, channel statistics and sample images",
        description="Print what DATASET holds and write the class-balance chart, a grid of the first images of "
                    "each class and a small report into --out.")
    explore.add_argument("dataset", help="dataset name: digits, mnist, fashion-mnist, cifar10, cifar10-jpeg, imagefolder:PATH")
    explore.add_argument("--out", type=Path, help="output folder (default: runs/explore-<dataset>)")
    explore.add_argument("--per-class", type=int, default=10, help="images of each class in the grid (default 10)")


def _add_augment_preview(commands: Any, shared: SharedOptions) -> None:
    preview = commands.add_parser(
        "augment-preview", parents=[shared.debug, shared.experiment, shared.data_dir, shared.overwrite],
        help="write originals beside augmented versions for a config",
        description="Apply CONFIG's augment: section to the first training images and write augmentation.png "
                    "(one row per image: original, then augmented versions).")
    preview.add_argument("--out", type=Path, default=Path("runs/augment-preview"), help="output folder")
    preview.add_argument("--count", type=int, default=8, help="how many images (rows)")
    preview.add_argument("--views", type=int, default=5, help="augmented versions per image")


def _add_suite(commands: Any, shared: SharedOptions) -> None:
    suite = commands.add_parser(
        "suite", parents=[shared.debug, shared.overwrite],
        help="run a whole study: several experiments, then one comparison report",
        description="Run every experiment of SUITE.yaml in order (one run directory each, complete ones skipped), "
                    "then write the comparison (and the sweep table for a sweep suite). KEY=VALUE overrides apply "
                    "to every experiment. With --workers K, K processes share the experiments.")
    suite.add_argument("suite", type=Path, help="suite YAML file, or the name of a suite that ships with cnnlab "
                                                "(`cnnlab models` lists them)")
    suite.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to every experiment, e.g. train.epochs=2")
    suite.add_argument("--out", type=Path, help="suite folder (default: runs/suite-<name>)")
    suite.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    suite.add_argument("--quiet", action="store_true", help="no progress output, only the written files")
    suite.add_argument("--seeds", type=_seed_count, metavar="N", help=SEEDS_HELP.format(what="every experiment"))
    suite.add_argument("--workers", type=_worker_count, default=1, metavar="K",
                       help="run the experiments in K processes (on GPUs each gets its own device, round-robin over "
                            "the visible ones). Each experiment is claimed before it runs, so it runs once; more "
                            "`cnnlab suite` commands on the same --out (other terminals, machines sharing the folder) "
                            "join in the same way, and a claim whose process died is taken over")
    suite.add_argument("--worker-label", help=argparse.SUPPRESS)  # set by --workers: a worker's name in messages


def _add_lr_find(commands: Any, shared: SharedOptions) -> None:
    lr_find = commands.add_parser(
        "lr-find", parents=[shared.debug, shared.experiment, shared.data_dir, shared.overwrite],
        help="learning-rate range test: loss against lr on a short exponential sweep",
        description="Train a fresh model of CONFIG for a few steps while the learning rate grows exponentially "
                    "(default 1e-7 to 10 over 100 steps), on the same data path as training, until the smoothed "
                    "loss exceeds 4x its minimum or becomes NaN. Writes lr_find.csv, lr_find.png and lr_find.json "
                    "into --out and prints the suggested lr (where the smoothed loss falls fastest) and how the "
                    "config's own lr compares. No weights are saved.")
    lr_find.add_argument("--out", type=Path, help="output folder (default: runs/lr-find-<name>)")
    lr_find.add_argument("--steps", type=int, default=100, help="sweep length in training steps (default 100)")
    lr_find.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    lr_find.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    lr_find.add_argument("--quiet", action="store_true", help="no progress output")


def _add_features(commands: Any, shared: SharedOptions) -> None:
    features = commands.add_parser(
        "features", parents=[shared.debug, shared.data_dir, shared.overwrite],
        help="penultimate-layer features, then a kNN classifier and a linear probe",
        description="Extract the features a trained run (RUN_DIR: the input of its last Dense layer) or a pretrained "
                    "backbone (e.g. efficientnet-lite0, resnet18) gives every train and test image of DATASET, fit "
                    "a kNN classifier (k chosen on a validation share) and a logistic-regression linear probe on "
                    "the training features, and write metrics.json, report.md and report.html into --out.")
    features.add_argument("source", metavar="RUN_DIR_or_BACKBONE", help="a run directory, or a backbone name")
    features.add_argument("--dataset", required=True, help="dataset name, e.g. digits, mnist, cifar10-jpeg")
    features.add_argument("--out", type=Path, help="output folder (default: runs/<timestamp>-features-...)")
    features.add_argument("--subset", type=int, help="use only the first N training images")
    features.add_argument("--test-subset", type=int, help="use only the first N test images")
    features.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    features.add_argument("--weights", type=Path, help="weights file to use instead of the run's or the backbone's usual one")
    features.add_argument("--device", default="auto", help="auto (the GPU when present), cpu, cuda or cuda:N")
    features.add_argument("--input-size", type=int, help="backbones only: resize images to this size "
                                                          "(default: the backbone's own, 224 for efficientnet-lite0)")
    features.add_argument("--no-cache", action="store_true",
                          help="backbones: compute the features even when the feature cache (shared with `cnnlab "
                               "train`) holds them; the fresh ones replace the cached")
    features.add_argument("--quiet", action="store_true", help="no progress output, only the output folder")


def _add_predict(commands: Any, shared: SharedOptions) -> None:
    predict = commands.add_parser(
        "predict", parents=[shared.debug],
        help="classify your own images with a trained run: class names and probabilities",
        description="Decode each IMAGE (PNG, JPEG, BMP, WebP or GIF, any size and mode; EXIF orientation honoured), "
                    "or every image in a FOLDER or archive, prepare it the way RUN_DIR's training images were "
                    "(channels, size, normalisation; the run's test-time views when it used them) and print the "
                    "top-K classes with their probabilities. Unreadable files are listed and skipped.")
    predict.add_argument("run_dir", type=Path, help="a run directory written by cnnlab train, or its id (cnnlab runs)")
    predict.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER",
                         help="image files, folders of images, or .zip/.tar archives of images")
    predict.add_argument("--top-k", type=int, default=3, help="classes shown per image (default 3)")
    predict.add_argument("--format", choices=("table", "csv", "json"), default="table", dest="output_format",
                         help="output format (default: a table)")
    predict.add_argument("--out", type=Path, help="write the output to this file instead of standard output")
    predict.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    predict.add_argument("--device", default="auto", help="auto (the GPU when present), cpu, cuda or cuda:N")


def _add_export(commands: Any, shared: SharedOptions) -> None:
    export = commands.add_parser(
        "export", parents=[shared.debug, shared.data_dir],
        help="export a trained run to ONNX (or a torch.export program), checked against PyTorch",
        description="Write RUN_DIR's network as a model that takes uint8 images (N, C, H, W) and returns class "
                    "probabilities, with the normalisation inside the graph, a dynamic batch size and the class "
                    "names in its metadata; then run the run's test images through both and print the check "
                    "(same top-1 on all, largest probability difference). Nothing is written when the check "
                    "fails. ONNX needs `pip install cnnlab[export]`.")
    export.add_argument("run_dir", type=Path, help="a run directory written by cnnlab train")
    export.add_argument("--format", choices=("onnx", "pt2"), default="onnx", dest="export_format",
                        help="onnx (default) or pt2 (a torch.export program: torch.export.load(path).module())")
    export.add_argument("--out", type=Path, help="output file (default: RUN_DIR/model.onnx or RUN_DIR/model.pt2); "
                                                 "replaces only cnnlab's own exports")
    export.add_argument("--no-check", action="store_true", help="skip the check against PyTorch")


def _add_tune(commands: Any, shared: SharedOptions) -> None:
    tune = commands.add_parser(
        "tune", parents=[shared.debug, shared.data_dir],
        help="search hyperparameters with Optuna: each trial a run folder, compared on validation; report, best.yaml",
        description="Train CONFIG once per trial with values Optuna draws for each --param, compare the trials on "
                    "their validation metric (never the test set), stop hopeless ones early (median pruner) and "
                    "write the study's report and the best config (best.yaml) into --out. CONFIG may also be a tune "
                    "file (YAML with run:, params:, trials:, ...). The study is kept in SQLite in --out, or in "
                    "--storage: the same command run again, on this machine or others, continues or joins it until "
                    "it holds --trials trials. See docs/tune.md.")
    tune.add_argument("config", help="experiment YAML file, an example's name (digits), a zoo name, or a tune file")
    tune.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                      help="dotted overrides of every trial, e.g. train.epochs=10")
    tune.add_argument("--param", action="append", default=[], metavar="KEY=SPEC",
                      help="a parameter to search: KEY=loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH[:STEP], "
                           "logint:LOW:HIGH or choice:A,B,C (repeat for several)")
    tune.add_argument("--trials", type=_positive, metavar="N", help="trials the study runs in all (default 20)")
    tune.add_argument("--metric", choices=("val_accuracy", "val_loss"), help="the validation metric compared "
                      "(default val_accuracy, maximised; val_loss is minimised)")
    tune.add_argument("--storage", metavar="URL", help="the study's database, any SQLAlchemy URL, e.g. "
                      "postgresql+psycopg://user:password@host/db (default: sqlite:///OUT/study.db)")
    tune.add_argument("--study", metavar="NAME", help="the study's name in the storage (default: the config's name)")
    tune.add_argument("--workers", type=_positive, metavar="K", help="worker processes on this machine (default 1)")
    tune.add_argument("--out", type=Path, help="study folder (default: runs/tune-<study>)")
    tune.add_argument("--seed", type=int, help="sampler seed (worker k of this command uses seed + k)")
    tune.add_argument("--no-prune", action="store_true", help="run every trial to its end (no median pruner)")
    tune.add_argument("--quiet", action="store_true", help="no progress bars, only a line per trial")


def _add_runs(commands: Any, shared: SharedOptions) -> None:
    listing = commands.add_parser(
        "runs", parents=[shared.debug],
        help="the table of your runs: id, name, dataset, model, seeds, status, test accuracy, time, date",
        description="List the runs and multi-seed folders under FOLDER from its run index (FOLDER/index.sqlite: "
                    "built when missing, updated when a run finishes, checked against the folders on every "
                    "listing). A run's id (8 hex digits, from its folder's path) can be given to compare, report "
                    "and predict instead of its folder.")
    listing.add_argument("folder", nargs="?", type=Path, default=Path("runs"), help="folder of runs (default: runs)")
    listing.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                         help="keep runs where KEY=VALUE (or !=, <, <=, >, >=; * and ? match any text), e.g. "
                              "dataset=mnist, name=keras-*, test_accuracy>=0.9; repeat to combine")
    listing.add_argument("--sort", metavar="[-]KEY[,...]", help="sort by KEY (-KEY: descending), e.g. -test_accuracy "
                                                               "or dataset,-date (default: newest first)")
    listing.add_argument("--limit", type=int, metavar="N", help="show at most N runs")
    listing.add_argument("--rebuild", action="store_true", help="rebuild the index from the folders (runs copied "
                                                                "or moved in, or made by an older cnnlab)")
    listing.add_argument("--all", action="store_true", dest="include_seed_runs",
                         help="also list each seed's run inside multi-seed folders")
    # `--sort -test_accuracy`: argparse would take "-test_accuracy" for an option; as a "negative number" it
    # is a value (this parser has no option that looks like one)
    listing._negative_number_matcher = re.compile(r"-\d+$|-\d*\.\d+$|-[A-Za-z_][A-Za-z_,+-]*$")


def _add_tensorboard(commands: Any, shared: SharedOptions) -> None:
    tensorboard = commands.add_parser(
        "tensorboard", parents=[shared.debug],
        help="write TensorBoard event files for runs already trained (curves, confusion matrix, hyperparameters)",
        description="Write each RUN_DIR's TensorBoard events into RUN_DIR/tensorboard/ from its history.csv, "
                    "metrics.json, predictions.npz and config.yaml (the same events train.tensorboard=true writes "
                    "while training), replacing the event files written there before; a multi-seed folder "
                    "converts each seed's run. Then: tensorboard --logdir runs. Needs `pip install cnnlab[tensorboard]`.")
    tensorboard.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                             help="run directories written by cnnlab train (or multi-seed folders)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seed_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of seeds, not {text!r}") from None
    if not 1 <= value <= MAX_SEED_COUNT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SEED_COUNT} seeds")
    return value


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of worker processes, not {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_WORKERS} worker processes")
    return value


def _worst_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 50:
        raise argparse.ArgumentTypeError("must be between 1 and 50 (the run directory keeps 50 example images)")
    return value
