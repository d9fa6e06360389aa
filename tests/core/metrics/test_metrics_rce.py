import math

import pytest
import torch

from tml.core.metrics.rce import NRCE, RCE

EPS = 1e-7


def entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def cross_entropy(predictions, labels) -> float:
    """Mean BCE without clipping (the tests keep predictions away from 0 and 1)."""
    return sum(-(y * math.log(p) + (1 - y) * math.log(1 - p)) for p, y in zip(predictions, labels)) / len(labels)


def _value(metric_cls, predictions, labels, weight=1.0, **kwargs):
    metric = metric_cls(**kwargs)
    metric.update(torch.tensor(predictions), torch.tensor(labels), weight)
    return metric.compute().item()


LABELS = [1.0, 0.0, 0.0, 0.0]


def test_rce_hand_computed():
    # CE(model) = ln2 for p = 0.5 everywhere; the baseline predicts the label rate 0.25.
    expected = (1 - math.log(2) / entropy(0.25)) * 100
    assert _value(RCE, [0.5] * 4, LABELS) == pytest.approx(expected, rel=1e-5)


def test_rce_of_a_perfect_model_is_100_and_of_the_label_rate_is_0():
    assert _value(RCE, LABELS, LABELS) == pytest.approx(100.0, abs=1e-6)
    assert _value(RCE, [0.25] * 4, LABELS) == pytest.approx(0.0, abs=1e-6)


def test_rce_clips_confident_mistakes_keras_style():
    # The positive predicted 0 costs -log(eps + eps); the correct negative costs -log(1 - eps + eps) = 0.
    expected = (1 - (-math.log(2 * EPS) / 2) / math.log(2)) * 100
    assert _value(RCE, [0.0, 0.0], [1.0, 0.0]) == pytest.approx(expected, rel=1e-6)


def test_rce_label_smoothing_moves_labels_towards_one_half():
    smoothed = [y * 0.8 + 0.1 for y in LABELS]  # label_smoothing = 0.2
    predictions = [0.6, 0.3, 0.2, 0.1]
    expected = (1 - cross_entropy(predictions, smoothed) / entropy(sum(smoothed) / 4)) * 100
    assert _value(RCE, predictions, LABELS, label_smoothing=0.2) == pytest.approx(expected, rel=1e-5)


def test_rce_from_logits_equals_rce_of_probabilities():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    from_logits = _value(RCE, logits.tolist(), LABELS, from_logits=True)
    assert from_logits == pytest.approx(_value(RCE, torch.sigmoid(logits).tolist(), LABELS), rel=1e-6)


def test_rce_weight_equals_duplicating_examples():
    weighted = _value(RCE, [0.7, 0.2, 0.4], [1.0, 0.0, 0.0], torch.tensor([2.0, 1.0, 3.0]))
    duplicated = _value(RCE, [0.7, 0.7, 0.2, 0.4, 0.4, 0.4], [1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert weighted == pytest.approx(duplicated, rel=1e-9)


def test_rce_forward_returns_the_batch_value_and_accumulates():
    metric = RCE()
    first = metric(torch.tensor([0.5] * 4), torch.tensor(LABELS))
    assert first.item() == pytest.approx((1 - math.log(2) / entropy(0.25)) * 100, rel=1e-5)
    second = metric(torch.tensor([0.9, 0.1]), torch.tensor([1.0, 0.0]))
    assert second.item() == pytest.approx((1 - cross_entropy([0.9, 0.1], [1, 0]) / math.log(2)) * 100, rel=1e-5)
    everything = [0.5] * 4 + [0.9, 0.1]
    labels = LABELS + [1.0, 0.0]
    expected = (1 - cross_entropy(everything, labels) / entropy(2 / 6)) * 100
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)
    metric.reset()
    metric.update(torch.tensor(LABELS), torch.tensor(LABELS))
    assert metric.compute().item() == pytest.approx(100.0, abs=1e-6)


def test_nrce_rescales_predictions_to_the_label_rate():
    predictions = [0.4, 0.2, 0.1, 0.1]  # mean 0.2 vs label rate 0.25: every prediction x 1.25
    rescaled = [p * 1.25 for p in predictions]
    expected = (1 - cross_entropy(rescaled, LABELS) / entropy(0.25)) * 100
    assert _value(NRCE, predictions, LABELS) == pytest.approx(expected, rel=1e-6)
    assert _value(NRCE, predictions, LABELS) == pytest.approx(_value(RCE, rescaled, LABELS), rel=1e-9)


def test_nrce_ignores_miscalibration():
    predictions = torch.tensor([0.4, 0.2, 0.1, 0.1])
    assert _value(NRCE, (predictions * 0.5).tolist(), LABELS) == pytest.approx(
        _value(NRCE, predictions.tolist(), LABELS), rel=1e-9)
    assert _value(NRCE, [0.01] * 4, LABELS) == pytest.approx(0.0, abs=1e-6)  # any constant is the baseline


def test_nrce_uses_the_final_label_rate_not_a_running_one():
    metric = NRCE()
    metric.update(torch.tensor([0.4, 0.2]), torch.tensor([1.0, 0.0]))
    metric.update(torch.tensor([0.1, 0.1]), torch.tensor([0.0, 0.0]))
    assert metric.compute().item() == pytest.approx(_value(NRCE, [0.4, 0.2, 0.1, 0.1], LABELS), rel=1e-12)


def test_nrce_weights_and_from_logits():
    logits = torch.tensor([1.0, -0.5, -2.0])
    weighted = _value(NRCE, logits.tolist(), [1.0, 0.0, 0.0], torch.tensor([2.0, 1.0, 1.0]), from_logits=True)
    probabilities = torch.sigmoid(logits)
    duplicated = _value(NRCE, [probabilities[0].item()] * 2 + probabilities[1:].tolist(), [1.0, 1.0, 0.0, 0.0])
    assert weighted == pytest.approx(duplicated, rel=1e-6)
