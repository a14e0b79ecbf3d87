import urllib.error

import pytest
import torch

from apps.ml.architectures import WeightsError, architectures, count_parameters


def test_mobilenet_v2_with_32_classes_has_the_original_parameter_count():
    model = architectures.get("mobilenet_v2").build(32, weights="none")
    assert count_parameters(model) == 2_264_864


def test_each_architecture_declares_input_size_and_normalization():
    assert architectures.get("mobilenet_v2").input_size == 224
    assert architectures.get("simple").input_size == 128
    for name in ("mobilenet_v2", "simple"):
        norm = architectures.get(name).normalization
        assert len(norm["mean"]) == 3 and len(norm["std"]) == 3


def test_simple_forward_gives_one_logit_per_class():
    model = architectures.get("simple").build(4).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_weights_from_a_local_file_are_loaded_except_the_head(tmp_path):
    source = architectures.get("simple").build(7)
    torch.nn.init.constant_(source.features[0].weight, 0.125)
    path = tmp_path / "simple.pth"
    torch.save(source.state_dict(), path)
    model = architectures.get("simple").build(3, weights=str(path))
    assert torch.equal(model.features[0].weight, source.features[0].weight)
    assert model.classifier[-1].out_features == 3
    fresh = architectures.get("simple").build(3)
    assert not torch.equal(fresh.features[0].weight, source.features[0].weight)


def test_weights_file_that_does_not_exist_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        architectures.get("mobilenet_v2").build(3, weights=str(tmp_path / "missing.pth"))


def test_imagenet_without_network_says_what_to_do(monkeypatch):
    from torchvision.models import MobileNet_V2_Weights

    def offline(self, *args, **kwargs):  # the download boundary: no network here, and none is tried
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(type(MobileNet_V2_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(WeightsError) as info:
        architectures.get("mobilenet_v2").build(3, weights="imagenet")
    assert "could not be downloaded" in str(info.value) and "--weights" in str(info.value)


def test_simple_has_no_imagenet_weights():
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        architectures.get("simple").build(3, weights="imagenet")
