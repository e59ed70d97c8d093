"""What each `cnnlab` sub-command does: read its arguments, call the stage that does the work, print
what it wrote.

Each ``command_*`` function imports the stages it needs inside its body, on purpose: `cnnlab --help`
and a mistyped command then answer at once, without loading torch, matplotlib or scikit-learn."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
from pathlib import Path

from cnnlab.errors import CnnlabError, TrainingInterrupted

def command_train(args: argparse.Namespace) -> int:
    from cnnlab.config import load_config
    from cnnlab.errors import TrainingDiverged
    from cnnlab.experiment import resume_experiment, run_experiment
    from cnnlab.output_folders import output_kind
    from cnnlab.studies.seeds import resume_seeds, run_seeds, with_seed_count

    weights = [f"model.weights={Path(args.weights).expanduser().resolve()}"] if args.weights else []
    source, overrides = args.config, [*args.overrides, *weights]
    if args.resume is not None and source is not None and "=" in source and not Path(source).exists():
        source, overrides = None, [source, *overrides]  # `--resume RUN_DIR train.epochs=30`: no CONFIG
    try:
        if args.resume is not None:
            if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
                raise CnnlabError("--resume continues a run in its own folder: leave out --out.")
            if output_kind(args.resume) == "seeds":  # a multi-seed folder: its seeds continued, with its config
                run_dir = resume_seeds(args.resume, args.data_dir, not args.quiet, overrides)
            else:
                run_dir = resume_experiment(args.resume, args.data_dir, not args.quiet, overrides,
                                            config_source=source)
        elif source is None:
            raise CnnlabError("cnnlab train needs CONFIG (a YAML file or a zoo name such as keras/mnist/model1), "
                              "or --resume RUN_DIR to continue an interrupted run.")
        else:
            config = load_config(source, overrides)
            config = with_seed_count(config, args.seeds) if args.seeds is not None else config
            train = run_seeds if config.train.seeds else run_experiment  # train.seeds: one run per seed
            run_dir = train(config, out=args.out, data_dir=args.data_dir, show_progress=not args.quiet,
                            overwrite=args.overwrite)
    except TrainingDiverged as error:
        print(paragraph(f"error: {error}"), file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") == "0":  # under torchrun, process 0 alone prints the folder (no interleaving)
        print(run_dir)
    return 0


def command_report(args: argparse.Namespace) -> int:
    from cnnlab import runs
    from cnnlab.output_folders import output_kind
    from cnnlab.report.run_report import write_report
    from cnnlab.analysis.run_index import resolve_run
    from cnnlab.report.seeds_report import write_seeds_report

    run_dir = runs.require_run_dir(resolve_run(args.run_dir))  # a folder, or a run id from `cnnlab runs`
    if output_kind(run_dir) == "seeds":  # a multi-seed folder: the aggregate's report (each seed has its own)
        markdown, html = write_seeds_report(run_dir)
    else:  # without --worst, the run's config.yaml (analysis.worst_n) decides, read and checked by write_report
        markdown, html = write_report(run_dir, worst_n=args.worst)
    print(markdown)
    print(html)
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from cnnlab.analysis.run_index import resolve_run
    from cnnlab.report.comparison import compare_runs

    run_dirs = [resolve_run(run_dir) for run_dir in args.run_dirs]  # folders, or run ids from `cnnlab runs`
    print(*compare_runs(run_dirs, args.out, args.overwrite).values(), sep="\n")
    return 0


def command_summary(args: argparse.Namespace) -> int:
    from cnnlab.api import summary

    print(summary(args.model, dataset=args.dataset, data_dir=args.data_dir))
    return 0


def command_models(args: argparse.Namespace) -> int:
    from cnnlab.bundled import example_names, suite_names
    from cnnlab.models.listing import zoo_listing

    print(zoo_listing())
    print(f"\nexample configs (cnnlab train NAME): {', '.join(example_names())}")
    print(f"suites (cnnlab suite NAME): {', '.join(suite_names())}")
    return 0


def command_explore(args: argparse.Namespace) -> int:
    from cnnlab.data import load_dataset
    from cnnlab.studies.explore import describe_dataset, explore_into, format_description

    dataset = load_dataset(args.dataset, args.data_dir)
    print(format_description(describe_dataset(dataset)))
    print(explore_into(dataset, args.out, max(1, args.per_class), args.overwrite))
    return 0


def command_augment_preview(args: argparse.Namespace) -> int:
    from cnnlab.studies.augment_preview import write_preview
    from cnnlab.config import load_config

    config = load_config(args.config, args.overrides)
    print(write_preview(config, args.out, args.data_dir, max(1, args.count), max(1, args.views), args.overwrite))
    return 0


def command_suite(args: argparse.Namespace) -> int:
    from cnnlab.studies.suite import WorkerSettings, load_suite, run_suite
    from cnnlab.studies.suite_workers import run_suite_workers

    suite = load_suite(args.suite, args.overrides)
    out = args.out or Path("runs") / f"suite-{suite.name}"
    try:
        if args.workers > 1:  # each worker: this command on the same folder, in the session the parent starts
            command = ["suite", str(args.suite), *args.overrides, "--out", str(out)]
            command += [*(["--data-dir", str(args.data_dir)] if args.data_dir else []),
                        *(["--seeds", str(args.seeds)] if args.seeds else []),
                        *(["--overwrite"] if args.overwrite else []), *(["--quiet"] if args.quiet else []),
                        *(["--debug"] if getattr(args, "debug", False) else [])]
            written = run_suite_workers(suite, out, command, args.workers, args.data_dir, not args.quiet,
                                        args.overwrite, args.seeds)
        else:  # a worker started by --workers shows what it claims, not training progress
            settings = WorkerSettings(label=args.worker_label or "", log_claims=not args.quiet)
            written = run_suite(suite, out, data_dir=args.data_dir, overwrite=args.overwrite, seed_count=args.seeds,
                                show_progress=not args.quiet and not args.worker_label, worker=settings)
    except TrainingInterrupted as error:
        print(paragraph(f"interrupted: {error} Run the same `cnnlab suite` command again to continue: complete "
                        "experiments are skipped, unfinished ones resumed from their checkpoints."), file=sys.stderr)
        return 128 + error.signal_number
    print(*written.values(), out, sep="\n")
    return 0


def command_lr_find(args: argparse.Namespace) -> int:
    from cnnlab.config import load_config
    from cnnlab.studies.lr_find import checked_out, find_lr, write_lr_finder

    config = load_config(args.config, args.overrides)
    out = checked_out(config, args.out, args.overwrite)  # refused before the sweep, not after
    result = find_lr(config, data_dir=args.data_dir, start=args.start, end=args.end, steps=args.steps,
                     show_progress=not args.quiet)
    paths = write_lr_finder(result, out, args.overwrite)
    suggestion = "none" if result.suggested_lr is None else f"{result.suggested_lr:.3g}"
    print(f"stopped after {len(result.lrs)} steps: {result.stop_reason}")
    print(f"suggested lr: {suggestion} (steepest fall of the smoothed loss; min-loss lr / 10 = "
          f"{'n/a' if result.min_loss_lr is None else f'{result.min_loss_lr / 10:.3g}'})")
    print(paragraph(result.diagnosis))
    print(*paths.values(), sep="\n")
    return 0


def command_features(args: argparse.Namespace) -> int:
    from cnnlab.studies.features import run_features

    for option in ("subset", "test_subset", "batch_size", "input_size"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise CnnlabError(f"--{option.replace('_', '-')} must be a positive number of images, "
                              f"not {getattr(args, option)}.")
    print(run_features(args.source, args.dataset, out=args.out, data_dir=args.data_dir, subset=args.subset,
                       test_subset=args.test_subset, batch_size=args.batch_size, weights=args.weights,
                       device_name=args.device, show_progress=not args.quiet, input_size=args.input_size,
                       use_cache=not args.no_cache, overwrite=args.overwrite))
    return 0


def command_predict(args: argparse.Namespace) -> int:
    from cnnlab import runs
    from cnnlab.analysis.predict import Predictor
    from cnnlab.analysis.prediction_formats import format_predictions, skipped_lines
    from cnnlab.analysis.run_index import resolve_run
    from cnnlab.errors import shorten

    for option, value in (("top-k", args.top_k), ("batch-size", args.batch_size)):
        if value < 1:
            raise CnnlabError(f"--{option} must be at least 1, not {value}.")
    if args.out is not None and args.out.is_dir():
        raise CnnlabError(f"--out {args.out} is a folder: give the file to write, e.g. "
                          f"{args.out / 'predictions.csv'}.")
    predictor = Predictor.from_run(resolve_run(args.run_dir), device=args.device)  # a folder, or a run id
    predictions = predictor.predict(args.inputs, args.batch_size)
    if predictions.skipped:
        print(*skipped_lines(predictions.skipped), sep="\n", file=sys.stderr)
    if not len(predictions):
        raise CnnlabError(f"No image could be read from {shorten(' '.join(map(str, args.inputs)))} (each is listed "
                          "above with the reason). Give PNG, JPEG, BMP, WebP or GIF files, folders of them, or "
                          ".zip/.tar archives.")
    text = format_predictions(predictions, args.top_k, args.output_format)
    if args.out is None:
        sys.stdout.write(text)
    else:
        runs.write_text_atomic(args.out, text)
        print(args.out)
    return 0


def command_export(args: argparse.Namespace) -> int:
    from cnnlab.analysis.export import export_run, format_export

    result = export_run(args.run_dir, args.export_format, out=args.out, check=not args.no_check,
                        data_dir=getattr(args, "data_dir", None))  # --data-dir: where the check finds the test set
    print(format_export(result))
    return 0


def command_tune(args: argparse.Namespace) -> int:
    from cnnlab.studies.tune import run_tune
    from cnnlab.studies.tune_settings import tune_settings

    settings = tune_settings(args.config, args.overrides, args.param, trials=args.trials, metric=args.metric,
                             storage=args.storage, study=args.study, workers=args.workers, out=args.out,
                             seed=args.seed, prune=False if args.no_prune else None)
    try:
        outcome = run_tune(settings, data_dir=args.data_dir, show_progress=not args.quiet)
    except TrainingInterrupted as error:  # not `cnnlab train --resume`: the same command continues a study
        print(paragraph(f"interrupted: {error}"), file=sys.stderr)
        return 128 + error.signal_number
    counts = ", ".join(f"{count} {state}" for state, count in outcome.counts.items() if count)
    best = outcome.best
    print(f"study {outcome.folder}: {counts or 'no trials'}" + ("" if best is None else
          f"; best trial {best['number']}: {settings.metric} {best['value']:.4f} with "
          + ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                      for key, value in best["params"].items())))
    print(*outcome.paths.values(), sep="\n")
    return 0


def command_runs(args: argparse.Namespace) -> int:
    from cnnlab.studies.registry import format_runs, list_runs

    found = list_runs(args.folder, args.where, args.sort, args.limit, args.rebuild, args.include_seed_runs)
    print(format_runs(found, args.folder, filtered=bool(args.where)))
    return 0


def command_tensorboard(args: argparse.Namespace) -> int:
    from cnnlab import runs
    from cnnlab.report.tensorboard import convert_runs

    folders = convert_runs(args.run_dirs)
    print(*folders, sep="\n")
    logdir = folders[0].parent if len(folders) == 1 else os.path.commonpath([folder.resolve() for folder in folders])
    runs.log_line(f"view them with: tensorboard --logdir {shlex.quote(str(logdir))}")
    return 0


def resume_command(error: TrainingInterrupted, args: argparse.Namespace) -> str:
    """The command that continues an interrupted run, with the dataset folder it was given."""
    command = f"cnnlab train --resume {shlex.quote(str(error.run_dir))}"
    data_dir = getattr(args, "data_dir", None)
    return command + (f" --data-dir {shlex.quote(str(data_dir))}" if data_dir else "")


def paragraph(text: str) -> str:
    width = min(100, max(60, os.get_terminal_size(sys.stderr.fileno()).columns if sys.stderr.isatty() else 100))
    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)


COMMANDS = {"train": command_train, "report": command_report, "compare": command_compare,
            "summary": command_summary, "models": command_models, "explore": command_explore,
            "suite": command_suite, "augment-preview": command_augment_preview, "lr-find": command_lr_find,
            "features": command_features, "predict": command_predict, "export": command_export,
            "tune": command_tune, "runs": command_runs, "tensorboard": command_tensorboard}
