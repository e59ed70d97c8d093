"""The example configs and suites that ship inside the package (`src/cnnlab/examples/*.yaml`,
`src/cnnlab/suites/*.yaml`), so `cnnlab train digits` and `cnnlab suite report001` work from any folder
and from an installed wheel. In the repository, `examples/` and `suites/` link to them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

PACKAGE_FOLDER = Path(str(resources.files("cnnlab")))
EXAMPLES_FOLDER = PACKAGE_FOLDER / "examples"
SUITES_FOLDER = PACKAGE_FOLDER / "suites"
MAX_NAME_CHARACTERS = 100  # longer than any bundled name; a longer text is not looked up


def example_names() -> list[str]:
    """Names of the bundled example experiments (`digits`, ...)."""
    return sorted(path.stem for path in EXAMPLES_FOLDER.glob("*.yaml"))


def suite_names() -> list[str]:
    """Names of the bundled suites (`report000-keras-mnist`, ...)."""
    return sorted(path.stem for path in SUITES_FOLDER.glob("*.yaml"))


def bundled_example(name: str) -> Optional[Path]:
    """The bundled example config called ``name`` (with or without `.yaml`), or None."""
    return _bundled(EXAMPLES_FOLDER, name)


def bundled_suite(name: str) -> Optional[Path]:
    """The bundled suite called ``name`` (with or without `.yaml`), or None."""
    return _bundled(SUITES_FOLDER, name)


def _bundled(folder: Path, name: str) -> Optional[Path]:
    stem = name[:-5] if name.endswith(".yaml") else name
    if not stem or len(stem) > MAX_NAME_CHARACTERS or any(character in stem for character in "/\\\0") \
            or stem.startswith("."):  # a bare, short name, never a path
        return None
    path = folder / f"{stem}.yaml"
    return path if path.is_file() else None
