"""Output folders: the one gate every command's output goes through, and replacing an earlier output
without losing it.

A folder is cnnlab's own output when it carries cnnlab's marker: the "cnnlab" entry of a run's
metrics.json, or cnnlab.json for the other commands. cnnlab writes only into a new or empty folder or
its own output of the same kind; an earlier output is replaced only with ``overwrite``, and then the new
one is built in a sibling folder and swapped in once complete, so an interruption, a divergence or a
full disk leaves the earlier output as it was. Deleting never follows a link."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from pathlib import Path
from typing import Callable

from cnnlab import runs
from cnnlab.errors import CnnlabError

MARKER_FILE = "cnnlab.json"  # the marker of outputs without a metrics.json (a run's is in its metrics.json)
STAGING_NOTE_FILE = ".cnnlab-replaces"  # in a folder built beside an output: the name of the output it replaces
# every name cnnlab writes into an output folder of any kind: only these are deleted from a replaced output
OUTPUT_FILES = frozenset(runs.ARTEFACTS + (
    runs.CHECKPOINT_FILE, runs.PREVIOUS_CHECKPOINT_FILE, MARKER_FILE, STAGING_NOTE_FILE,
    "comparison.csv", "comparison.md", "comparison.html", "sweep.csv", "sweep.md", "sweep.html",
    "explore.json", "explore.md", "explore.html", "lr_find.csv", "lr_find.png", "lr_find.json", "augmentation.png"))
KINDS = {"run": "run directory", "compare": "comparison folder", "suite": "suite folder",
         "explore": "explore folder", "features": "features folder", "lr-find": "lr-find folder",
         "augment-preview": "augment-preview folder", "seeds": "multi-seed folder", "tune": "tune study folder"}
UNFINISHED_STATUSES = ("running", "interrupted")


def default_run_dir(name: str, root: Path = Path("runs")) -> Path:
    """``root/<timestamp>-<name>``, with a number added when that folder already exists."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return unused_name(Path(root) / f"{stamp}-{runs.slug(name)}")


def output_marker(kind: str) -> dict[str, str]:
    """The marker of cnnlab's output of ``kind``: metrics.json's "cnnlab" entry, or cnnlab.json's."""
    return {"kind": kind, "version": runs.cnnlab_version()}


def output_kind(folder: Path) -> str | None:
    """The kind ("run", "compare", ...) of cnnlab output ``folder`` holds, by its marker; None without one."""
    for name in (runs.METRICS_FILE, MARKER_FILE):
        path = Path(folder) / name
        if runs.is_link(path) or not path.is_file():
            continue
        try:
            marker = runs.read_json(path).get("cnnlab")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(marker, dict) and marker.get("kind") in KINDS:
            return marker["kind"]
    return None


def prepare_output_folder(out: Path, overwrite: bool = False, kind: str = "run", resume: bool = False) -> Path:
    """The one gate of every command's output: return the folder to write ``kind``'s files into.

    A new or empty ``out`` is used as it is. A non-empty folder without cnnlab's marker of ``kind`` is
    refused, even with ``overwrite``. An earlier output of ``kind`` is refused unless ``overwrite`` (or
    ``resume``, for an unfinished run; a suite folder is continued): with ``overwrite`` the new output is
    built in a sibling folder ``<out>.partial-<pid>`` that `publish_output_folder` swaps in once complete;
    until then the earlier one is untouched."""
    out = Path(out)
    if check_output_folder(out, overwrite, kind, resume) is None:
        return out if out.is_dir() and not _is_empty(out) else _start_folder(out, kind)  # kept: resumed, continued
    return _start_folder(unused_name(out.with_name(f"{out.name}.partial-{os.getpid()}")), kind, replaces=out)


def check_output_folder(out: Path, overwrite: bool = False, kind: str = "run", resume: bool = False) -> Path | None:
    """What `prepare_output_folder` would do, touching nothing: raise CnnlabError where it would refuse
    ``out``; return ``out`` when the new output is to be built beside it, None when written in place."""
    out, words = Path(out), KINDS[kind]
    if not os.path.lexists(out) or (out.is_dir() and _is_empty(out)):  # --out may be a link the user made
        return None
    if not out.is_dir():
        raise CnnlabError(f"{out} is a file, not a folder: give --out a new or empty folder for the {words}.")
    found = output_kind(out)
    if found is None:
        held = sorted(entry.name for entry in out.iterdir())
        raise CnnlabError(
            f"{out} is not empty and is not a cnnlab {words} (it holds {', '.join(held[:3])}"
            f"{', ...' if len(held) > 3 else ''}), so cnnlab does not write into it, even with --overwrite. "
            "Give --out a new or empty folder.")
    if found != kind:
        raise CnnlabError(f"{out} holds a cnnlab {KINDS[found]}, not a {words}: choose another --out.")
    if kind == "suite" or resume:
        return None
    status = str(runs.read_json(out / runs.METRICS_FILE).get("status", "")) if kind == "run" else "complete"
    if status in UNFINISHED_STATUSES and not overwrite:
        raise CnnlabError(
            f'{out} holds an unfinished cnnlab run (status "{status}"). Continue it with `cnnlab train --resume '
            f"{out}`, or start again with --overwrite (the new run is built beside it and replaces it only once "
            "complete), or choose another --out.")
    if not overwrite:
        raise CnnlabError(
            f"{out} already holds a cnnlab {words}. Add --overwrite to replace it (the new one is built beside "
            "it and replaces it only once complete; until then the old one is untouched), or choose another --out.")
    if runs.is_link(out):
        raise CnnlabError(f"{out} is a symbolic link: give --overwrite the folder itself ({out.resolve()}).")
    return out


def publish_output_folder(folder: Path) -> Path:
    """Where ``folder``'s output is once complete: ``folder`` itself, or, for one built beside an earlier
    output, that output's place, after swapping the two and deleting the earlier output's files (only the
    names cnnlab writes; links as links). Anything else of the earlier folder is kept, and said so."""
    folder, target = Path(folder), replaced_output(folder)
    if target is None:
        return folder
    left = replace_folder(folder, target, _written_by_cnnlab)
    (target / STAGING_NOTE_FILE).unlink()
    if left:
        runs.log_line(f"kept {left[0]}: the replaced output also held files cnnlab did not write "
                      f"({', '.join(left[1:4])})")
    return target


def kept_note(folder: Path) -> str:
    """For a folder built beside an earlier output: a sentence saying that output is unchanged; else ""."""
    target = replaced_output(folder)
    if target is None:
        return ""
    return f" (built beside {target}, which is unchanged: the new run replaces it only once complete)."


def replaced_output(folder: Path) -> Path | None:
    """The earlier output ``folder`` was built beside to replace, or None for an output written in place."""
    note = Path(folder) / STAGING_NOTE_FILE
    if runs.is_link(note) or not note.is_file():
        return None
    return Path(folder).parent / Path(note.read_text(encoding="utf-8").strip()).name  # a sibling, never elsewhere


def moved(paths: dict[str, Path], folder: Path, final: Path) -> dict[str, Path]:
    """``paths`` written under ``folder``, as they are named once ``folder`` was published as ``final``."""
    return {key: Path(final) / Path(path).relative_to(folder) for key, path in paths.items()}


def replace_folder(new: Path, target: Path, owned: Callable[[str], bool]) -> list[str]:
    """Put ``new`` in ``target``'s place: move ``target`` aside and ``new`` in (two renames in one parent
    folder, the first undone if the second fails), then delete what ``owned`` accepts of the old folder and
    the folder when empty. Return what is left of the old folder (its path first), or []."""
    aside = unused_name(target.with_name(f"{target.name}.replaced-{os.getpid()}"))
    had_target = os.path.lexists(target)
    if had_target:
        os.rename(target, aside)
    try:
        os.rename(new, target)
    except OSError:
        if had_target:
            os.rename(aside, target)
        raise
    if not had_target:
        return []
    left = remove_owned(aside, owned)
    if left:
        return [str(aside), *left]
    os.rmdir(aside)
    return []


def remove_owned(folder: Path, owned: Callable[[str], bool]) -> list[str]:
    """Delete what ``owned`` accepts in ``folder`` (it gets paths relative to ``folder``, such as
    ``report.md`` or ``figures/loss.png``); return the relative paths of what is left. A link is removed
    as a link, never followed; a real subfolder is emptied of what is owned and removed when empty."""
    left: list[str] = []
    _remove_in(Path(folder), "", owned, left)
    return left


def _remove_in(folder: Path, prefix: str, owned: Callable[[str], bool], left: list[str]) -> None:
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda item: item.name)
    for entry in entries:
        relative = prefix + entry.name
        if not owned(relative):
            left.append(relative)
        elif entry.is_dir(follow_symlinks=False):
            _remove_in(Path(entry.path), relative + "/", owned, left)
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)  # only when empty: what is left there is the user's
        else:
            os.unlink(entry.path)  # a file, or a link (never its target)


def unused_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ...: the first name nothing (not even a dangling link) has."""
    candidate, number = Path(path), 1
    while os.path.lexists(candidate):
        number += 1
        candidate = Path(path).with_name(f"{Path(path).name}-{number}")
    return candidate


def _start_folder(folder: Path, kind: str, replaces: Path | None = None) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if replaces is not None:
            runs.write_text_atomic(folder / STAGING_NOTE_FILE, replaces.name + "\n")
        if kind != "run":  # a run's marker is in its metrics.json
            runs.write_json_atomic(folder / MARKER_FILE, {"cnnlab": output_marker(kind)})
        else:
            runs.write_bytes_atomic(folder / ".write-test", b"")
            (folder / ".write-test").unlink()
    except OSError as error:
        raise CnnlabError(
            f"cannot read or write the output folder {folder}: {error.strerror or error}. Choose a writable "
            "place with --out DIR, or fix the folder's permissions.") from None
    return folder


def _is_empty(folder: Path) -> bool:
    """Empty, or holding only the marker of an output that failed before it wrote anything."""
    return {entry.name for entry in folder.iterdir()} <= {MARKER_FILE}


def _written_by_cnnlab(relative: str) -> bool:
    top, _, rest = relative.partition("/")
    if top == runs.FIGURES_DIR:
        return not rest or "/" not in rest and (rest.endswith(".png") or rest.startswith(".") and rest.endswith(".tmp"))
    if top == runs.TENSORBOARD_DIR:
        return not rest or "/" not in rest and rest.startswith(runs.TENSORBOARD_EVENTS_PREFIX)
    if rest:
        return False
    if top.startswith(".") and top.endswith(".tmp"):  # an atomic write's temporary file, left by a crash
        return any(top.startswith(f".{name}.") for name in OUTPUT_FILES)
    return top in OUTPUT_FILES
