"""The hostile-input harness: a corpus of hostile and careless inputs run through the real command line
(`cnnlab.cli.main`, in this process), each in its own folder, counting what happened to each.

Counted per case: a clean message (exit 2, one paragraph, no traceback), a traceback, a payload that ran
(a marker file appeared: every payload only creates that file) and files written outside the case's
target folder (the whole tree is snapshotted before and after; only the command's output folder and the
cache may change). The test always asserts zero payloads and zero writes outside the target, and that
docs/reliability.md shows exactly the table measured here: `python tests/test_reliability.py --write-doc`
re-makes that table, so no figure in the document is typed by hand."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the case corpus beside this file (tests are not a package)

from reliability_cases import CONFIG_CASES, MARKER, NAME_CASES, RUN_CASES, Case, build_template  # noqa: E402
from reliability_checkpoints import checkpoint_figures, checkpoint_table  # noqa: E402
from reliability_data_cases import DATA_CASES  # noqa: E402

CASES = [*CONFIG_CASES, *RUN_CASES, *NAME_CASES, *DATA_CASES]

DOC = HERE.parent / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- reliability-table:start -->", "<!-- reliability-table:end -->"
CHECKPOINT_START, CHECKPOINT_END = "<!-- checkpoint-table:start -->", "<!-- checkpoint-table:end -->"


@dataclass
class Outcome:
    """What one case did."""

    case: Case
    exit_code: object = None
    output: str = ""
    traceback: str = ""
    payload: bool = False
    outside: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Exit 2 with one paragraph on stderr and no traceback."""
        text = self.output.strip()
        return (self.exit_code == 2 and not self.traceback and bool(text) and "\n\n" not in text
                and "Traceback (most recent call last)" not in text)

    @property
    def as_intended(self) -> bool:
        """Refused with a clean message, or (for inputs cnnlab must accept) completed and checked."""
        completed = self.exit_code == 0 and not self.traceback and self.case.check_passes
        if self.case.expect == "either":  # refusing and completing (without touching the outside) are both right
            return self.clean or completed
        return self.clean if self.case.expect == "refused" else completed


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (links not followed) with its kind, size, time and mode."""
    state = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            # a folder's own size and time change whenever an entry is added inside it: its entries are compared
            content = () if stat.S_ISDIR(info.st_mode) else (info.st_size, info.st_mtime_ns)
            state[os.path.relpath(path, root)] = (info.st_mode, *content)
    return state


@contextlib.contextmanager
def inside(folder: Path):
    """The working directory and the cnnlab environment of one case: offline, its own cache, no datasets."""
    saved_cwd, saved_env = os.getcwd(), dict(os.environ)
    os.chdir(folder)
    os.environ.update({"CNNLAB_OFFLINE": "1", "XDG_CACHE_HOME": str(folder / "cache"),
                       "CNNLAB_DATA": str(folder / "no-datasets"), "MPLBACKEND": "Agg"})
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def run_case(case: Case, root: Path, template: Path) -> Outcome:
    """Build the case's inputs in root/<name>, run the command, and record what happened."""
    from cnnlab.cli import main

    folder = root / case.name
    folder.mkdir()
    with inside(folder):
        argv = case.build(folder, template)
    before = snapshot(root)
    outcome = Outcome(case)
    captured = io.StringIO()
    with inside(folder), contextlib.redirect_stderr(captured), contextlib.redirect_stdout(io.StringIO()):
        try:
            outcome.exit_code = main(argv)
        except SystemExit as stop:  # argparse's own usage errors
            outcome.exit_code = stop.code
        except Exception:  # noqa: BLE001 - a traceback is what this harness counts
            outcome.traceback = traceback.format_exc()
    outcome.output = captured.getvalue()
    after = snapshot(root)
    allowed = [os.path.join(case.name, target) for target in (*case.targets, "cache")]
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    outcome.outside = sorted(path for path in changed
                             if not any(path == prefix or path.startswith(prefix + os.sep) for prefix in allowed))
    outcome.payload = (root / MARKER).exists()
    if outcome.payload:
        (root / MARKER).unlink()
    if case.expect != "refused" and outcome.exit_code == 0:
        case.check_passes = case.check(folder)
    return outcome


def run_harness(root: Path) -> list[Outcome]:
    """Every case of the corpus, in order, under ``root``."""
    (root / "_template").mkdir()
    with inside(root / "_template"):
        template = build_template(root / "_template")
    (root / "outside").mkdir()  # a folder no case may touch (links in hostile inputs point here)
    return [run_case(case, root, template) for case in CASES]


def measured_table(outcomes: list[Outcome]) -> str:
    """The figures of docs/reliability.md, as a Markdown table."""
    kinds = sorted({outcome.case.kind for outcome in outcomes})
    header = "| | " + " | ".join(kinds) + " | all |\n|---|" + "---:|" * (len(kinds) + 1)
    rows = [
        ("bad inputs tried", lambda o: True),
        ("refused with a clean message (exit 2, one paragraph)", lambda o: o.case.expect != "completes" and o.clean),
        ("accepted and completed, as they must be", lambda o: o.case.expect != "refused" and o.exit_code == 0
         and o.as_intended),
        ("not as intended (silently accepted, or failed)", lambda o: not o.as_intended and not o.traceback),
        ("tracebacks", lambda o: bool(o.traceback)),
        ("payloads run", lambda o: o.payload),
        ("files written outside the target", lambda o: bool(o.outside)),
    ]
    lines = [header]
    for label, test in rows:
        counts = [sum(1 for o in outcomes if o.case.kind == kind and test(o)) for kind in kinds]
        lines.append(f"| {label} | " + " | ".join(str(count) for count in counts) + f" | {sum(counts)} |")
    return "\n".join(lines)


def failures(outcomes: list[Outcome]) -> str:
    """The cases not as intended, one line each (the test's message and the doc's list)."""
    lines = []
    for outcome in outcomes:
        if not outcome.as_intended or outcome.payload or outcome.outside:
            what = ("traceback: " + outcome.traceback.strip().splitlines()[-1]) if outcome.traceback else \
                f"exit {outcome.exit_code}: " + " ".join(outcome.output.split())[:160]
            extra = f"; wrote outside: {outcome.outside[:3]}" if outcome.outside else ""
            lines.append(f"- `{outcome.case.name}` ({outcome.case.kind}): {what}{extra}")
    return "\n".join(lines)


def document_table(text: str, start: str = TABLE_START, end: str = TABLE_END) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def replace_table(text: str, table: str, start: str, end: str) -> str:
    before, rest = text.split(start, 1)
    return f"{before}{start}\n{table}\n{end}{rest.split(end, 1)[1]}"


def test_the_harness_sees_a_traceback_a_payload_and_a_write_outside(tmp_path, monkeypatch):
    """The counters can fail: a command that writes outside, runs the payload and crashes is seen doing so."""
    import cnnlab.cli

    def hostile_main(argv):
        (tmp_path / MARKER).write_text("ran")
        (tmp_path / "outside.txt").write_text("escaped")
        raise RuntimeError("boom")

    monkeypatch.setattr(cnnlab.cli, "main", hostile_main)
    outcome = run_case(Case("hostile", "self-test", lambda folder, template: ["report", "x"]), tmp_path, tmp_path)
    assert outcome.payload and outcome.outside == [MARKER, "outside.txt"] and "RuntimeError: boom" in outcome.traceback
    assert not outcome.clean and not outcome.as_intended


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> list[Outcome]:
    return run_harness(tmp_path_factory.mktemp("hostile"))


@pytest.mark.slow
def test_no_payload_runs_and_nothing_is_written_outside_the_target(outcomes):
    assert len(outcomes) >= 80
    assert not [o.case.name for o in outcomes if o.payload]
    assert not {o.case.name: o.outside for o in outcomes if o.outside}


@pytest.mark.slow
def test_the_document_shows_the_measured_table(outcomes):
    """docs/reliability.md's figures are these; re-make them with `python tests/test_reliability.py --write-doc`."""
    assert document_table(DOC.read_text(encoding="utf-8")) == measured_table(outcomes), failures(outcomes)


@pytest.mark.slow
def test_every_kill_point_resumes_to_the_uninterrupted_run_and_the_document_says_so(tmp_path):
    """Resumed = uninterrupted at every kill point, no checkpoint lost, and docs/reliability.md shows these figures."""
    figures = checkpoint_figures(tmp_path)
    assert figures["resumed runs identical to the uninterrupted run"] == figures["kill points tried"]
    assert figures["checkpoints lost"] == 0
    text = DOC.read_text(encoding="utf-8")
    assert document_table(text, CHECKPOINT_START, CHECKPOINT_END) == checkpoint_table(figures)


def write_doc() -> None:
    """Run the harness and the kill points and put their tables (and the list of cases not yet as intended)
    into the document."""
    with tempfile.TemporaryDirectory(prefix="cnnlab-hostile-") as folder:
        outcomes = run_harness(Path(folder))
    with tempfile.TemporaryDirectory(prefix="cnnlab-kill-points-") as folder:
        figures = checkpoint_figures(Path(folder))
    text = replace_table(DOC.read_text(encoding="utf-8"), measured_table(outcomes), TABLE_START, TABLE_END)
    DOC.write_text(replace_table(text, checkpoint_table(figures), CHECKPOINT_START, CHECKPOINT_END), encoding="utf-8")
    print(measured_table(outcomes))
    print(checkpoint_table(figures))
    print(failures(outcomes) or "every case as intended")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-doc"]:
        sys.exit("usage: python tests/test_reliability.py --write-doc")
    write_doc()
