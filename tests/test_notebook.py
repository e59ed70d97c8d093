"""examples/quickstart.ipynb: committed with the outputs of a run without errors, and it still runs headlessly
(nbclient, the optional `notebook` extra) with tools/run_notebook.py, which refreshes those outputs."""

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def load_tool():
    spec = importlib.util.spec_from_file_location("run_notebook", REPO / "tools" / "run_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_notebook_holds_the_outputs_of_a_clean_run():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), "every code cell was executed"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "in order, once"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    shown = [output.data for output in outputs if output.output_type in ("execute_result", "display_data")]
    run_view = next(data["text/html"] for data in shown if "text/html" in data)
    assert "cnnlab run" in run_view and run_view.count("data:image/png;base64,") == 2, "curves and confusion matrix"
    assert any("image/png" in data for data in shown), "an image to predict"
    assert 'cnnlab.train("digits"' in code[0].source


@pytest.mark.slow
def test_the_notebook_runs_headlessly_without_errors():
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    tool = load_tool()
    executed = tool.execute(NOTEBOOK)
    assert tool.error_outputs(executed) == []
    printed = "".join(output.get("text", "") for cell in executed.cells for output in cell.get("outputs", []))
    assert "test accuracy" in printed and "my-digit-0.png" in printed
