"""model.safetensors describing itself: the trained weights with the run's description in the file's
metadata (class names, input shape, normalisation, dataset, model, cnnlab version and the SHA-256 of the
run's config.yaml), so the file alone says what the network expects and what its outputs mean.

safetensors metadata is a mapping of strings to strings; lists and mappings are JSON text. The library
writes metadata keys in a random order on every call, which would make two saves of the same weights
differ byte for byte (and a resumed run's weights differ from the uninterrupted run's); `weights_bytes`
writes them sorted instead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save

from cnnlab import runs
from cnnlab.errors import CnnlabError

# What the network in model.safetensors takes and returns (an export says what its own graph does).
WEIGHTS_INPUT = ("float32 images (N, C, H, W): the uint8 pixels times scale, minus mean, over std, per channel "
                 "(see normalization)")
WEIGHTS_OUTPUT = "logits (N, classes): a softmax over them gives the class probabilities"
HEADER_ALIGNMENT = 8  # safetensors pads its JSON header with spaces to a multiple of 8 bytes


def describe_run(class_names: Sequence[str], input_shape: Sequence[int], normalization: Mapping,
                 dataset: str, model: str, config_sha256: str) -> dict[str, str]:
    """The run's description as metadata strings, shared by model.safetensors and exported models.

    ``input_shape`` is (C, H, W); ``normalization`` the recorded mapping (mode, mean, std, scale);
    ``config_sha256`` the SHA-256 of the run's config.yaml file as written (`sha256sum config.yaml`)."""
    return {
        "cnnlab_version": runs.cnnlab_version(),
        "dataset": str(dataset),
        "model": str(model),
        "class_names": json.dumps([str(name) for name in class_names]),
        "input_shape": json.dumps([int(size) for size in input_shape]),
        "normalization": json.dumps({key: normalization[key] for key in ("mode", "mean", "std", "scale")}),
        "config_sha256": config_sha256,
    }


def config_digest(run_dir: Path) -> str:
    """The SHA-256 of the run's config.yaml as written (hex)."""
    return runs.file_digest(Path(run_dir) / runs.CONFIG_FILE)


def weights_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors file of ``tensors`` with ``metadata`` (plus what the weights' network takes and returns),
    its keys sorted so that the same weights and description always give the same bytes."""
    raw = save(dict(tensors))
    if not metadata:
        return raw
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    described = {**metadata, "input": WEIGHTS_INPUT, "output": WEIGHTS_OUTPUT}
    header["__metadata__"] = {key: str(described[key]) for key in sorted(described)}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % HEADER_ALIGNMENT)  # tensor offsets count from the header's end: unchanged
    return len(text).to_bytes(8, "little") + text + raw[8 + length:]


def read_weights_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file (empty for weights saved before runs described themselves)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError for a damaged file
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise CnnlabError(f"{path} is not a readable safetensors file ({str(error).strip()[:200]}): it is "
                          "truncated, damaged or of another format. Re-run the training with `cnnlab train`.") from None
