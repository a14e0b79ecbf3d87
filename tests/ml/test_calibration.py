"""Temperature scaling on numbers whose right answer is known."""
import numpy as np
import pytest

from apps.ml.calibration import (
    expected_calibration_error,
    fit_temperature,
    logits_of,
    nll,
    softmax,
    temperature_report,
)


def _overconfident(true_temperature: float, n: int = 4000, classes: int = 10, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits / true_temperature): a model that is calibrated only
    once its logits are divided by ``true_temperature``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(n, classes))
    p = softmax(logits, true_temperature)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with(true_temperature):
    logits, labels = _overconfident(true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.08)


def test_calibration_lowers_ece_and_nll_and_keeps_the_ranking():
    logits, labels = _overconfident(2.5)
    report = temperature_report(logits, labels, split="val")
    assert report["ece_before"] > 0.1 and report["ece_after"] < 0.03
    assert report["nll_after"] < report["nll_before"]
    t = report["temperature"]
    assert (softmax(logits, t).argmax(1) == softmax(logits).argmax(1)).all()
    assert nll(logits, labels, t) == pytest.approx(report["nll_after"], abs=1e-6)


def test_a_temperature_is_fitted_the_same_from_probabilities_as_from_logits():
    """What the serving path keeps (probabilities) is enough: log p is the logits shifted per row."""
    logits, labels = _overconfident(1.7, n=1500)
    assert fit_temperature(logits_of(softmax(logits)), labels) == pytest.approx(fit_temperature(logits, labels), rel=1e-6)
    assert expected_calibration_error(softmax(logits_of(softmax(logits)), 1.7), labels) == pytest.approx(
        expected_calibration_error(softmax(logits, 1.7), labels))


def test_no_images_means_no_change_and_bad_shapes_are_refused():
    assert fit_temperature(np.zeros((0, 3)), []) == 1.0
    with pytest.raises(ValueError, match="N × K"):
        fit_temperature(np.zeros((4, 3)), [0, 1])
