"""CheckpointManager: naming, pruning, crash safety, discovery and evaluator markers (1 process)."""
import os
import uuid

import fsspec
import pytest
import torch

from tml.common.checkpointing import (
    CheckpointManager,
    TrainState,
    checkpoints_iterator,
    get_checkpoint,
    get_checkpoints,
    is_done_eval,
    mark_done_eval,
    step_from_checkpoint,
    wait_for_evaluators,
)
from tml.common.checkpointing import manager as manager_module



def _state(value: float = 1.0):
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(value)
    return {"model": model, "train_state": TrainState(step=int(value))}


def test_save_names_the_directory_by_step_and_marks_it_complete(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    path = manager.save(3, _state(3.0))
    assert path == f"{tmp_path}/3"
    assert sorted(os.listdir(path))[:2] == [".complete", ".metadata"]
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))
    assert manager.latest() == path and step_from_checkpoint(path) == 3


def test_checkpoints_are_sorted_numerically_and_pruned_to_max_to_keep(tmp_path):
    manager = CheckpointManager(str(tmp_path), max_to_keep=2)
    for step in (2, 9, 10):
        manager.save(step, _state(float(step)))
    assert get_checkpoints(str(tmp_path)) == [f"{tmp_path}/9", f"{tmp_path}/10"]
    assert sorted(os.listdir(tmp_path)) == ["10", "9"]


def test_pruning_never_touches_incomplete_directories(tmp_path, warnings_seen):
    (tmp_path / ".tmp-7").mkdir()  # another save in progress, or an interrupted one
    (tmp_path / "1").mkdir()  # no completion marker
    manager = CheckpointManager(str(tmp_path), max_to_keep=1)
    manager.save(5, _state())
    manager.save(6, _state())
    assert sorted(os.listdir(tmp_path)) == [".tmp-7", "1", "6"]
    assert get_checkpoints(str(tmp_path)) == [f"{tmp_path}/6"]
    assert f"ignoring {tmp_path}/.tmp-7: a checkpoint save in progress or interrupted (not deleted)" in warnings_seen
    assert f"ignoring {tmp_path}/1: it has no .complete marker, so it is incomplete (not deleted)" in warnings_seen


def test_a_marked_directory_without_dcp_metadata_is_skipped(tmp_path, warnings_seen):
    manager = CheckpointManager(str(tmp_path))
    manager.save(1, _state())
    manager.save(2, _state())
    (tmp_path / "2" / ".metadata").unlink()
    assert manager.latest() == f"{tmp_path}/1"
    assert f"ignoring {tmp_path}/2: it is marked complete but has no .metadata file (not deleted)" in warnings_seen
    assert (tmp_path / "2").exists()


def test_a_save_that_crashes_leaves_the_previous_checkpoint_as_latest(tmp_path, monkeypatch, warnings_seen):
    manager = CheckpointManager(str(tmp_path))
    manager.save(1, _state(1.0))

    def crash_midway(path, state, no_dist=False):
        os.makedirs(path)
        (open(os.path.join(path, "__0_0.distcp"), "wb")).write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(manager_module, "save_state", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        manager.save(2, _state(2.0))
    assert manager.latest() == f"{tmp_path}/1"
    assert (tmp_path / ".tmp-2" / "__0_0.distcp").exists()  # left for inspection, not deleted
    monkeypatch.undo()
    # Saving the same step again starts from a clean temporary directory.
    manager.save(2, _state(2.0))
    assert manager.latest() == f"{tmp_path}/2"
    assert (tmp_path / "2" / "__0_0.distcp").read_bytes() != b"partial"
    restored = _state(0.0)
    manager.restore(manager.latest(), restored)
    assert restored["model"].weight.tolist() == [[2.0, 2.0]] and restored["train_state"].step == 2


def test_saving_an_existing_step_replaces_it(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    manager.save(4, _state(1.0))
    manager.save(4, _state(5.0))
    restored = _state(0.0)
    manager.restore(f"{tmp_path}/4", restored)
    assert restored["model"].weight.tolist() == [[5.0, 5.0]]


def test_get_checkpoint_latest_exact_and_missing(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    for step in (1, 3):
        manager.save(step, _state())
    assert get_checkpoint(str(tmp_path)) == f"{tmp_path}/3"
    assert get_checkpoint(str(tmp_path), global_step=1) == f"{tmp_path}/1"
    assert get_checkpoint(str(tmp_path), global_step=2, missing_ok=True) is None
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint of step 2 in .*; complete ones: \[1, 3\]"):
        get_checkpoint(str(tmp_path), global_step=2)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint in"):
        get_checkpoint(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="is not a checkpoint directory"):
        step_from_checkpoint(f"{tmp_path}/.tmp-3")


def test_max_to_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep must be at least 1"):
        CheckpointManager(str(tmp_path), max_to_keep=0)


def test_checkpoints_iterator_yields_each_newer_checkpoint_then_times_out(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    manager.save(1, _state())
    iterator = checkpoints_iterator(str(tmp_path), seconds_to_sleep=0.01, timeout=0.2)
    assert next(iterator) == f"{tmp_path}/1"
    manager.save(2, _state())
    manager.save(3, _state())
    assert next(iterator) == f"{tmp_path}/3"  # the newest; 2 is skipped
    with pytest.raises(StopIteration):
        next(iterator)


def test_evaluator_markers(tmp_path):
    checkpoint = CheckpointManager(str(tmp_path)).save(5, _state())
    assert not is_done_eval(checkpoint, "validation")
    mark_done_eval(checkpoint, "validation")
    assert is_done_eval(checkpoint, "validation")
    assert (tmp_path / "5" / "evaled_by" / "validation_DONE").exists()
    assert not wait_for_evaluators(str(tmp_path), ["validation", "test"], 5, timeout=0.05, seconds_to_sleep=0.01)
    mark_done_eval(checkpoint, "test")
    assert wait_for_evaluators(str(tmp_path), ["validation", "test"], 5, timeout=0.05, seconds_to_sleep=0.01)
    # Markers do not make a checkpoint's directory look incomplete.
    assert get_checkpoints(str(tmp_path)) == [checkpoint]


def test_fsspec_memory_store():
    save_dir = f"memory://tml-test-{uuid.uuid4().hex}/run"
    manager = CheckpointManager(save_dir, max_to_keep=1)
    manager.save(1, _state(1.0))
    path = manager.save(2, _state(2.0))
    assert path == f"{save_dir}/2" and manager.checkpoints() == [path]
    restored = _state(0.0)
    manager.restore(path, restored)
    assert restored["model"].weight.tolist() == [[2.0, 2.0]] and restored["train_state"].step == 2
    fs = fsspec.filesystem("memory")
    fs.rm(save_dir.replace("memory://", ""), recursive=True)


def test_file_url(tmp_path):
    manager = CheckpointManager(f"file://{tmp_path}")
    path = manager.save(7, _state(7.0))
    assert path == f"file://{tmp_path}/7" and (tmp_path / "7" / ".complete").exists()
    restored = _state(0.0)
    manager.restore(manager.latest(), restored)
    assert restored["model"].weight.tolist() == [[7.0, 7.0]]


def test_async_save_publishes_the_state_as_it_was_when_saved(tmp_path):
    manager = CheckpointManager(str(tmp_path), async_save=True)
    state = _state(3.0)
    path = manager.save(3, state)
    assert path == f"{tmp_path}/3"
    assert manager.latest() is None  # written in the background, published by wait()
    with torch.no_grad():
        state["model"].weight.fill_(-1.0)  # training goes on meanwhile
    state["train_state"].step = 4
    assert manager.wait() == path and manager.wait() is None
    assert manager.latest() == path and not (tmp_path / ".tmp-3").exists()
    restored = _state(0.0)
    manager.restore(path, restored)
    assert restored["model"].weight.tolist() == [[3.0, 3.0]] and restored["train_state"].step == 3


def test_the_next_async_save_publishes_the_previous_one_first(tmp_path):
    manager = CheckpointManager(str(tmp_path), async_save=True, max_to_keep=1)
    manager.save(1, _state(1.0))
    manager.save(2, _state(2.0))
    assert manager.latest() == f"{tmp_path}/1"  # 2 still in flight
    manager.wait()
    assert get_checkpoints(str(tmp_path)) == [f"{tmp_path}/2"]  # 1 pruned once 2 was published


def test_a_failed_async_write_publishes_nothing(tmp_path, monkeypatch):
    from concurrent.futures import Future

    manager = CheckpointManager(str(tmp_path), async_save=True)
    manager.save(1, _state(1.0))
    manager.wait()

    def failing_write(path, state, process_group=None):
        os.makedirs(path)
        written = Future()
        written.set_exception(OSError("disk full"))
        return written

    monkeypatch.setattr(manager_module, "save_state_async", failing_write)
    manager.save(2, _state(2.0))
    with pytest.raises(OSError, match="disk full"):
        manager.wait()
    assert manager.latest() == f"{tmp_path}/1" and (tmp_path / ".tmp-2").exists()
