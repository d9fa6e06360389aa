import pytest
import torch
from torchmetrics.classification import BinaryAUROC

from tml.core.metrics.auroc import AUROCWithMWU


def pairwise_auc(scores, labels, weights, threshold=0.5):
    """O(n^2) reference: weighted fraction of (positive, negative) pairs ordered correctly, ties half."""
    wins = total = 0.0
    for score_p, label_p, weight_p in zip(scores.tolist(), labels.tolist(), weights.tolist()):
        if label_p <= threshold:
            continue
        for score_n, label_n, weight_n in zip(scores.tolist(), labels.tolist(), weights.tolist()):
            if label_n > threshold:
                continue
            pair = weight_p * weight_n
            total += pair
            wins += pair * (1.0 if score_p > score_n else 0.5 if score_p == score_n else 0.0)
    return wins / total


def _auc(scores, labels, weight=1.0, **kwargs):
    metric = AUROCWithMWU(**kwargs)
    metric.update(torch.as_tensor(scores), torch.as_tensor(labels), weight)
    return metric.compute().item()


def test_hand_computed_auc():
    # Positive 0.35 beats negative 0.1 only; positive 0.8 beats both: 3 of 4 pairs.
    assert _auc([0.1, 0.4, 0.35, 0.8], [0.0, 0.0, 1.0, 1.0]) == pytest.approx(0.75)


def test_ties_count_one_half():
    # Positive 0.5 ties both negatives (2 x 1/2), positive 0.9 beats both: 3 / 4.
    assert _auc([0.5, 0.5, 0.5, 0.9], [1.0, 0.0, 0.0, 1.0]) == pytest.approx(0.75)
    assert _auc([0.3, 0.3], [1.0, 0.0]) == pytest.approx(0.5)


def test_weighted_hand_computed_auc():
    # W+ = 2, W- = 1 + 3 + 4 = 8. The positive beats 0.1 (w 1), ties 0.3 (w 4 -> 2), loses to 0.5.
    auc = _auc([0.3, 0.1, 0.5, 0.3], [1.0, 0.0, 0.0, 0.0], torch.tensor([2.0, 1.0, 3.0, 4.0]))
    assert auc == pytest.approx(2 * (1 + 2) / (2 * 8))


def test_matches_pairwise_reference_with_ties_weights_and_soft_labels():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 12, (300,), generator=generator).float() / 12  # many ties
    labels = torch.rand(300, generator=generator)  # soft labels, thresholded at 0.5
    weights = torch.rand(300, generator=generator) * 3
    metric = AUROCWithMWU()
    for chunk in range(3):  # several updates = one big update
        rows = slice(chunk * 100, (chunk + 1) * 100)
        metric.update(scores[rows], labels[rows], weights[rows])
    assert metric.compute().item() == pytest.approx(pairwise_auc(scores, labels, weights), abs=1e-12)


def test_label_threshold():
    scores, labels = torch.tensor([0.1, 0.2, 0.9]), torch.tensor([0.6, 0.0, 0.8])
    assert _auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels, torch.ones(3)))  # 0.6 positive
    assert _auc(scores, labels, label_threshold=0.7) == pytest.approx(1.0)  # 0.6 negative now


def test_matches_torchmetrics_without_ties():
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(1000, generator=generator)
    labels = (torch.rand(1000, generator=generator) < 0.1 + 0.5 * scores).float()
    reference = BinaryAUROC()(scores, labels.int()).item()
    assert _auc(scores, labels) == pytest.approx(reference, abs=1e-6)


def test_missing_class_warns_with_nan_or_raises(capsys):
    assert torch.isnan(torch.tensor(_auc([0.1, 0.2], [1.0, 1.0])))
    assert "AUROC is undefined: no negative examples" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"AUROC is undefined: no positive examples \(label_threshold=0.5\)"):
        _auc([0.1, 0.2], [0.0, 0.0], raise_missing_class=True)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"predictions \(3,\) and target \(2,\) must have the same shape"):
        AUROCWithMWU().update(torch.zeros(3), torch.zeros(2))
