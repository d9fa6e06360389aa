"""The dense groups' fused Adam is the same optimizer as torch's default loop: same parameters after
training a small Heavy Ranker, same AUROC; checkpoints carry over between the two."""
from __future__ import annotations

import torch
from recap_model_builders import ARCHITECTURE_BACKBONES, INPUT_SHAPES, TASKS, model_config
from torchmetrics.classification import BinaryAUROC

from tml.core.optimizers.adam_kernel import adam_kernel_options
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel
from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss, build_recap_loss
from tml.projects.home.recap.optimizer.config import RecapOptimizerConfig
from tml.projects.home.recap.optimizer.optimizer import build_optimizer

STEPS = 30


def optimizer_config() -> RecapOptimizerConfig:
    ramp = {"linear_ramp_to_constant": {"learning_rate": 0.02, "num_ramp_steps": 10}}
    return RecapOptimizerConfig.model_validate(
        {
            "adam": {"beta_1": 0.95, "beta_2": 0.999, "epsilon": 1e-7},
            "multi_task_learning_rates": {
                "tower_learning_rates": {TASKS[0]: ramp, TASKS[1]: {"constant": 0.01}},
                "backbone_learning_rate": ramp,
            },
        }
    )


def small_model() -> RecapModelAndLoss:
    torch.manual_seed(0)
    config = model_config(
        backbone=ARCHITECTURE_BACKBONES["mask_net_parallel"],
        multi_task_type="share_all",
        featurization_config={"double_norm_log_config": {"batch_norm_config": {}, "layer_norm_config": {}}},
    )
    return RecapModelAndLoss(MultiTaskRankingModel(INPUT_SHAPES, config), build_recap_loss(config))


def learnable_batch(seed: int, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Labels follow the first two continuous features, so a trained model has an AUROC well above 0.5."""
    generator = torch.Generator().manual_seed(seed)
    continuous = torch.randn(batch_size, INPUT_SHAPES["continuous"][1], generator=generator)
    binary = torch.randint(0, 2, (batch_size, INPUT_SHAPES["binary"][1]), generator=generator)
    noise = torch.rand(batch_size, 2, generator=generator)
    labels = torch.stack(
        [continuous[:, 0] + 0.5 * noise[:, 0] > 0.25, continuous[:, 1] - 0.5 * noise[:, 1] < -0.25], dim=1
    ).long()
    return {
        "continuous_features": continuous * 10,
        "binary_features": binary,
        "discrete_features": torch.zeros(batch_size, INPUT_SHAPES["discrete"][1], dtype=torch.long),
        "user_embedding": torch.randn(batch_size, INPUT_SHAPES["user_embedding"][1], generator=generator),
        "labels": labels,
    }


def train(fused_adam: bool) -> tuple[RecapModelAndLoss, torch.optim.Optimizer]:
    model = small_model()
    optimizer, scheduler = build_optimizer(model, optimizer_config(), fused_adam=fused_adam)
    torch.manual_seed(1)  # the towers' dropout draws the same masks in both runs
    for step in range(STEPS):
        loss, _ = model(learnable_batch(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer


def auroc(model: RecapModelAndLoss, task: int) -> float:
    model.eval()
    metric = BinaryAUROC()
    with torch.no_grad():
        for seed in range(1000, 1004):
            _, outputs = model(learnable_batch(seed))
            metric.update(outputs["probabilities"][:, task], outputs["labels"][:, task].long())
    return float(metric.compute())


def _adams(optimizer) -> list[torch.optim.Adam]:
    return [keyed._optimizer for _, keyed in optimizer.optimizers]


def test_dense_groups_use_the_fused_kernel_unless_asked_not_to():
    fused, _ = build_optimizer(small_model(), optimizer_config())
    plain, _ = build_optimizer(small_model(), optimizer_config(), fused_adam=False)
    assert len(_adams(fused)) == 3 and all(adam.defaults["fused"] for adam in _adams(fused))
    assert not any(adam.defaults["fused"] or adam.defaults["foreach"] for adam in _adams(plain))


def test_kernel_choice_by_parameter_kind():
    assert adam_kernel_options([torch.zeros(3, requires_grad=True)]) == {"fused": True}
    assert adam_kernel_options([torch.zeros(3, dtype=torch.long)]) == {}
    assert adam_kernel_options([]) == {}


def test_fused_and_plain_adam_train_to_the_same_parameters_and_auroc():
    fused_model, fused_optimizer = train(fused_adam=True)
    plain_model, plain_optimizer = train(fused_adam=False)
    start = small_model().state_dict()
    fused_state, plain_state = fused_model.state_dict(), plain_model.state_dict()
    moved = max((fused_state[name] - start[name]).abs().max().item() for name in start if start[name].is_floating_point())
    assert moved > 0.05  # training really moved the weights
    for name, value in plain_state.items():
        torch.testing.assert_close(fused_state[name], value, atol=1e-6, rtol=0, msg=name)
    for task in range(len(TASKS)):
        fused_auroc, plain_auroc = auroc(fused_model, task), auroc(plain_model, task)
        assert fused_auroc > 0.7
        assert abs(fused_auroc - plain_auroc) < 1e-4
    # Same state layout: a checkpoint of one loads into the other.
    for fused_adam, plain_adam in zip(_adams(fused_optimizer), _adams(plain_optimizer)):
        plain_state_dict = plain_adam.state_dict()
        fused_adam.load_state_dict(plain_state_dict)
        assert fused_adam.state_dict()["state"].keys() == plain_state_dict["state"].keys()
