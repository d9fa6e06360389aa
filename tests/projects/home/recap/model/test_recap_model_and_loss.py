import pytest
import torch
import torch.nn.functional as F
from recap_model_builders import INPUT_SHAPES, TASKS, batch, data_config, model_config

from tml.core.optimizers.config import LearningRate
from tml.projects.home.recap.embedding.config import StratifierConfig
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel
from tml.projects.home.recap.model.model_and_loss import (
    RecapModelAndLoss,
    build_recap_loss,
    task_column_indices,
)
from tml.projects.home.recap.optimizer.config import RecapOptimizerConfig
from tml.projects.home.recap.optimizer.optimizer import build_optimizer

# The data carries more label columns than the model has towers, in another order (spec bug B1).
DATA_TASKS = ["recap.engagement.is_bookmarked", TASKS[1], "recap.engagement.is_shared", TASKS[0]]


def _model(**kwargs) -> MultiTaskRankingModel:
    torch.manual_seed(0)
    return MultiTaskRankingModel(INPUT_SHAPES, model_config(**kwargs)).eval()


def _labelled_batch(label_order, seed=0):
    """A batch whose label and weight columns follow `label_order`; column values depend on the task."""
    fields = batch(batch_size=16, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    per_task = {name: torch.randint(0, 2, (16,), generator=generator) for name in DATA_TASKS}
    weights = {name: torch.rand(16, generator=generator) + 0.5 for name in DATA_TASKS}
    fields["labels"] = torch.stack([per_task[name] for name in label_order], 1)
    fields["weights"] = torch.stack([weights[name] for name in label_order], 1)
    return fields, per_task, weights


def test_task_column_indices():
    assert task_column_indices(TASKS, DATA_TASKS) == [3, 1]
    with pytest.raises(
        ValueError, match=r"model task\(s\) \['recap.engagement.is_replied'\] have no label column"
    ):
        task_column_indices(TASKS, DATA_TASKS[3:])


def test_labels_reach_towers_by_name_whatever_the_data_order():
    model = _model()
    model_and_loss = RecapModelAndLoss(model, build_recap_loss(model.config), label_names=DATA_TASKS)
    fields, per_task, weights = _labelled_batch(DATA_TASKS)
    loss, outputs = model_and_loss(fields)

    shuffled_order = [DATA_TASKS[i] for i in (3, 0, 2, 1)]
    shuffled, _, _ = _labelled_batch(shuffled_order)
    shuffled_loss, shuffled_outputs = RecapModelAndLoss(
        model, build_recap_loss(model.config), label_names=shuffled_order
    )(shuffled)
    torch.testing.assert_close(loss, shuffled_loss)

    expected_labels = torch.stack([per_task[TASKS[0]], per_task[TASKS[1]]], 1).float()
    torch.testing.assert_close(outputs["labels"], expected_labels)
    torch.testing.assert_close(shuffled_outputs["labels"], expected_labels)
    torch.testing.assert_close(outputs["weights"][:, 1], weights[TASKS[1]])
    logits = outputs["logits"]
    per_task_loss = [
        F.binary_cross_entropy_with_logits(logits[:, i], expected_labels[:, i], weight=weights[task])
        for i, task in enumerate(TASKS)
    ]
    torch.testing.assert_close(outputs[f"loss/{TASKS[1]}"], per_task_loss[1])
    torch.testing.assert_close(loss, torch.stack(per_task_loss).mean())
    assert outputs["task_names"] == list(TASKS)
    assert outputs["stratifiers"] == {}


def test_batch_label_names_win_and_unnamed_labels_must_match_the_towers():
    model = _model()
    model_and_loss = RecapModelAndLoss(model, build_recap_loss(model.config), label_names=["wrong"] * 4)
    fields, per_task, _ = _labelled_batch(DATA_TASKS)
    _, outputs = model_and_loss(dict(fields, label_names=DATA_TASKS))
    assert outputs["labels"][:, 0].tolist() == per_task[TASKS[0]].float().tolist()

    unnamed = RecapModelAndLoss(model, build_recap_loss(model.config))
    with pytest.raises(ValueError, match="labels has 4 columns for 2 model tasks; give label_names"):
        unnamed(fields)
    two_columns = dict(fields, labels=fields["labels"][:, [3, 1]], weights=None)
    _, outputs = unnamed(two_columns)
    assert torch.equal(outputs["weights"], torch.ones(16, 2))


def test_stratifiers_are_discrete_columns():
    model = _model()
    stratifiers = [StratifierConfig(name="country", index=2, value=1)]
    model_and_loss = RecapModelAndLoss(
        model, build_recap_loss(model.config), stratifiers, label_names=DATA_TASKS
    )
    fields, _, _ = _labelled_batch(DATA_TASKS)
    _, outputs = model_and_loss(fields)
    assert torch.equal(outputs["stratifiers"]["country"], fields["discrete_features"][:, 2])


def _constant_lr(value: float) -> dict:
    return {"constant": value}


def test_a_tiny_model_learns_a_synthetic_problem():
    torch.manual_seed(0)
    backbone = {
        "mask_net_config": {
            "mask_blocks": [{"output_size": 8, "aggregation_size": 8, "input_layer_norm": False}] * 2,
            "use_parallel": True,
        }
    }
    config = model_config(backbone=backbone, multi_task_type="share_all")
    model = MultiTaskRankingModel(INPUT_SHAPES, config)
    model_and_loss = RecapModelAndLoss(model, build_recap_loss(config), label_names=list(TASKS))
    optimizer_config = RecapOptimizerConfig.model_validate(
        {
            "adam": {},
            "multi_task_learning_rates": {
                "tower_learning_rates": {task: _constant_lr(0.01) for task in TASKS},
                "backbone_learning_rate": {
                    "linear_ramp_to_constant": {"learning_rate": 0.01, "num_ramp_steps": 5}
                },
            },
        }
    )
    optimizer, scheduler = build_optimizer(model_and_loss, optimizer_config)

    def learnable_batch(seed: int) -> dict:
        fields = batch(batch_size=64, seed=seed)
        favorited = fields["continuous_features"][:, 0] > 0
        replied = fields["binary_features"][:, 1] == 1
        fields["labels"] = torch.stack([favorited, replied], 1).long()
        return fields

    losses = []
    for step in range(50):
        loss, _ = model_and_loss(learnable_batch(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


@pytest.mark.parametrize("correction", ["calibration", "loss_weights"])
def test_down_sampling_is_undone_exactly_once(correction):
    """Train on data whose negatives were kept with probability 0.1, with the sampling-rate weights
    the data pipeline adds. calibration: the raw probabilities learn the sample's positive rate and the
    calibrated ones the true rate; loss_weights: the raw probabilities learn the true rate and
    calibration changes nothing. Either way calibrated = true rate (the original's both-at-once
    under-predicted)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    true_rate = {0: 0.02, 1: 0.2}  # by the value of binary feature 0
    neg_rate = 0.1
    rates = data_config(
        TASKS, recap__engagement__is_favorited=(1.0, neg_rate), recap__engagement__is_replied=(1.0, neg_rate)
    )
    config = model_config(tower={"mlp_config": {"layer_sizes": [4, 1]}}, downsampling_correction=correction)
    model = MultiTaskRankingModel(INPUT_SHAPES, config, rates)
    model_and_loss = RecapModelAndLoss(model, build_recap_loss(config))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)

    def down_sampled_batch(size: int) -> dict:
        fields = batch(batch_size=size * 4, seed=int(torch.randint(0, 10**6, (1,), generator=generator)))
        group = fields["binary_features"][:, 0]
        p = torch.where(group == 1, true_rate[1], true_rate[0])
        labels = (torch.rand(p.shape, generator=generator) < p).long()
        keep = (labels == 1) | (torch.rand(p.shape, generator=generator) < neg_rate)
        fields = {name: value[keep] for name, value in fields.items()}
        fields["labels"] = labels[keep].unsqueeze(1).repeat(1, 2)
        fields["weights"] = fields["labels"] / 1.0 + (1 - fields["labels"]) / neg_rate  # as the pipeline
        return fields

    for _ in range(150):
        loss, _ = model_and_loss(down_sampled_batch(512))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    fields = batch(batch_size=4000, seed=123)
    with torch.no_grad():
        outputs = model(**{k: v for k, v in fields.items() if k != "labels"})
    group = fields["binary_features"][:, 0] == 1
    for value, mask in ((0, ~group), (1, group)):
        sample_rate = true_rate[value] / (true_rate[value] + (1 - true_rate[value]) * neg_rate)
        raw = outputs["probabilities"][mask].mean().item()
        calibrated = outputs["calibrated_probabilities"][mask].mean().item()
        if correction == "calibration":
            assert raw == pytest.approx(sample_rate, abs=0.05)
        else:
            assert raw == pytest.approx(true_rate[value], rel=0.3)
            torch.testing.assert_close(outputs["calibrated_probabilities"], outputs["probabilities"])
        assert calibrated == pytest.approx(true_rate[value], rel=0.3)


def test_loss_weights_drop_the_calibrated_rates_and_keep_the_rest():
    """Calibration mode removes the rates' inverse weights (which the data put in `weights` for the
    metrics) from the loss; other weight factors (downsample_negatives) and the weights output stay."""
    rates = data_config(TASKS, recap__engagement__is_favorited=(0.5, 0.1))
    fields = batch(batch_size=6, seed=3)
    fields["labels"] = torch.tensor([[1, 0], [0, 1], [0, 0], [1, 1], [0, 0], [1, 0]])
    extra = torch.tensor([1.0, 2.0, 3.0, 1.0, 0.5, 0.0])[:, None]  # e.g. downsample_negatives, padding
    sampling = torch.stack([fields["labels"][:, 0] / 0.5 + (1 - fields["labels"][:, 0]) / 0.1,
                            torch.ones(6)], 1)
    fields["weights"] = extra * sampling
    expected_loss_weights = {"calibration": extra.expand(6, 2), "loss_weights": fields["weights"]}
    for correction, loss_weights in expected_loss_weights.items():
        torch.manual_seed(0)
        config = model_config(downsampling_correction=correction)
        seen = {}

        def loss_fn(logits, labels, weights):
            seen["weights"] = weights
            return {"loss": logits.sum() * 0}

        model = MultiTaskRankingModel(INPUT_SHAPES, config, rates)
        _, outputs = RecapModelAndLoss(model, loss_fn)(fields)
        torch.testing.assert_close(seen["weights"], loss_weights.float())
        torch.testing.assert_close(outputs["weights"], fields["weights"].float())
        expected_ratio = 0.2 if correction == "calibration" else 1.0
        assert model.calibrators[TASKS[0].replace(".", "__")].ratio.item() == pytest.approx(expected_ratio)


def test_recap_batch_label_names_and_absent_embeddings():
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from tml.projects.home.recap.data.batch import RecapBatch

    fields, per_task, _ = _labelled_batch(DATA_TASKS)
    recap_batch = RecapBatch(
        continuous_features=fields["continuous_features"],
        binary_features=fields["binary_features"],
        discrete_features=fields["discrete_features"],
        sparse_features=KeyedJaggedTensor.empty(),
        labels=fields["labels"],
        user_embedding=fields["user_embedding"],
        label_names=tuple(DATA_TASKS),
    )
    model = _model()
    _, outputs = RecapModelAndLoss(model, build_recap_loss(model.config))(recap_batch)
    assert outputs["labels"][:, 1].tolist() == per_task[TASKS[1]].float().tolist()
    # The batch holds an empty placeholder for an embedding the data lacks; the model needs it.
    recap_batch.user_embedding = torch.empty([0, 0])
    with pytest.raises(ValueError, match="the batch has no user_embedding"):
        RecapModelAndLoss(model, build_recap_loss(model.config))(recap_batch)
