import pytest

from apps.ml.config import ConfigError, TrainConfig


def test_defaults_fine_tune_with_the_original_systems_values():
    config = TrainConfig.from_dict({})
    assert (config.architecture, config.batch_size, config.epochs, config.weights) == ("mobilenet_v2", 32, 100, "auto")
    finetune = config.resolved("imagenet")  # what a run that found ImageNet weights uses
    assert (finetune.optimizer, finetune.lr, finetune.weight_decay, finetune.scheduler, finetune.patience) == (
        "adam", 1e-4, 1e-4, "cosine", 10)
    assert config.resolved_image_size() == 224


def test_a_bad_config_is_refused_with_every_problem_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"architecture": "resnet9000", "epochs": 0, "lr": -1, "optimizer": "sgd",
                               "weights": str(tmp_path / "nope.pth"), "colour": "red", "batch_size": "many"})
    message = str(info.value)
    for fragment in ("unknown architecture 'resnet9000'", "known: mobilenet_v2, simple", "epochs must be at least 1",
                     "lr must be a positive", "optimizer must be one of adam, adamw", "is not a file",
                     "unknown setting 'colour'", "batch_size must be a int"):
        assert fragment in message
    assert len(info.value.problems) == 7


def test_values_from_text_are_coerced_and_image_size_defaults_to_the_architecture():
    config = TrainConfig.from_dict({"architecture": "simple", "epochs": "3", "lr": "0.01"})
    assert (config.epochs, config.lr, config.resolved_image_size()) == (3, 0.01, 128)


def test_warmup_must_leave_epochs_to_anneal():
    with pytest.raises(ConfigError, match="warmup_epochs"):
        TrainConfig.from_dict({"epochs": 3, "warmup_epochs": 3})
