"""The model zoo's registry: `ZooEntry` records, `register`, `get_entry`, `list_entries`.

The entries themselves live in one module per lab report (and one per cnnlab preset family),
which `cnnlab.models.zoo` imports; each calls `register(ZooEntry(...))` once per entry."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from cnnlab.errors import ConfigError, did_you_mean

# Input shape (channels, height, width) of each dataset a zoo entry can name.
DATASET_INPUT_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                        "cifar10-jpeg": (3, 32, 32)}
# Keras' BatchNormalization defaults (moving-average momentum 0.99, epsilon 1e-3) in PyTorch's terms: each
# new batch weighs 0.01 in the running statistics (PyTorch's default 0.1 makes test-time statistics noisier).
KERAS_BATCH_NORM = "BatchNorm: momentum=0.01, epsilon=0.001"
RECIPE_KEYS = ("dataset", "train", "optimizer", "schedule", "augment")

# Entries that were renamed: old name -> current name. Run folders made before a rename keep the
# old name in their config.yaml, so `get_entry` still resolves it (to rebuild and report those
# runs); `list_entries` and `cnnlab models` show only current names.
# Report 004 ("TP RF: CNN") was first registered under the opaque prefix tprf/.
RENAMED = {
    "tprf/baseline": "report004/baseline",
    "tprf/narrow": "report004/narrow",
    "tprf/wide": "report004/wide",
    "tprf/three-convs": "report004/three-convs",
    "tprf/three-blocks": "report004/three-blocks",
    "tprf/three-blocks-augment": "report004/three-blocks-augment",
    "tprf/three-blocks-schedule": "report004/three-blocks-schedule",
    "tprf/three-blocks-dropout": "report004/three-blocks-dropout",
    "tprf/three-blocks-batchnorm": "report004/three-blocks-batchnorm",
    "tprf/squeezenet": "report004/squeezenet",
}


@dataclass
class ZooEntry:
    """A named model from the lab reports: its layers, the report's training recipe and result."""

    name: str
    dataset: str
    layers: list[str]
    recipe: dict[str, Any]  # partial experiment config: train, optimizer, schedule, augment, dataset
    description: str  # one line, says what is assumed where the report is silent
    source: str  # e.g. "report 000, Keras part"
    reported_accuracy: float | None = None  # 0..1
    reported_accuracy_kind: str = "test"  # "test" or "validation"
    reported_time_s: float | None = None  # the report's own training time, on its own machine
    # a pretrained backbone's settings (backbone, trainable, input_size, ...: the model section's keys);
    # `layers` is then the head on its features
    backbone: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Entries often share a recipe or layer list; each keeps its own copy so no edit leaks.
        self.layers = copy.deepcopy(list(self.layers))
        self.recipe = copy.deepcopy(dict(self.recipe))
        self.backbone = copy.deepcopy(self.backbone)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return DATASET_INPUT_SHAPES[self.dataset]


_ENTRIES: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    """Add an entry to the zoo; ValueError (a bug in a zoo module) if it is malformed or registered twice."""
    _check_entry(entry)
    _ENTRIES[entry.name] = entry
    return entry


def get_entry(name: str) -> ZooEntry:
    """The entry called `name` (or formerly called so, see RENAMED); ConfigError with the closest
    name when there is none."""
    current_name = RENAMED.get(name, name)
    if current_name in _ENTRIES:
        return _ENTRIES[current_name]
    raise ConfigError(f'Unknown model "{name}".{did_you_mean(name, _ENTRIES)} '
                      "Run `cnnlab models` to list the zoo, or give the layers yourself with model: {layers: [...]}.")


def list_entries(dataset: str | None = None) -> list[ZooEntry]:
    """All entries, or those for one dataset, grouped by source (baseline, then report 000, 001, ...)."""
    chosen = [entry for entry in _ENTRIES.values() if dataset is None or entry.dataset == dataset]
    return sorted(chosen, key=lambda entry: entry.source)  # stable: registration order within a source


def name_prefix(name: str) -> str:
    """The family part of an entry's name: "keras/" for keras/mnist/model1, the whole name when it has no "/"."""
    return name.split("/", 1)[0] + "/" if "/" in name else name


def make_recipe(epochs: int, *, batch_size: int = 32, validation_split: float = 0.1,
                optimizer: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """A recipe: training length and optimizer (Adam, lr 1e-3 unless given), plus any of
    schedule, augment and dataset as further sections."""
    unknown = set(sections) - set(RECIPE_KEYS)
    if unknown:
        raise ValueError(f"unknown recipe sections {sorted(unknown)}")
    recipe = {"train": {"epochs": epochs, "batch_size": batch_size, "validation_split": validation_split},
              "optimizer": optimizer or {"name": "adam", "lr": 1e-3}}
    recipe.update({name: copy.deepcopy(section) for name, section in sections.items() if section is not None})
    return recipe


def _check_entry(entry: ZooEntry) -> None:
    # These are programming errors in a zoo module, not user errors.
    if entry.name in _ENTRIES or entry.name in RENAMED:
        raise ValueError(f"zoo entry {entry.name} is registered twice (or under a name given up in RENAMED)")
    if entry.dataset not in DATASET_INPUT_SHAPES:
        raise ValueError(f"zoo entry {entry.name}: unknown dataset {entry.dataset}")
    if entry.reported_accuracy is not None and not 0 <= entry.reported_accuracy <= 1:
        raise ValueError(f"zoo entry {entry.name}: reported_accuracy must be a fraction 0..1")
    if entry.reported_accuracy_kind not in ("test", "validation"):
        raise ValueError(f"zoo entry {entry.name}: reported_accuracy_kind must be test or validation")
    unknown = set(entry.recipe) - set(RECIPE_KEYS)
    if unknown:
        raise ValueError(f"zoo entry {entry.name}: unknown recipe keys {sorted(unknown)}")
