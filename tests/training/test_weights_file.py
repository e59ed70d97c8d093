"""model.safetensors with the run's description: readable by safetensors as before, and byte-identical for
the same weights and description (safetensors alone writes metadata keys in a random order)."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load, save

from cnnlab import runs
from cnnlab.errors import CnnlabError
from cnnlab.training.weights_file import describe_run, read_weights_metadata, weights_bytes

CLASSES = ["cat", "dog", "élan"]  # a name outside ASCII travels as UTF-8 JSON


def description():
    return describe_run(CLASSES, (3, 32, 32), {"mode": "zscore", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2],
                                               "scale": 1 / 255}, "cifar10", "fast/cifar10", "ab" * 32)


def tensors():
    generator = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=generator), "conv.bias": torch.zeros(4),
            "norm.num_batches_tracked": torch.tensor(7), "head.weight": torch.randn(3, 4, dtype=torch.float64, generator=generator)}


def test_same_weights_and_description_give_the_same_bytes():
    first = weights_bytes(tensors(), description())
    assert all(weights_bytes(tensors(), description()) == first for _ in range(10))
    # what the rewrite guards against: safetensors' own metadata order differs from call to call
    assert len({save(tensors(), metadata=description()) for _ in range(10)}) > 1


def test_the_file_loads_as_before_and_its_metadata_reads_back(tmp_path):
    path = tmp_path / runs.WEIGHTS_FILE
    path.write_bytes(weights_bytes(tensors(), description()))
    loaded = load(path.read_bytes())
    for key, value in tensors().items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype
    metadata = read_weights_metadata(path)
    assert json.loads(metadata["class_names"]) == CLASSES
    assert json.loads(metadata["input_shape"]) == [3, 32, 32]
    assert json.loads(metadata["normalization"])["mean"] == [0.5, 0.4, 0.3]
    assert metadata["config_sha256"] == "ab" * 32 and metadata["dataset"] == "cifar10"
    assert metadata["model"] == "fast/cifar10" and metadata["cnnlab_version"] == runs.cnnlab_version()
    assert "logits" in metadata["output"] and "scale" in metadata["input"]
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == sorted(tensors())
    assert len(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")]) % 8 == 0


def test_without_a_description_the_bytes_are_safetensors_own():
    assert weights_bytes(tensors(), {}) == save(tensors())


def test_old_weights_have_no_metadata_and_damaged_ones_say_so(tmp_path):
    old = tmp_path / "old.safetensors"
    old.write_bytes(save(tensors()))
    assert read_weights_metadata(old) == {}
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(weights_bytes(tensors(), description())[:100])
    with pytest.raises(CnnlabError, match="not a readable safetensors file"):
        read_weights_metadata(damaged)
