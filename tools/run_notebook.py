"""Execute notebooks in place: every cell runs headlessly (nbclient, the `python3` kernel) in a new temporary
folder, so the runs a notebook trains are not left in the repository, and the notebook is saved with its
outputs. Exit status 1, with the notebook left as it was, when a cell raises.

    python tools/run_notebook.py examples/quickstart.ipynb

Needs nbclient, nbformat and ipykernel (cnnlab's `notebook` extra)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

TIMEOUT_S = 600  # per cell


def execute(path: Path, timeout_s: int = TIMEOUT_S) -> nbformat.NotebookNode:
    """The notebook at ``path`` with every cell executed in a new temporary working folder; raises
    CellExecutionError when a cell raises."""
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="cnnlab-notebook-") as folder:
        client = NotebookClient(notebook, timeout=timeout_s, kernel_name="python3", record_timing=False,
                                coalesce_streams=True,  # one stderr output per cell, its progress bars overwritten
                                resources={"metadata": {"path": folder}})
        client.execute()
    return notebook


def error_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    """``ename: evalue`` of every error output of the notebook's cells."""
    return [f"{output.get('ename')}: {output.get('evalue')}" for cell in notebook.cells
            for output in cell.get("outputs", []) if output.get("output_type") == "error"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.notebooks:
        try:
            notebook = execute(path)
        except CellExecutionError as error:
            print(f"{path}: a cell failed, the notebook is unchanged:\n{error}", file=sys.stderr)
            return 1
        nbformat.validate(notebook)
        nbformat.write(notebook, path)
        print(f"{path}: {sum(cell.cell_type == 'code' for cell in notebook.cells)} code cells executed, outputs saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
