"""Fault injection: each numbered failure of issue 13, provoked on purpose, must end in a clear,
safe outcome (an error naming the step/field/file, nothing deleted or checkpointed that should not
be). Test names start with the failure's number (f1 ... f8).
"""
import math
import os

import numpy as np
import pydantic
import pytest
import torch

from tml.common.checkpointing import get_checkpoints, step_from_checkpoint
from tml.core import custom_training_loop as loop
from loop_model import LoopBatch, StreamDataset, build_trainable, make_batch


def _train(save_dir, steps, dataset, model_and_optimizer=None, **kwargs):
    model, optimizer = model_and_optimizer or build_trainable()
    settings = dict(logging_interval=5, checkpoint_frequency=5, worker_batch_size=32)
    settings.update(kwargs)
    result = loop.train(model, optimizer, torch.device("cpu"), str(save_dir), train_steps=steps, dataset=dataset, **settings)
    return model, optimizer, result


class PoisonedStream(StreamDataset):
    """The fixed stream with NaN in the dense input column of batch `bad_index` (and later ones
    when `every_after`)."""

    def __init__(self, bad_index, every_after=False, **kwargs):
        super().__init__(batch_size=32, **kwargs)
        self.bad_index, self.every_after = bad_index, every_after

    def __iter__(self):
        for index, batch in enumerate(super().__iter__()):
            if index == self.bad_index or (self.every_after and index > self.bad_index):
                batch = LoopBatch(dense=torch.full_like(batch.dense, math.nan), sparse=batch.sparse, labels=batch.labels)
            yield batch


def _local(value):
    if hasattr(value, "local_shards"):
        return torch.cat([shard.tensor for shard in value.local_shards()])
    return value


def _all_finite(checkpoint):
    """Whether every model tensor stored in `checkpoint` is finite."""
    from tml.common.checkpointing import load_model_weights

    model, _ = build_trainable()
    load_model_weights(model, checkpoint)
    return all(bool(torch.isfinite(_local(value)).all()) for value in model.state_dict().values())


# ------------------------------------------------------------------------------- 1. NaN is silent


def test_f1_nan_input_stops_the_run_naming_the_step_and_column(process_group, tmp_path):
    with pytest.raises(loop.TrainingDivergedError) as raised:
        _train(tmp_path, 20, PoisonedStream(bad_index=7))
    message = str(raised.value)
    assert "step 8" in message and "input 'dense'" in message, message
    assert "latest checkpoint" in message and str(tmp_path / "5") in message
    # Only the finite checkpoint of step 5 exists, and it is finite.
    assert [step_from_checkpoint(c) for c in get_checkpoints(str(tmp_path))] == [5]
    assert _all_finite(get_checkpoints(str(tmp_path))[0])


def test_f1_huge_learning_rate_is_named_as_the_cause(process_group, tmp_path):
    model_and_optimizer = build_trainable(dense_lr=1e30, embedding_lr=1e30)
    with pytest.raises(loop.TrainingDivergedError) as raised:
        _train(tmp_path, 20, StreamDataset(batch_size=32), model_and_optimizer=model_and_optimizer)
    message = str(raised.value)
    assert "learning rate" in message and "1e+30" in message, message
    assert all(_all_finite(c) for c in get_checkpoints(str(tmp_path)))


def test_f1_skipped_steps_leave_the_weights_untouched_up_to_the_allowance(process_group, tmp_path, warnings_seen):
    _, _, result = _train(tmp_path / "skip", 10, PoisonedStream(bad_index=3), max_skipped_nonfinite_steps=1)
    assert result.final_step == 10 and math.isfinite(result.last_loss)
    assert any("step 4: non-finite loss, step skipped (1 of 1 allowed)" in w for w in warnings_seen)
    assert all(_all_finite(c) for c in get_checkpoints(str(tmp_path / "skip")))
    with pytest.raises(loop.TrainingDivergedError, match="step 3"):
        _train(tmp_path / "stop", 10, PoisonedStream(bad_index=1, every_after=True), max_skipped_nonfinite_steps=1)


def test_f1_a_skipped_step_changes_no_parameter(process_group, tmp_path):
    from tml.core.finite_guard import FiniteLossGuard
    from tml.core.train_pipeline import TrainStepRunner

    model, optimizer = build_trainable()
    runner = TrainStepRunner(model, optimizer, torch.device("cpu"), loss_guard=FiniteLossGuard(max_skipped_steps=5))
    batches = iter(PoisonedStream(bad_index=1, every_after=True))
    runner.step(batches)  # a good step: Adam's state exists from here on
    before = {name: _local(value).clone() for name, value in model.state_dict().items()}
    runner.step(batches)
    runner.step(batches)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(_local(value), before[name], rtol=0, atol=0, msg=name)


def test_f1_nan_scores_rank_last_not_first():
    from tml.projects.twhin.data.reader import EdgeArrays
    from tml.projects.twhin.data.schema import GraphSchema
    from tml.projects.twhin.metrics import link_prediction_ranks
    from tml.projects.twhin.models.models import TwhinModel
    from twhin_helpers import model_config

    model = TwhinModel(model_config(operators=("dot", "dot"), tables={"user": 4, "tweet": 5}), device="cpu")
    schema = GraphSchema.from_model_config(model.config)
    tables = {"user": torch.full((4, 8), math.nan), "tweet": torch.full((5, 8), math.nan)}
    edges = EdgeArrays.from_lists(lhs=[0, 1], rel=[0, 0], rhs=[1, 2])
    ranks = link_prediction_ranks(model, edges, schema, tables=tables)
    assert ranks.tail.tolist() == [5.0, 5.0] and ranks.head.tolist() == [4.0, 4.0]  # 1 + all other candidates
    metrics = ranks.metrics((1,))
    assert metrics["hits@1"] == 0.0 and metrics["mrr"] < 0.3
    # One NaN candidate does not beat a finite true score.
    tables = {"user": torch.ones(4, 8), "tweet": torch.ones(5, 8)}
    tables["tweet"][0] = math.nan
    ranks = link_prediction_ranks(model, EdgeArrays.from_lists(lhs=[0], rel=[0], rhs=[1]), schema, tables=tables)
    assert ranks.tail.tolist() == [1 + 3 / 2]  # ties with the 3 other finite candidates, NaN below


def test_f1_negative_or_nan_edge_weights_are_refused_with_file_and_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tml.projects.twhin.data.reader import read_edges
    from tml.projects.twhin.data.schema import GraphSchema
    from twhin_helpers import model_config

    schema = GraphSchema.from_model_config(model_config())
    for bad in (math.nan, -1.0, math.inf):
        path = tmp_path / f"edges_{bad}.parquet"
        pq.write_table(pa.table({"lhs": [0, 1, 2], "rel": [0, 0, 0], "rhs": [0, 1, 2], "weight": [1.0, bad, 1.0]}), path)
        with pytest.raises(ValueError) as raised:
            read_edges(str(path), schema)
        assert str(path) in str(raised.value) and "'weight'" in str(raised.value) and "row 1" in str(raised.value)


@pytest.mark.parametrize("lr", [-0.1, -1e-30, math.inf, math.nan])
def test_f1_negative_or_non_finite_learning_rates_are_refused(lr):
    from tml.core.optimizers.config import LearningRate, OptimizerConfig

    with pytest.raises(pydantic.ValidationError):
        OptimizerConfig.model_validate({"adam": {"lr": lr}})
    for schedule in ({"constant": lr}, {"linear_ramp_to_constant": {"learning_rate": lr, "num_ramp_steps": 3}},
                     {"piecewise_constant": {"learning_rate_boundaries": [5], "learning_rate_values": [0.1, lr]}}):
        with pytest.raises(pydantic.ValidationError):
            LearningRate.model_validate(schedule)


def test_f1_an_optimizer_lr_of_zero_is_refused_but_a_schedule_may_freeze():
    from tml.core.optimizers.config import LearningRate, OptimizerConfig

    with pytest.raises(pydantic.ValidationError):
        OptimizerConfig.model_validate({"sgd": {"lr": 0.0}})
    LearningRate.model_validate({"constant": 0.0})  # a frozen tower
    LearningRate.model_validate({"piecewise_constant": {"learning_rate_boundaries": [5], "learning_rate_values": [0.0, 0.1]}})


def test_f1_embedding_dim_not_divisible_by_4_is_refused_at_load():
    from twhin_helpers import model_config

    with pytest.raises(pydantic.ValidationError, match="multiple of 4"):
        model_config(dim=6)


# ------------------------------------------------------------------- 4. untrusted checkpoints run code


class _RunsCodeWhenUnpickled:
    """What an attacker would put in a checkpoint: unpickling it creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_f4_train_state_holds_only_tensors(process_group, tmp_path):
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from tml.common.checkpointing import read_metadata

    _train(tmp_path, 5, StreamDataset(batch_size=32))
    entries = read_metadata(get_checkpoints(str(tmp_path))[0]).state_dict_metadata
    train_state = {key: value for key, value in entries.items() if key.startswith("train_state.")}
    assert train_state and all(isinstance(value, TensorStorageMetadata) for value in train_state.values()), train_state


def test_f4_a_crafted_train_state_is_never_unpickled(tmp_path):
    import pickle

    from tml.common.checkpointing import TrainState, restore, save_state

    marker = tmp_path / "code_ran"
    blob = pickle.dumps(_RunsCodeWhenUnpickled(marker))
    crafted = {"step": 3, "walltime": 0.0, "world_size": 1, "rng": {"rank0": blob}}
    save_state(str(tmp_path / "ckpt"), {"train_state": crafted})
    try:
        restore(str(tmp_path / "ckpt"), {"train_state": TrainState()})
    except Exception:  # noqa: BLE001 - refusing the checkpoint is fine; running its code is not
        pass
    assert not marker.exists()


# ------------------------------------------------------------ 6. resume is not bit-exact with dropout


class _LoaderStream(torch.utils.data.IterableDataset):
    def __init__(self):
        self.stream = StreamDataset(batch_size=32)

    def __iter__(self):
        return iter(self.stream)


def _params(model):
    return {name: _local(value).clone() for name, value in model.state_dict().items()}


def test_f6_resume_with_dropout_and_a_torch_dataloader_is_bit_exact(process_group, tmp_path):
    def loader():  # starting a DataLoader draws from torch's global generator
        return torch.utils.data.DataLoader(_LoaderStream(), batch_size=None)

    uninterrupted, _, _ = _train(tmp_path / "a", 10, loader())
    _train(tmp_path / "b", 5, loader())
    resumed, _, result = _train(tmp_path / "b", 10, loader())
    assert result.steps_run == 5
    expected, got = _params(uninterrupted), _params(resumed)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)


def test_f6_tensorboard_shows_each_step_once_after_a_resume(process_group, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tmp_path, 8, StreamDataset(batch_size=32), logging_interval=1, checkpoint_frequency=5)
    for path in get_checkpoints(str(tmp_path)):  # as if killed after step 8, before its checkpoint
        if step_from_checkpoint(path) == 8:
            import shutil

            shutil.rmtree(path)
    _train(tmp_path, 10, StreamDataset(batch_size=32), logging_interval=1, checkpoint_frequency=5)
    events = EventAccumulator(os.path.join(tmp_path, "tensorboard", "train")).Reload()
    assert [event.step for event in events.Scalars("loss")] == list(range(1, 11))


# --------------------------------------------------------- 2. --overwrite_save_dir deletes anything


def _tml_save_dir(path):
    from tml.common.checkpointing.save_dir import open_save_dir

    open_save_dir(str(path)).release()
    (path / "5").mkdir()
    (path / "5" / ".complete").write_text("{}")
    (path / "tensorboard").mkdir()
    return path


@pytest.mark.parametrize("where", ["/", "home", "checkout", "cwd_parent"])
def test_f2_overwrite_refuses_root_home_checkout_and_parents_of_cwd(tmp_path, monkeypatch, where):
    from tml.common.checkpointing.save_dir import SaveDirError, clear_save_dir

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(loop.__file__)))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "work").mkdir(parents=True)
    target = {"/": "/", "home": str(tmp_path / "home"), "checkout": checkout, "cwd_parent": str(tmp_path / "home")}[where]
    if where == "cwd_parent":
        monkeypatch.setenv("HOME", "/nonexistent-home")
        monkeypatch.chdir(tmp_path / "home" / "work")
    with pytest.raises(SaveDirError, match="refusing"):
        clear_save_dir(target)
    assert os.path.exists(target)


def test_f2_overwrite_refuses_a_directory_tml_did_not_make_listing_its_content(tmp_path):
    from tml.common.checkpointing.save_dir import SaveDirError, open_save_dir

    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    (foreign / "10").mkdir()
    with pytest.raises(SaveDirError, match="thesis.tex"):
        open_save_dir(str(foreign), overwrite=True)
    assert (foreign / "thesis.tex").exists() and (foreign / "10").exists()

    owned = _tml_save_dir(tmp_path / "model")
    (owned / "notes.txt").write_text("mine")  # a user's file inside a tml save_dir
    with pytest.raises(SaveDirError, match="notes.txt"):
        open_save_dir(str(owned), overwrite=True)
    assert (owned / "5").exists() and (owned / "notes.txt").exists()
    (owned / "notes.txt").unlink()
    open_save_dir(str(owned), overwrite=True).release()
    assert sorted(p.name for p in owned.iterdir()) == [".tml-save-dir"]


# ------------------------------------------------------------------ 3. two runs on one save_dir


def test_f3_a_second_run_on_a_locked_save_dir_is_refused(process_group, tmp_path):
    from tml.common.checkpointing.save_dir import SaveDirLockedError, open_save_dir

    first = open_save_dir(str(tmp_path))  # another run, alive (this very process)
    with pytest.raises(SaveDirLockedError, match="in use by another run") as raised:
        _train(tmp_path, 5, StreamDataset(batch_size=32))
    assert f"pid {os.getpid()}" in str(raised.value)
    assert get_checkpoints(str(tmp_path)) == []
    first.release()
    _train(tmp_path, 5, StreamDataset(batch_size=32))  # free again once released
    assert not (tmp_path / ".tml-lock").exists()


def test_f3_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, warnings_seen):
    import json
    import socket
    import subprocess
    import sys

    from tml.common.checkpointing.save_dir import open_save_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    open_save_dir(str(tmp_path)).release()
    (tmp_path / ".tml-lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started_at": 0}))
    lock = open_save_dir(str(tmp_path))
    assert any("taking over the lock" in warning for warning in warnings_seen)
    assert json.loads((tmp_path / ".tml-lock").read_text())["pid"] == os.getpid()
    lock.release()
    (tmp_path / ".tml-lock").write_text(json.dumps({"host": "another-host", "pid": 1, "started_at": 0}))
    from tml.common.checkpointing.save_dir import SaveDirLockedError

    with pytest.raises(SaveDirLockedError, match="another-host"):
        open_save_dir(str(tmp_path))


# ------------------------------------------------------------------ 8. processes abort at exit

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A prefetch thread busy inside torch operators when the main thread finishes: before the fix the
# interpreter killed it mid-operator at shutdown and the process aborted ("terminate called
# without an active exception", exit 134) every time.
_BUSY_PRODUCER_AT_EXIT = """
import time, torch
from tml.common.prefetch import BackgroundIterator

def busy():
    while True:
        a = torch.randn(128, 128)
        for _ in range(50):
            a = (a @ a) / 128
        yield a

batches = BackgroundIterator(busy(), depth=1000)
next(batches)
time.sleep(0.05)
print("finished")
"""


def _run_python(arguments, timeout_s, **kwargs):
    import subprocess
    import sys

    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *arguments], cwd=REPO_ROOT, env=environment, capture_output=True,
                          text=True, timeout=timeout_s, **kwargs)


def test_f8_a_prefetch_thread_inside_torch_at_exit_no_longer_aborts(tmp_path):
    script = tmp_path / "busy_producer.py"
    script.write_text(_BUSY_PRODUCER_AT_EXIT)
    for _ in range(3):
        done = _run_python([str(script)], timeout_s=60)
        assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-2000:]
        assert done.stdout.strip() == "finished"


def test_f8_no_os_exit_is_left_in_the_package():
    offenders = []
    for folder in ("common", "core", "projects", "bench", "tools", "ml_logging"):
        for root, _, files in os.walk(os.path.join(REPO_ROOT, folder)):
            for name in files:
                if name.endswith(".py") and "os._exit" in open(os.path.join(root, name)).read():
                    offenders.append(os.path.join(root, name))
    assert offenders == []


@pytest.mark.slow
def test_f8_the_twhin_bench_and_entry_point_exit_with_their_own_code(tmp_path):
    from tml.projects.twhin.data.generate_random_graph import write_random_graph

    bench = _run_python(["bench/twhin_train.py", "--repeats", "1", "--edges_per_repeat", "4000",
                         "--graph_dir", str(tmp_path / "bench_graph")], timeout_s=240)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert "RESULT twhin_train_vs_plain" in bench.stdout

    graph = tmp_path / "graph"
    write_random_graph(str(graph), {"user": 1000, "tweet": 500}, [("fav", "user", "tweet")], 600, seed=1)
    arguments = ["-m", "tml.projects.twhin.run", "--config_yaml_path", "projects/twhin/config/local.yaml",
                 "--save_dir", str(tmp_path / "model")]
    settings = {"train_data.data_root": f"{graph}/*.parquet", "validation_data": "null",
                "training.num_train_steps": 2, "training.checkpoint_every_n": 2, "model.relations": "[{name: fav, lhs: user, rhs: tweet, operator: translation}]"}
    for key, value in settings.items():
        arguments += ["--set", f"{key}={value}"]
    for _ in range(2):  # the second start finds the run done: exits 0 at once
        done = _run_python(arguments, timeout_s=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    missing = _run_python(["-m", "tml.projects.twhin.run", "--config_yaml_path", str(tmp_path / "nope.yaml")], timeout_s=60)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr and "Traceback" not in missing.stderr, missing.stderr


# ------------------------------------------------------------- 7. errors without the path


@pytest.mark.parametrize("content", [b"", b"PAR1\x15\x04\x15"], ids=["empty", "truncated"])
def test_f7_an_empty_or_truncated_twhin_edge_file_is_named(tmp_path, content):
    from tml.core.errors import DataError
    from tml.projects.twhin.data.reader import read_edges
    from tml.projects.twhin.data.schema import GraphSchema
    from twhin_helpers import model_config

    path = tmp_path / "edges.parquet"
    path.write_bytes(content)
    with pytest.raises(DataError) as raised:
        read_edges(str(path), GraphSchema.from_model_config(model_config()))
    message = str(raised.value)
    assert str(path) in message and "truncated" in message and len(message.splitlines()) <= 3, message


def test_f7_a_full_disk_during_a_save_names_the_directory(tmp_path, monkeypatch):
    import errno

    from torch.distributed.checkpoint.api import CheckpointException, _wrap_exception

    from tml.common.checkpointing import manager as manager_module
    from tml.common.checkpointing.manager import CheckpointManager, CheckpointWriteError

    def disk_full(path, state, no_dist=False):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as error:
            raise CheckpointException("save failed", {0: _wrap_exception(error)}) from None

    monkeypatch.setattr(manager_module, "save_state", disk_full)
    with pytest.raises(CheckpointWriteError) as raised:
        CheckpointManager(str(tmp_path)).save(7, {"model": torch.nn.Linear(2, 2)})
    message = str(raised.value)
    assert f"{tmp_path}/.tmp-7" in message and "disk is full" in message and len(message.splitlines()) == 2, message


_SAVE_UNDER_FILE_SIZE_LIMIT = """
import resource, sys, torch
from tml.common.checkpointing import CheckpointManager
from tml.core.errors import TmlError
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    CheckpointManager(sys.argv[1]).save(3, {"model": {"w": torch.zeros(1 << 20)}, "extra": {"n": 1}})
except TmlError as error:
    print(error)
"""


def test_f7_a_file_size_limit_during_a_save_names_the_directory_and_the_limit(tmp_path):
    script = tmp_path / "save.py"
    script.write_text(_SAVE_UNDER_FILE_SIZE_LIMIT)
    done = _run_python([str(script), str(tmp_path / "model")], timeout_s=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{tmp_path}/model/.tmp-3" in done.stdout and "ulimit -f" in done.stdout, done.stdout


def test_f7_dropout_outside_0_1_is_a_config_error():
    from tml.projects.home.recap.model.config import DropoutConfig

    for rate in (1.5, 1.0, -0.1):
        with pytest.raises(pydantic.ValidationError, match="rate"):
            DropoutConfig(rate=rate)


def test_f7_a_missing_config_file_or_a_save_dir_that_is_a_file_is_one_line(tmp_path, process_group):
    from tml.core.config import ConfigError, load_config_from_yaml
    from tml.core.errors import TmlError
    from tml.projects.twhin.config import TwhinConfig

    with pytest.raises(ConfigError, match=f"config file not found: {tmp_path}/missing.yaml"):
        load_config_from_yaml(TwhinConfig, str(tmp_path / "missing.yaml"))
    save_dir = tmp_path / "model"
    save_dir.write_text("not a directory")
    with pytest.raises(TmlError, match=f"save_dir {save_dir} is a file"):
        _train(save_dir, 5, StreamDataset(batch_size=32))


def test_f7_partial_checkpoints_are_removed_on_start_only_in_a_tml_save_dir(process_group, tmp_path, warnings_seen):
    _train(tmp_path / "owned", 5, StreamDataset(batch_size=32))
    partial = tmp_path / "owned" / "10"
    partial.mkdir()
    (partial / ".metadata").write_bytes(b"x")  # left by a kill during pruning or a save
    (tmp_path / "owned" / ".tmp-15").mkdir()
    _train(tmp_path / "owned", 6, StreamDataset(batch_size=32))
    assert not partial.exists() and not (tmp_path / "owned" / ".tmp-15").exists()
    assert any("removed" in warning and str(partial) in warning for warning in warnings_seen)

    foreign = tmp_path / "foreign"
    (foreign / "10").mkdir(parents=True)
    (foreign / "README").write_text("not tml's")
    _train(foreign, 5, StreamDataset(batch_size=32))
    assert (foreign / "10").exists()  # not tml's directory: nothing of it is deleted


# ------------------------------------------------------- 5. recap trains on wrong data without a word


def _recap_files(tmp_path, rows=12):
    from recap_data_fixtures import write_rows, write_schema

    schema = write_schema(str(tmp_path))
    path = write_rows(str(tmp_path / "data" / "part-0.parquet"), schema, np.arange(rows))
    return schema, path


def _replace_column(path, name, array):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index(name), name, array)
    pq.write_table(table, path)


def _read_all(config, **kwargs):
    from tml.projects.home.recap.data.dataset import RecapDataset

    dataset = RecapDataset(config, repeat=False, rank=0, world_size=1, **kwargs)
    return dataset, list(dataset)


@pytest.mark.parametrize("bad", ["seven", "minus_three", "null", "string"])
def test_f5_labels_other_than_0_1_are_refused_with_file_column_and_row(tmp_path, bad):
    import pyarrow as pa

    from recap_data_fixtures import make_config

    schema, path = _recap_files(tmp_path)
    values = {"seven": [0, 1, 7] + [0] * 9, "minus_three": [0, 1, -3] + [0] * 9,
              "null": [0, 1, None] + [0] * 9, "string": ["0", "1", "1"] + ["0"] * 9}[bad]
    _replace_column(path, "task.a", pa.array(values))
    with pytest.raises(Exception) as raised:
        _read_all(make_config(schema, inputs=str(tmp_path / "data" / "*.parquet")))
    message = str(raised.value)
    assert path in message and "'task.a'" in message, message
    if bad != "string":
        assert "row 2" in message, message


def test_f5_soft_labels_allow_probabilities(tmp_path):
    import json

    import recap_data_fixtures as fixtures
    from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
    from tml.projects.home.recap.data.segdense import load_segdense_schema

    schema = str(tmp_path / "segdense.json")
    entries = [dict(entry, dtype="float_list") if entry["feature_name"] == "task.a" else entry for entry in fixtures.SCHEMA]
    json.dump({"schema": entries}, open(schema, "w"))
    columns = fixtures.row_columns(np.arange(8))
    columns["task.a"] = np.array([0.25, 1.0, 0.0, 0.5] * 2, dtype=np.float32)
    os.makedirs(tmp_path / "data")
    with SegDenseParquetWriter(str(tmp_path / "data" / "part-0.parquet"), list(load_segdense_schema(schema).values())) as writer:
        writer.write(columns)
    config = fixtures.make_config(schema, inputs=str(tmp_path / "data" / "*.parquet"))
    with pytest.raises(Exception, match="soft_labels"):
        _read_all(config)
    _, batches = _read_all(config.model_copy(update={"soft_labels": True}))
    labels = torch.cat([batch.label("task.a") for batch in batches])
    assert sorted(labels.tolist()) == sorted([0.25, 1.0, 0.0, 0.5] * 2)
    columns["task.a"][3] = 1.5  # a soft label outside [0, 1] is refused too
    with SegDenseParquetWriter(str(tmp_path / "data" / "part-0.parquet"), list(load_segdense_schema(schema).values())) as writer:
        writer.write(columns)
    with pytest.raises(Exception, match="row 3"):
        _read_all(config.model_copy(update={"soft_labels": True}))


def test_f5_sparse_ids_beyond_the_table_are_refused_or_dropped_and_counted(tmp_path):
    from recap_data_fixtures import RENAMES, make_config

    schema, path = _recap_files(tmp_path)
    config = make_config(schema, inputs=str(tmp_path / "data" / "*.parquet"),
                         seg_dense_schema={"schema_path": schema, "features": ["ids.varlen"], "renamed_features": RENAMES})
    sizes = {"ids.varlen": 10}  # rows 10 and 11 hold ids 10 and 11
    with pytest.raises(Exception) as raised:
        _read_all(config, sparse_feature_names=["ids.varlen"], sparse_table_sizes=sizes)
    message = str(raised.value)
    assert path in message and "'ids.varlen'" in message and "id 10" in message and "row 10" in message, message
    dataset, batches = _read_all(config.model_copy(update={"ignore_data_errors": True}),
                                 sparse_feature_names=["ids.varlen"], sparse_table_sizes=sizes)
    assert dataset.stats.dropped_rows == 2
    ids = torch.cat([batch.sparse_features["ids.varlen"].values() for batch in batches])
    assert len(batches) == 2 and int(ids.max()) < 10


def test_f5_a_flipped_byte_in_a_data_page_is_detected(tmp_path):
    import pyarrow.parquet as pq

    from recap_data_fixtures import make_config, row_columns, write_schema
    from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
    from tml.projects.home.recap.data.segdense import load_segdense_schema

    schema = write_schema(str(tmp_path))
    path = str(tmp_path / "data" / "part-0.parquet")
    os.makedirs(os.path.dirname(path))
    with SegDenseParquetWriter(path, list(load_segdense_schema(schema).values()), compression="none") as writer:
        writer.write(row_columns(np.arange(12)))
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)  # cont_vals: plain float32 values
    raw = bytearray(open(path, "rb").read())
    raw[chunk.data_page_offset + chunk.total_compressed_size - 8] ^= 0x40  # inside the last values
    open(path, "wb").write(bytes(raw))
    with pytest.raises(Exception, match="(?i)checksum") as raised:
        _read_all(make_config(schema, inputs=str(tmp_path / "data" / "*.parquet")))
    assert path in str(raised.value)
