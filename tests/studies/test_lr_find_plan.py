"""`cnnlab lr-find` takes training's own step with the compute plan training would choose: the same
precision (a sweep in float32 while training runs in bfloat16 would suggest an lr for another run)
and the same memory layout."""

import json

import pytest
import torch

from cnnlab import runs
from cnnlab.config import load_config
from cnnlab.experiment import run_experiment
from cnnlab.studies.lr_find import find_lr, write_lr_finder
from cnnlab.training.step import TrainingStep

CONVOLUTIONAL = "examples/digits.yaml"  # two convolutions: channels-last on a CPU


@pytest.fixture
def steps_seen(monkeypatch):
    """Each step's logits dtype and whether its model and data are in channels-last."""
    seen = []
    original = TrainingStep.__call__

    def spy(self, indices, lr_factor, epoch):
        output = original(self, indices, lr_factor, epoch)
        # a kernel over several channels (one over a single channel is contiguous in both layouts)
        kernel = next(p for p in self.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
        seen.append({"dtype": output.logits.dtype, "data_channels_last": self.data.channels_last,
                     "model_channels_last": kernel.is_contiguous(memory_format=torch.channels_last)})
        return output

    monkeypatch.setattr(TrainingStep, "__call__", spy)
    return seen


def test_lr_find_steps_in_bf16_when_training_would(steps_seen, tmp_path):
    config = load_config(CONVOLUTIONAL, ["train.precision=bf16", "train.device=cpu"])
    result = find_lr(config, start=1e-4, end=1.0, steps=4, show_progress=False)
    assert result.compute_plan == {"precision": "bf16", "channels_last": True, "compile": False,
                                   "reason": "train.precision=bf16 in the config"}
    assert len(steps_seen) == len(result.lrs) > 0
    assert all(step == {"dtype": torch.bfloat16, "data_channels_last": True, "model_channels_last": True}
               for step in steps_seen)
    paths = write_lr_finder(result, tmp_path / "lrf")
    assert json.loads(paths["json"].read_text())["compute_plan"]["precision"] == "bf16"


def test_lr_find_steps_in_fp32_when_training_would(steps_seen):
    config = load_config(CONVOLUTIONAL, ["train.precision=fp32", "train.channels_last=false", "train.device=cpu"])
    result = find_lr(config, start=1e-4, end=1.0, steps=3, show_progress=False)
    assert result.compute_plan["precision"] == "fp32"
    assert steps_seen and all(step == {"dtype": torch.float32, "data_channels_last": False,
                                       "model_channels_last": False} for step in steps_seen)


@pytest.mark.slow
def test_lr_find_chooses_the_plan_a_training_run_records(tmp_path):
    config = load_config(CONVOLUTIONAL, ["train.epochs=1", "dataset.subset=300", "train.early_stopping=null",
                                         "train.device=cpu"])
    run_dir = run_experiment(config, out=tmp_path / "run", show_progress=False)
    recorded = runs.read_json(run_dir / runs.METRICS_FILE)["fast_path"]
    assert find_lr(config, start=1e-4, end=1.0, steps=2, show_progress=False).compute_plan == recorded
