"""Run folders never destroy anything: the output gate, --overwrite built beside and swapped in at the
end, links never followed, files with the umask's mode, a full disk named and harmless."""

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from cnnlab import output_folders, runs
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.output_folders import prepare_output_folder, publish_output_folder

ALL_KINDS = sorted(output_folders.KINDS)


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links not followed) with its kind and content digest or link target."""
    found = {}
    for root, folders, files in os.walk(folder, followlinks=False):
        for name in folders + files:
            path = Path(root) / name
            relative = str(path.relative_to(folder))
            if path.is_symlink():
                found[relative] = "link -> " + os.readlink(path)
            elif path.is_dir():
                found[relative] = "folder"
            else:
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def users_folder(tmp_path: Path) -> Path:
    """A folder of the user's own that happens to hold run-like names."""
    folder = tmp_path / "mine"
    (folder / "figures").mkdir(parents=True)
    (folder / "report.md").write_text("my own notes\n")
    (folder / "figures" / "plot1.png").write_bytes(b"\x89PNG my plot")
    return folder


def fake_run(folder: Path, status: str = "complete", extra: dict | None = None) -> Path:
    """A run folder as cnnlab writes it (marker in metrics.json), without training."""
    (folder / "figures").mkdir(parents=True)
    metrics = {"name": "x", "status": status, "cnnlab": output_folders.output_marker("run"), **(extra or {})}
    runs.write_json_atomic(folder / runs.METRICS_FILE, metrics)
    for name in (runs.CONFIG_FILE, runs.WEIGHTS_FILE, runs.REPORT_MARKDOWN_FILE, runs.REPORT_HTML_FILE):
        (folder / name).write_text(f"old {name}\n")
    (folder / "figures" / "loss.png").write_bytes(b"old figure")
    return folder


def siblings(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- the gate


def test_new_and_empty_folders_are_used_as_they_are(tmp_path):
    assert prepare_output_folder(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    (tmp_path / "empty").mkdir()
    assert prepare_output_folder(tmp_path / "empty", kind="compare") == tmp_path / "empty"
    assert output_folders.output_kind(tmp_path / "empty") == "compare"


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_the_users_own_is_refused_and_untouched(tmp_path, kind, overwrite):
    folder = users_folder(tmp_path)
    before = tree(folder)
    with pytest.raises(CnnlabError, match="is not a cnnlab .*even with --overwrite"):
        prepare_output_folder(folder, overwrite=overwrite, kind=kind)
    assert tree(folder) == before
    assert siblings(tmp_path) == ["mine"]


def test_a_metrics_json_without_the_marker_is_not_cnnlab_s(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / runs.METRICS_FILE).write_text(json.dumps({"status": "complete"}))
    with pytest.raises(CnnlabError, match="not a cnnlab run directory"):
        prepare_output_folder(folder, overwrite=True)


def test_a_complete_run_is_replaced_only_with_overwrite(tmp_path):
    run = fake_run(tmp_path / "run")
    before = tree(run)
    with pytest.raises(CnnlabError, match="--overwrite"):
        prepare_output_folder(run)
    staging = prepare_output_folder(run, overwrite=True)
    assert staging.parent == tmp_path and staging.name.startswith("run.partial-")
    assert tree(run) == before, "nothing of the old run is touched before the new one is complete"


@pytest.mark.parametrize("status", ["running", "interrupted"])
def test_an_unfinished_run_needs_resume_or_overwrite(tmp_path, status):
    run = fake_run(tmp_path / "run", status=status)
    with pytest.raises(CnnlabError) as raised:
        prepare_output_folder(run)
    assert "--resume" in str(raised.value) and "--overwrite" in str(raised.value)
    assert prepare_output_folder(run, resume=True) == run
    assert prepare_output_folder(run, overwrite=True) != run


def test_another_kind_of_output_is_refused(tmp_path):
    run = fake_run(tmp_path / "run")
    with pytest.raises(CnnlabError, match="holds a cnnlab run directory, not a comparison folder"):
        prepare_output_folder(run, overwrite=True, kind="compare")


def test_a_file_as_out_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CnnlabError, match="is a file"):
        prepare_output_folder(tmp_path / "file")


# ------------------------------------------------------------------------------------------- the swap


def test_publish_swaps_and_deletes_only_what_cnnlab_wrote(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / "notes.txt").write_text("the user's own")
    staging = prepare_output_folder(run, overwrite=True)
    runs.write_json_atomic(staging / runs.METRICS_FILE, {"status": "complete", "cnnlab": output_folders.output_marker("run")})
    runs.write_bytes_atomic(staging / "figures" / "new.png", b"new figure")
    assert publish_output_folder(staging) == run
    assert sorted(tree(run)) == ["figures", "figures/new.png", runs.METRICS_FILE]
    kept = [name for name in siblings(tmp_path) if name != "run"]
    assert len(kept) == 1 and kept[0].startswith("run.replaced-"), kept
    assert tree(tmp_path / kept[0]) == {"notes.txt": hashlib.sha256(b"the user's own").hexdigest()}


def test_publish_without_an_earlier_output_is_a_no_op(tmp_path):
    folder = prepare_output_folder(tmp_path / "run")
    assert publish_output_folder(folder) == folder


def test_deleting_the_replaced_run_never_follows_links(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.png").write_bytes(b"not cnnlab's")
    (elsewhere / "report.md").write_text("someone's report")
    run = fake_run(tmp_path / "received")
    (run / "figures" / "loss.png").unlink()
    (run / "figures").rmdir()
    (run / "figures").symlink_to(elsewhere, target_is_directory=True)
    (run / runs.REPORT_MARKDOWN_FILE).unlink()
    (run / runs.REPORT_MARKDOWN_FILE).symlink_to(elsewhere / "report.md")
    before = tree(elsewhere)
    staging = prepare_output_folder(run, overwrite=True)
    runs.write_bytes_atomic(staging / "figures" / "new.png", b"new")
    publish_output_folder(staging)
    assert tree(elsewhere) == before
    assert (run / "figures").is_dir() and not (run / "figures").is_symlink()
    assert siblings(tmp_path) == ["elsewhere", "received"]


# ------------------------------------------------------------------------------------------- writes


def test_writing_through_a_linked_figures_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "plot.png").write_bytes(b"theirs")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "figures").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(CnnlabError, match="symbolic link"):
        runs.write_bytes_atomic(tmp_path / "run" / "figures" / "loss.png", b"png")
    assert tree(elsewhere) == {"plot.png": hashlib.sha256(b"theirs").hexdigest()}


def test_a_linked_file_is_replaced_not_its_target(tmp_path):
    target = tmp_path / "outside.md"
    target.write_text("outside")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.md").symlink_to(target)
    runs.write_text_atomic(tmp_path / "run" / "report.md", "new report")
    assert target.read_text() == "outside"
    assert not (tmp_path / "run" / "report.md").is_symlink()
    assert (tmp_path / "run" / "report.md").read_text() == "new report"


def test_temporary_files_live_beside_the_target(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda source, target: (renamed.append(Path(source)), real_replace(source, target)))
    runs.write_text_atomic(tmp_path / "run" / "figures" / "x.png", "data")
    assert [path.parent for path in renamed] == [tmp_path / "run" / "figures"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        runs.write_text_atomic(tmp_path / "a.txt", "x")
        runs.write_text_atomic(tmp_path / "a.txt", "replaced")  # a replaced file too
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / runs.METRICS_FILE
    path.write_text("previous")

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as raised:
        runs.write_text_atomic(path, "new")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert path.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [runs.METRICS_FILE], "no temporary file left"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_names_the_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("old")
    (tmp_path / "run").chmod(0o500)
    try:
        with pytest.raises(PermissionError) as raised:
            runs.write_text_atomic(tmp_path / "run" / "old.txt", "new")
    finally:
        (tmp_path / "run").chmod(0o700)
    assert raised.value.filename == str(tmp_path / "run" / "old.txt")
    assert (tmp_path / "run" / "old.txt").read_text() == "old"


# ------------------------------------------------------------------------------------------- end to end

TRAIN = ["train", "mlp", "train.epochs=1"]  # cli() adds --quiet
DIVERGING = ["optimizer.name=sgd", "optimizer.lr=1e12"]


def cli(capsys, *argv):
    code = main([str(arg) for arg in argv] + (["--quiet"] if argv[0] == "train" else []))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.replace("\n", " ")


@pytest.fixture
def complete_run(tmp_path, capsys):
    code, _, err = cli(capsys, *TRAIN, "--out", tmp_path / "run")
    assert code == 0, err
    return tmp_path / "run"


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_train_into_the_users_folder_is_refused_byte_for_byte(tmp_path, capsys, overwrite):
    folder = users_folder(tmp_path)
    before = tree(folder)
    code, _, err = cli(capsys, *TRAIN, "--out", folder, *overwrite)
    assert code == 2 and "not a cnnlab run directory" in err and "Traceback" not in err
    assert tree(folder) == before
    assert siblings(tmp_path) == ["mine"]


@pytest.mark.slow
def test_rerunning_a_complete_run_is_refused_then_replaced_with_overwrite(complete_run, tmp_path, capsys):
    before = tree(complete_run)
    code, _, err = cli(capsys, *TRAIN, "--out", complete_run)
    assert code == 2 and "--overwrite" in err
    assert tree(complete_run) == before
    code, out, err = cli(capsys, *TRAIN, "train.seed=7", "--out", complete_run, "--overwrite")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(complete_run)
    assert runs.read_json(complete_run / runs.METRICS_FILE)["seed"] == 7
    assert runs.is_complete(complete_run)
    assert siblings(tmp_path) == ["run"], "no staging or replaced folder is left"


@pytest.mark.slow
def test_a_diverging_overwrite_leaves_the_old_run_intact(complete_run, tmp_path, capsys):
    before = tree(complete_run)
    code, _, err = cli(capsys, *TRAIN, *DIVERGING, "--out", complete_run, "--overwrite")
    assert code == 3 and "which is unchanged" in err, err
    assert tree(complete_run) == before
    staging = [name for name in siblings(tmp_path) if name != "run"]
    assert len(staging) == 1 and staging[0].startswith("run.partial-")
    assert runs.read_json(tmp_path / staging[0] / runs.METRICS_FILE)["status"] == "diverged"


@pytest.mark.slow
def test_a_full_disk_during_an_overwrite_leaves_the_old_run_intact(complete_run, capsys, monkeypatch):
    before = tree(complete_run)
    real_write = runs.write_bytes_atomic

    def full_at_weights(path, data):
        if Path(path).name == runs.WEIGHTS_FILE:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(runs, "write_bytes_atomic", full_at_weights)
    code, _, err = cli(capsys, *TRAIN, "train.seed=3", "--out", complete_run, "--overwrite")
    assert code == 2 and runs.WEIGHTS_FILE in err and "No space left" in err and "Traceback" not in err
    assert tree(complete_run) == before


@pytest.mark.slow
def test_an_interrupted_overwrite_keeps_the_old_run_and_resuming_swaps_it_in(complete_run, tmp_path):
    from cnnlab.config import load_config
    from cnnlab.errors import TrainingInterrupted
    from cnnlab.experiment import resume_experiment, run_experiment
    from cnnlab.training.interrupt import StopRequest

    before = tree(complete_run)
    config = load_config("mlp", ["train.epochs=2", "train.seed=5"])
    with pytest.raises(TrainingInterrupted) as raised:
        run_experiment(config, out=complete_run, show_progress=False, overwrite=True, stop=StopRequest(5))
    assert tree(complete_run) == before
    staging = Path(raised.value.run_dir)
    assert staging.parent == tmp_path and staging.name.startswith("run.partial-")
    assert resume_experiment(staging, show_progress=False) == complete_run
    assert runs.read_json(complete_run / runs.METRICS_FILE)["seed"] == 5
    assert siblings(tmp_path) == ["run"]


@pytest.mark.slow
def test_an_unfinished_run_is_not_overwritten_by_a_plain_rerun(tmp_path, capsys):
    from cnnlab.config import load_config
    from cnnlab.errors import TrainingInterrupted
    from cnnlab.experiment import run_experiment
    from cnnlab.training.interrupt import StopRequest

    with pytest.raises(TrainingInterrupted):
        run_experiment(load_config("mlp", ["train.epochs=2"]), out=tmp_path / "run", show_progress=False,
                       stop=StopRequest(3))
    before = tree(tmp_path / "run")
    code, _, err = cli(capsys, *TRAIN, "--out", tmp_path / "run")
    assert code == 2 and "--resume" in err and "--overwrite" in err
    assert tree(tmp_path / "run") == before


@pytest.mark.slow
def test_a_received_run_with_linked_figures_never_touches_the_target(complete_run, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "plot1.png").write_bytes(b"someone's figure")
    for figure in (complete_run / "figures").iterdir():
        figure.unlink()
    (complete_run / "figures").rmdir()
    (complete_run / "figures").symlink_to(elsewhere, target_is_directory=True)
    before = tree(elsewhere)
    cli(capsys, "report", complete_run)  # refused, or its figures become notes: never written there
    assert tree(elsewhere) == before
    code, _, err = cli(capsys, *TRAIN, "--out", complete_run, "--overwrite")
    assert code == 0, err
    assert tree(elsewhere) == before
    assert (complete_run / "figures").is_dir() and not (complete_run / "figures").is_symlink()


@pytest.mark.slow
def test_compare_never_overwrites_the_users_comparison(complete_run, tmp_path, capsys):
    mine = tmp_path / "cmp-mine"
    mine.mkdir()
    (mine / "comparison.md").write_text("my comparison")
    before = tree(mine)
    for extra in ([], ["--overwrite"]):
        code, _, err = cli(capsys, "compare", complete_run, "--out", mine, *extra)
        assert code == 2 and "not a cnnlab comparison folder" in err
    assert tree(mine) == before
    code, _, err = cli(capsys, "compare", complete_run, "--out", tmp_path / "cmp")
    assert code == 0, err
    first = tree(tmp_path / "cmp")
    code, _, err = cli(capsys, "compare", complete_run, "--out", tmp_path / "cmp")
    assert code == 2 and "--overwrite" in err
    assert tree(tmp_path / "cmp") == first
    code, out, err = cli(capsys, "compare", complete_run, "--out", tmp_path / "cmp", "--overwrite")
    assert code == 0, err
    assert all(Path(line).parent == tmp_path / "cmp" for line in out.split())
    assert (tmp_path / "cmp" / "comparison.md").exists() and (tmp_path / "cmp" / "figures").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ["explore", "digits", "--per-class", "2"],
    ["lr-find", "mlp", "--steps", "10", "--quiet"],
    ["augment-preview", "mlp", "augment.horizontal_flip=true", "--count", "2", "--views", "2"],
])
def test_other_commands_follow_the_same_rules(tmp_path, capsys, command):
    folder = users_folder(tmp_path)
    before = tree(folder)
    code, _, err = cli(capsys, *command, "--out", folder, "--overwrite")
    assert code == 2 and "is not a cnnlab" in err
    assert tree(folder) == before
    out = tmp_path / "out"
    assert cli(capsys, *command, "--out", out)[0] == 0
    first = tree(out)
    code, _, err = cli(capsys, *command, "--out", out)
    assert code == 2 and "--overwrite" in err
    assert tree(out) == first
    assert cli(capsys, *command, "--out", out, "--overwrite")[0] == 0
    assert sorted(tree(out)) == sorted(first)
    assert siblings(tmp_path) == ["mine", "out"]


@pytest.mark.slow
def test_features_follow_the_same_rules(complete_run, tmp_path, capsys):
    folder = users_folder(tmp_path)
    before = tree(folder)
    command = ["features", complete_run, "--dataset", "digits", "--quiet"]
    code, _, err = cli(capsys, *command, "--out", folder, "--overwrite")
    assert code == 2 and "not a cnnlab features folder" in err
    assert tree(folder) == before
    assert cli(capsys, *command, "--out", tmp_path / "feat")[0] == 0
    assert output_folders.output_kind(tmp_path / "feat") == "features"
    code, _, err = cli(capsys, *command, "--out", tmp_path / "feat")
    assert code == 2 and "--overwrite" in err
    assert cli(capsys, *command, "--out", tmp_path / "feat", "--overwrite")[0] == 0


@pytest.mark.slow
def test_every_file_of_a_run_gets_the_umask_mode(tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        code, _, err = cli(capsys, *TRAIN, "--out", tmp_path / "run")
    finally:
        os.umask(previous)
    assert code == 0, err
    modes = {name: oct(stat.S_IMODE((tmp_path / "run" / name).stat().st_mode))
             for name, kind in tree(tmp_path / "run").items() if kind not in ("folder",)}
    assert modes and set(modes.values()) == {"0o644"}, modes


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    from cnnlab.training.checkpoint import load_checkpoint

    real_write, checkpoints = runs.write_bytes_atomic, []

    def full_at_the_second_checkpoint(path, data):
        if Path(path).name.startswith(f".{runs.CHECKPOINT_FILE}"):
            checkpoints.append(path)
            if len(checkpoints) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(runs, "write_bytes_atomic", full_at_the_second_checkpoint)
    code, _, err = cli(capsys, "train", "mlp", "train.epochs=3", "--out", tmp_path / "run")
    assert code == 2 and runs.CHECKPOINT_FILE in err and "No space left" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "run")["epochs_done"] == 1
