import pytest

from cnnlab.config import ExperimentConfig, load_config, validate_config
from cnnlab.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def test_file_and_dotted_overrides(tmp_path):
    path = write(tmp_path, "name: t\ndataset: mnist\nmodel: mlp\ntrain: {epochs: 5}\n")
    config = load_config(path, ["train.epochs=3", "optimizer.lr=0.01", "optimizer.name=SGD", "dataset.subset=100"])
    assert config.train.epochs == 3
    assert config.optimizer.lr == 0.01
    assert config.optimizer.name == "sgd"
    assert config.dataset.name == "mnist" and config.dataset.subset == 100
    assert config.model.name == "mlp"


def test_dataset_override_replaces_name(tmp_path):
    config = load_config(write(tmp_path, "dataset: digits\n"), ["dataset=mnist"])
    assert config.dataset.name == "mnist"


def test_layer_list_model(tmp_path):
    config = load_config(write(tmp_path, "model:\n  layers: ['Flatten', 'Dense: 10']\n"))
    assert config.model.layers == ["Flatten", "Dense: 10"]
    assert config.to_dict()["model"] == {"layers": ["Flatten", "Dense: 10"]}


def test_unknown_key_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "train: {epocs: 3}\n"))
    assert 'train.epocs' in str(error.value) and 'Did you mean "epochs"' in str(error.value)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match='Did you mean "optimizer"'):
        load_config(write(tmp_path, "optimiser: {lr: 0.1}\n"))


def test_wrong_type_names_field(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "name: x\n"), ["train.epochs=many"])
    assert "train.epochs" in str(error.value) and "many" in str(error.value)


def test_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(write(tmp_path, "name: x\n"), ["train.epochs"])


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match="line"):
        load_config(write(tmp_path, "train: {epochs: [1,\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))


def test_piecewise_needs_matching_values():
    with pytest.raises(ConfigError, match="piecewise"):
        validate_config({"schedule": {"name": "piecewise", "boundaries": [5], "values": [0.1]}})


def test_zoo_name_gives_recipe():
    config = load_config("keras/mnist/model1", ["train.epochs=1"])
    assert config.dataset.name == "mnist"
    assert config.model.name == "keras/mnist/model1"
    assert config.train.epochs == 1
    assert config.train.batch_size == 32


def test_unknown_zoo_name():
    with pytest.raises(ConfigError, match="Did you mean"):
        load_config("keras/mnist/modell")


def test_defaults_round_trip():
    config = ExperimentConfig()
    again = validate_config(config.to_dict())
    assert again == config


def test_early_stopping_needs_a_validation_split():
    with pytest.raises(ConfigError, match="validation_split"):
        validate_config({"train": {"validation_split": 0, "early_stopping": {"patience": 2}}})


def test_dataset_override_keeps_the_recipes_options():
    config = load_config("cifar10/bn-cnn-zscore", ["dataset=cifar10-jpeg"])
    assert config.dataset.name == "cifar10-jpeg" and config.dataset.normalize == "zscore-global"


def test_augment_section_is_validated_with_the_config(tmp_path):
    with pytest.raises(ConfigError, match="rotation_range"):
        load_config(write(tmp_path, "augment: {rotation_rang: 10}\n"))
