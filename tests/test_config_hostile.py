"""Hostile and careless configs through the real command line: each is refused with one paragraph that names
the file or field (exit code 2), never a traceback, and nothing is trained or written."""

from __future__ import annotations

import os

import pytest

from cnnlab import errors
from cnnlab.cli import main
from cnnlab.config import MAX_CONFIG_BYTES, MAX_CONFIG_VALUES, load_config
from cnnlab.errors import ConfigError, did_you_mean, short_repr

MESSAGE_LIMIT = 1500  # characters: one paragraph, however large the input


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, tmp_path, *argv, fragments=()):
    """Run ``cnnlab ARGV --out tmp/run`` (train) or ARGV, check the clean refusal and return the message."""
    out = tmp_path / "run"
    extra = ["--out", str(out)] if argv[0] == "train" else []
    code, stdout, err = run_cli(capsys, *argv, *extra)
    message = " ".join(err.split())
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error:"), err
    assert len(err) < MESSAGE_LIMIT, f"{len(err)} characters"
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not out.exists(), "a refused config must write nothing"
    return message


def config_file(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


GOOD = "dataset: digits\nmodel: mlp\n"


# --------------------------------------------------------------------------- unbounded sizes

@pytest.mark.parametrize("override, field", [
    ("train.seed=-1", "train.seed"),
    ("train.seed=4294967296", "train.seed"),
    ("dataset.split_seed=4294967296", "dataset.split_seed"),
    ("dataset.image_size=5000", "dataset.image_size"),
    ("dataset.image_size=[32, 5000]", "dataset.image_size"),
    ("train.threads=100000", "train.threads"),
    ("train.batch_size=10000000", "train.batch_size"),
    ("train.eval_batch_size=10000000", "train.eval_batch_size"),
    ("train.epochs=10000000", "train.epochs"),
    ("dataset.subset=100000000000", "dataset.subset"),
    ("model.truncate_blocks=100000", "model.truncate_blocks"),
])
def test_sizes_out_of_range_name_the_field(capsys, tmp_path, override, field):
    refused(capsys, tmp_path, "train", config_file(tmp_path, GOOD), override, fragments=(field,))


def test_the_largest_seed_is_accepted():
    assert load_config("mlp", ["train.seed=4294967295"]).train.seed == 2**32 - 1


def test_a_config_from_dev_zero_or_a_pipe_is_refused_unread(capsys, tmp_path):
    refused(capsys, tmp_path, "train", "/dev/zero", fragments=("/dev/zero is not a regular file",))
    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)  # opening it would wait forever for a writer
    refused(capsys, tmp_path, "train", str(pipe), fragments=("pipe.yaml is not a regular file",))


def test_a_huge_config_file_is_refused_by_its_size(capsys, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(GOOD + "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    refused(capsys, tmp_path, "train", str(path), fragments=("huge.yaml is larger than 1,024 KiB",))


def test_an_alias_bomb_is_refused_by_its_expanded_size(capsys, tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]" for level in range(1, 9)]
    path = config_file(tmp_path, "\n".join(lines) + "\n" + GOOD)  # 10**9 values when expanded
    refused(capsys, tmp_path, "train", path, fragments=(f"expands to more than {MAX_CONFIG_VALUES:,} values",))


def test_deep_nesting_and_a_number_too_long_are_refused(capsys, tmp_path):
    deep = config_file(tmp_path, "name: " + "[" * 50_000 + "]" * 50_000 + "\n", "deep.yaml")
    refused(capsys, tmp_path, "train", deep, fragments=("deep.yaml holds a value cnnlab cannot read",))
    long_number = config_file(tmp_path, GOOD + "train: {epochs: " + "9" * 10_000 + "}\n", "number.yaml")
    refused(capsys, tmp_path, "train", long_number, fragments=("number.yaml",))
    refused(capsys, tmp_path, "train", config_file(tmp_path, GOOD), "train.epochs=" + "9" * 10_000,
            fragments=("train.epochs",))


def test_gigantic_inputs_are_shortened_in_every_message(capsys, tmp_path):
    path = config_file(tmp_path, GOOD)
    huge = "x" * 200_000
    refused(capsys, tmp_path, "train", path, f"train.epochs={huge}", fragments=("train.epochs", "..."))
    refused(capsys, tmp_path, "train", path, f"train.{huge}=1", fragments=("unknown key",))
    refused(capsys, tmp_path, "train", path, huge, fragments=("must look like key=value",))
    refused(capsys, tmp_path, "train", huge, fragments=("neither a config file nor a zoo name",))
    layers = config_file(tmp_path, f'dataset: digits\nmodel: {{layers: ["Conv2D: {huge}", "Dense: classes"]}}\n',
                         "layers.yaml")
    refused(capsys, tmp_path, "summary", layers, fragments=("Layer 1",))
    many = config_file(tmp_path, "dataset: digits\nmodel: {layers: [" + ", ".join(["3"] * 500) + "]}\n", "many.yaml")
    refused(capsys, tmp_path, "train", many, fragments=("more",))


def test_shortening_helpers():
    assert did_you_mean("epochs" * 10_000, ["epochs"]) == ""  # no quadratic comparison of a huge word
    assert len(short_repr("x" * 10**6)) <= 80
    assert "digits" in short_repr(10**100_000)  # repr() itself would raise ValueError


# --------------------------------------------------------------------------- silently accepted before

@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "{}\n"])
def test_a_config_without_settings_is_refused(capsys, tmp_path, text):
    refused(capsys, tmp_path, "train", config_file(tmp_path, text), fragments=("exp.yaml holds no settings",))


def test_a_key_given_twice_is_refused_with_its_lines(capsys, tmp_path):
    path = config_file(tmp_path, "dataset: digits\nmodel: mlp\ntrain:\n  epochs: 3\n  epochs: 30\n")
    refused(capsys, tmp_path, "train", path, fragments=('the key "epochs" is given twice (lines 4 and 5)',))
    path = config_file(tmp_path, "dataset: digits\nmodel: mlp\ndataset: mnist\n")
    refused(capsys, tmp_path, "train", path, fragments=('the key "dataset" is given twice (lines 1 and 3)',))


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = config_file(tmp_path, GOOD + "train:\n  <<: {epochs: 3, batch_size: 16}\n  epochs: 5\n")
    config = load_config(path)
    assert (config.train.epochs, config.train.batch_size) == (5, 16)


@pytest.mark.parametrize("override, field", [
    ("train.epochs=true", "train.epochs"),
    ("train.batch_size=false", "train.batch_size"),
    ("train.epochs='3'", "train.epochs"),
    ("train.compile=1", "train.compile"),
    ("optimizer.lr=.inf", "optimizer.lr"),
    ("optimizer.lr=.nan", "optimizer.lr"),
    ("optimizer.lr=true", "optimizer.lr"),
    ("optimizer.betas=[0.9, .inf]", "optimizer.betas"),
    ("schedule.values=[0.1, .nan]", "schedule.values"),
    ("augment.rotation_range=.nan", "augment.rotation_range"),
    ("augment.zoom_range=[0.5, .inf]", "augment.zoom_range"),
    ("dataset.test_fraction=.nan", "dataset.test_fraction"),
    ("model.backbone_lr_factor=.inf", "model"),
])
def test_wrong_types_and_non_finite_numbers_are_refused(capsys, tmp_path, override, field):
    refused(capsys, tmp_path, "train", config_file(tmp_path, GOOD), override, fragments=(field,))


def test_numbers_as_users_write_them_still_work(tmp_path):
    path = config_file(tmp_path, GOOD + "optimizer: {lr: 1e-3, betas: [0.9, 1]}\ntrain: {label_smoothing: 0}\n"
                       "augment: {zoom_range: [0.9, 1.1], random_affine: {translate: [0.1, 0.1]}}\n")
    config = load_config(path, ["optimizer.weight_decay=5e-4", "train.epochs=2"])
    assert config.optimizer.lr == 1e-3 and config.optimizer.weight_decay == 5e-4
    assert config.optimizer.betas == (0.9, 1.0) and config.train.label_smoothing == 0.0
    again = load_config(config_file(tmp_path, __import__("yaml").safe_dump(config.to_dict()), "saved.yaml"))
    assert again.to_dict() == config.to_dict()  # a saved config.yaml loads back to the same config


def test_a_memory_estimate_refuses_before_allocating(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(errors, "physical_memory_bytes", lambda: 1 << 20)  # a machine of 1 MiB
    refused(capsys, tmp_path, "train", config_file(tmp_path, GOOD), "dataset.image_size=64",
            fragments=("Resizing the 1,797 images of digits to 64x64 needs about", "dataset.image_size"))


def test_load_config_raises_config_error_for_each_class(tmp_path):
    with pytest.raises(ConfigError, match="holds no settings"):
        load_config(config_file(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match="given twice"):
        load_config(config_file(tmp_path, GOOD), ["train={epochs: 1, epochs: 2}"])
