import glob
import os

import pytest
import torch
import torchmetrics

from tml.common.checkpointing import get_checkpoints, step_from_checkpoint
from tml.core import custom_training_loop as loop
from tml.core.metrics import AUROCWithMWU
from tml.core.metrics.mixins import MetricMixin

from loop_model import StreamDataset, build_trainable, make_batch


class CountingDataset(StreamDataset):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served = 0

    def __iter__(self):
        for batch in super().__iter__():
            self.served += 1
            yield batch


class LoopAUROC(MetricMixin, AUROCWithMWU):
    def transform(self, outputs):
        return {"predictions": outputs["probabilities"][:, 0], "target": outputs["labels"][:, 0]}


def auroc_collection(_name: str = "") -> torchmetrics.MetricCollection:
    return torchmetrics.MetricCollection({"auroc": LoopAUROC()})


def _train(save_dir, steps, dataset, **kwargs):
    model, optimizer = build_trainable()
    defaults = dict(logging_interval=5, checkpoint_frequency=10, worker_batch_size=32)
    defaults.update(kwargs)
    result = loop.train(model, optimizer, torch.device("cpu"), str(save_dir), train_steps=steps, dataset=dataset, **defaults)
    return model, optimizer, result


def test_train_runs_exactly_the_steps_and_learns(process_group, tmp_path):
    dataset = CountingDataset(batch_size=32)
    model, _, result = _train(tmp_path, 60, dataset)
    assert result.steps_run == 60 and result.final_step == 60
    assert dataset.served == 61  # one process on CPU: TrainPipelineBase reads one batch ahead
    assert [step_from_checkpoint(c) for c in get_checkpoints(str(tmp_path))] == [10, 20, 30, 40, 50, 60]
    held_out = [make_batch(10_000 + i, 256) for i in range(2)]
    model.eval()
    with torch.no_grad():
        final = sum(model(b)[0].item() for b in held_out) / 2
    assert result.last_loss is not None and final < 0.6, final  # chance level is ~0.69


@pytest.mark.parametrize("async_checkpointing", [False, True])
def test_resume_continues_after_the_last_checkpoint_and_skips_when_done(process_group, tmp_path, async_checkpointing):
    _train(tmp_path, 20, StreamDataset(batch_size=32), checkpoint_frequency=10, async_checkpointing=async_checkpointing)
    assert [step_from_checkpoint(c) for c in get_checkpoints(str(tmp_path))] == [10, 20]  # all published
    dataset = CountingDataset(batch_size=32)
    _, _, result = _train(tmp_path, 30, dataset, checkpoint_frequency=10, async_checkpointing=async_checkpointing)
    assert result.steps_run == 10 and result.final_step == 30
    assert dataset.served == 20 + 10 + 1  # 20 skipped, 10 trained, 1 read ahead
    _, _, again = _train(tmp_path, 30, StreamDataset(batch_size=32))
    assert again.steps_run == 0 and again.final_step == 30


def test_async_checkpoints_hold_the_same_state_as_synchronous_ones(process_group, tmp_path):
    from tml.common.checkpointing import restore

    runs = {}
    for mode in (False, True):
        torch.manual_seed(0)
        model, _, _ = _train(tmp_path / str(mode), 30, StreamDataset(batch_size=32), async_checkpointing=mode)
        restored, _ = build_trainable()
        restore(str(tmp_path / str(mode) / "20"), {"model": restored})
        runs[mode] = (model.state_dict(), restored.state_dict())
    def local(value):  # sharded tables: this rank's shard
        return value.local_shards()[0].tensor if hasattr(value, "local_shards") else value

    for name, value in runs[False][0].items():
        torch.testing.assert_close(local(runs[True][0][name]), local(value))  # training is not disturbed
        torch.testing.assert_close(local(runs[True][1][name]), local(runs[False][1][name]))  # nor step 20's save
    assert not torch.equal(local(runs[True][1]["ebc.embedding_bags.t_user.weight"]),
                           local(runs[True][0]["ebc.embedding_bags.t_user.weight"]))


def test_max_to_keep_and_final_checkpoint_off_the_grid(process_group, tmp_path):
    _train(tmp_path, 25, StreamDataset(batch_size=16), checkpoint_frequency=10, checkpoint_max_to_keep=2)
    assert [step_from_checkpoint(c) for c in get_checkpoints(str(tmp_path))] == [20, 25]


def test_tensorboard_has_loss_lr_throughput_and_eval(process_group, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, optimizer = build_trainable()
    loop.train_and_evaluate(
        model, optimizer, torch.device("cpu"), str(tmp_path), logging_interval=5, train_steps=10,
        checkpoint_frequency=5, dataset=StreamDataset(batch_size=16), worker_batch_size=16,
        eval_datasets={"heldout": StreamDataset(batch_size=64, num_batches=3, seed=7)},
        eval_metrics_factory=auroc_collection, num_eval_steps=-1,
    )
    train_events = EventAccumulator(os.path.join(tmp_path, "tensorboard", "train")).Reload()
    tags = set(train_events.Tags()["scalars"])
    assert {"loss", "lr/dense_opt", "lr/fused_opt", "worker_examples_per_s"} <= tags
    assert [e.step for e in train_events.Scalars("loss")] == [5, 10]
    # One rank: the global rate is this worker's (the original scaled it by unused data workers).
    worker = [e.value for e in train_events.Scalars("worker_examples_per_s")]
    assert [e.value for e in train_events.Scalars("global_examples_per_s")] == worker
    eval_events = EventAccumulator(os.path.join(tmp_path, "tensorboard", "eval_heldout")).Reload()
    assert [e.step for e in eval_events.Scalars("auroc")] == [5, 10]


def test_train_takes_no_parameter_it_does_not_use():
    import inspect

    unused = {"num_workers", "logger_initializer", "metrics", "parameters_to_log"}
    assert not unused & set(inspect.signature(loop.train).parameters)


def test_evaluate_whole_dataset_matches_a_hand_computation(process_group):
    model, _ = build_trainable()
    batches = [make_batch(500 + i, 40) for i in range(3)]
    results = loop.evaluate(model, batches, auroc_collection(), torch.device("cpu"), num_eval_steps=-1)
    model.eval()
    with torch.no_grad():
        outputs = [model(b)[1] for b in batches]
    expected = AUROCWithMWU()
    for output in outputs:
        expected.update(output["probabilities"][:, 0], output["labels"][:, 0])
    assert results["auroc"] == pytest.approx(float(expected.compute()), abs=1e-9)
    assert loop.evaluate(model, batches, auroc_collection(), torch.device("cpu"), num_eval_steps=1)["auroc"] != pytest.approx(
        results["auroc"]
    )


def test_warm_start_loads_weights_but_starts_at_step_zero(process_group, tmp_path):
    model, _, _ = _train(tmp_path / "first", 10, StreamDataset(batch_size=16), checkpoint_frequency=10)
    reference = {k: v.clone() for k, v in model.state_dict().items() if "mlp" in k}
    warm_model, warm_optimizer = build_trainable(seed=123)
    result = loop.train(
        warm_model, warm_optimizer, torch.device("cpu"), str(tmp_path / "second"), logging_interval=5,
        train_steps=0 + 1, checkpoint_frequency=10, dataset=StreamDataset(batch_size=16), worker_batch_size=16,
        initial_checkpoint_dir=str(tmp_path / "first" / "10"),
    )
    assert result.steps_run == 1 and result.final_step == 1
    moved = {k: (warm_model.state_dict()[k] - v).abs().max().item() for k, v in reference.items()}
    assert all(delta < 0.05 for delta in moved.values()), moved  # one small step from the warm weights


def test_bf16_autocast_trains(process_group, tmp_path):
    _, _, result = _train(tmp_path, 20, StreamDataset(batch_size=32), enable_amp=True)
    assert result.final_step == 20 and result.last_loss is not None and torch.isfinite(torch.tensor(result.last_loss))


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    """k micro-batches of size b update dense weights like one batch of size k*b."""

    class Dense(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, batch):
            logits = self.linear(batch.dense).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels.float())
            return loss, {"logits": logits.detach()}

    full = [make_batch(i, 32) for i in range(4)]
    halves = []
    for batch in full:
        for part in (slice(0, 16), slice(16, 32)):
            halves.append(type(batch)(dense=batch.dense[part], sparse=None, labels=batch.labels[part]))

    def run(batches, accumulation, directory):
        model = Dense()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loop.train(model, optimizer, torch.device("cpu"), str(directory), logging_interval=1, train_steps=4,
                   checkpoint_frequency=100, dataset=batches, worker_batch_size=16, gradient_accumulation=accumulation)
        return model.linear.weight.detach().clone()

    torch.testing.assert_close(run(halves, 2, tmp_path / "a"), run(full, None, tmp_path / "b"))


def test_only_evaluate_follows_checkpoints_marks_them_and_stops_after_the_last(process_group, tmp_path):
    from tml.common.checkpointing import is_done_eval

    from loop_model import TinyRanker

    heldout = {"heldout": StreamDataset(batch_size=32, num_batches=2, seed=3)}
    evaluator = TinyRanker()  # a plain module: the evaluator needs no sharding

    def follow():
        return loop.only_evaluate(evaluator, torch.device("cpu"), str(tmp_path), num_train_steps=10,
                                  eval_datasets=heldout, eval_metrics_factory=auroc_collection, num_eval_steps=-1,
                                  eval_timeout_in_s=1, seconds_to_sleep=0.1)

    _train(tmp_path, 5, StreamDataset(batch_size=16), checkpoint_frequency=5)
    first = follow()  # sees step 5, then times out waiting for a newer one
    assert sorted(first) == [5]
    _train(tmp_path, 10, StreamDataset(batch_size=16), checkpoint_frequency=5)
    second = follow()  # the newest checkpoint is the last step: evaluated, then it stops
    assert sorted(second) == [10] and second[10]["heldout"]["auroc"] != first[5]["heldout"]["auroc"]
    assert all(is_done_eval(c, "heldout") for c in get_checkpoints(str(tmp_path)))
    assert follow() == {}  # already evaluated: nothing is run again


def test_rerun_of_a_finished_run_says_so_and_evaluates_its_last_checkpoint(process_group, tmp_path, capsys):
    def run(seed_of_fresh_weights: int):
        torch.manual_seed(seed_of_fresh_weights)
        model, optimizer = build_trainable()
        return loop.train_and_evaluate(
            model, optimizer, torch.device("cpu"), str(tmp_path), logging_interval=5, train_steps=10,
            checkpoint_frequency=10, dataset=StreamDataset(batch_size=16), worker_batch_size=16,
            eval_datasets={"heldout": StreamDataset(batch_size=64, num_batches=3, seed=7)},
            eval_metrics_factory=auroc_collection, num_eval_steps=-1,
        )

    first = run(0)
    capsys.readouterr()
    again = run(1)  # other initial weights: the figures can only match if the checkpoint was restored
    output = capsys.readouterr().out
    assert again.steps_run == 0 and again.final_step == 10
    assert "this run is finished" in output and "has 10 of 10 steps" in output
    assert "eval heldout @ step 10: auroc=" in output
    assert again.eval_results["heldout"]["auroc"] == pytest.approx(first.eval_results["heldout"]["auroc"], abs=1e-6)
