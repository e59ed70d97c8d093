"""cnnlab: image-classification experiments with convolutional networks.

From Python (docs/api.md): ``cnnlab.train(config, **settings) -> Run``, ``cnnlab.load_run(path) -> Run``,
``cnnlab.models()``, ``cnnlab.summary(model)``, ``cnnlab.Callback`` (hooks into training), ``cnnlab.Run`` and
``cnnlab.Predictions``. They live in `cnnlab.api` and load on first use (PEP 562), so that `import cnnlab`
and the `cnnlab` command, which imports this package first, answer at once without loading torch.

``cnnlab.models`` is the function that lists the zoo, even once the subpackage `cnnlab.models` has been
imported (Python would otherwise bind the subpackage to that name): import the subpackage's contents with
``from cnnlab.models import ...``."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see; at run time `__getattr__` loads them
    from cnnlab.api import Callback, Predictions, Run, load_run, models, summary, train  # noqa: F401

__version__ = "0.1.0"
API_NAMES = ("Callback", "Predictions", "Run", "load_run", "models", "summary", "train")
__all__ = ["__version__", *API_NAMES]


def __getattr__(name: str) -> Any:
    """The public API's names, imported from `cnnlab.api` when first asked for."""
    if name in API_NAMES:
        value = getattr(importlib.import_module("cnnlab.api"), name)
        globals()[name] = value  # asked once: later lookups find it without coming here
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API_NAMES})


class _Package(types.ModuleType):
    """This package's module type: importing a subpackage named like a public function (`cnnlab.models`)
    leaves the name to the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in API_NAMES and isinstance(value, types.ModuleType):
            return  # the import system binding a subpackage: `from cnnlab.models import ...` still works
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
