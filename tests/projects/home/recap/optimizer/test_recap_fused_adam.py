"""The dense groups' fused Adam is the same optimizer as torch's default loop: the same updates from
the same gradients, the same AUROC after training a small Heavy Ranker; checkpoints carry over."""
from __future__ import annotations

import torch
from recap_learnable import auroc, held_out, learnable_batch, optimizer_config, small_model
from recap_model_builders import TASKS

from tml.core.optimizers.adam_kernel import adam_kernel_options
from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss
from tml.projects.home.recap.optimizer.optimizer import build_optimizer

# Trained end to end, the kernels' last-bit rounding differences feed back through the gradients
# and grow (1e-6 to 1e-4 after 60 steps, depending on threads); fed the same gradients they stay at
# 1e-7. So parameters are compared on the same gradients, and training by its AUROC.
STEPS = 60


def train(fused_adam: bool) -> tuple[RecapModelAndLoss, torch.optim.Optimizer]:
    model = small_model()
    optimizer, scheduler = build_optimizer(model, optimizer_config(), fused_adam=fused_adam)
    torch.manual_seed(1)  # the same dropout masks in both runs
    for step in range(STEPS):
        loss, _ = model(learnable_batch(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer


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


def test_fused_and_plain_adam_make_the_same_updates_from_the_same_gradients():
    fused_model, plain_model = small_model(), small_model()
    fused, fused_schedule = build_optimizer(fused_model, optimizer_config())
    plain, plain_schedule = build_optimizer(plain_model, optimizer_config(), fused_adam=False)
    generator = torch.Generator().manual_seed(5)
    for _ in range(100):  # through the ramps of the schedules and past them
        for fused_parameter, plain_parameter in zip(fused_model.parameters(), plain_model.parameters()):
            gradient = torch.randn(fused_parameter.shape, generator=generator) * 0.01
            fused_parameter.grad, plain_parameter.grad = gradient.clone(), gradient.clone()
        for optimizer, schedule in ((fused, fused_schedule), (plain, plain_schedule)):
            optimizer.step()
            schedule.step()
    start = dict(small_model().named_parameters())
    for name, parameter in fused_model.named_parameters():
        assert (parameter - start[name]).abs().max() > 0.01, name  # every group moved
    for (name, fused_parameter), plain_parameter in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(fused_parameter, plain_parameter, atol=1e-6, rtol=0, msg=name)


def test_fused_and_plain_adam_train_to_the_same_auroc():
    fused_model, fused_optimizer = train(fused_adam=True)
    plain_model, plain_optimizer = train(fused_adam=False)
    batches = held_out()
    for task in range(len(TASKS)):
        fused_auroc, plain_auroc = auroc(fused_model, batches, task), auroc(plain_model, batches, task)
        assert fused_auroc > 0.9  # both learned the labels' rule
        assert abs(fused_auroc - plain_auroc) < 1e-3
    # Same state layout: a checkpoint of one loads into the other.
    for fused_adam, plain_adam in zip(_adams(fused_optimizer), _adams(plain_optimizer)):
        plain_state_dict = plain_adam.state_dict()
        fused_adam.load_state_dict(plain_state_dict)
        assert fused_adam.state_dict()["state"].keys() == plain_state_dict["state"].keys()
