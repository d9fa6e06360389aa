"""`training.seed`: one field makes a Heavy Ranker run repeatable (initial weights, dropout, data order)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from unittest import mock

import pytest
import torch

from tml.common import device as device_lib
from tml.common.seeding import derived_seed, seed_torch
from tml.core.config import load_config_from_yaml
from tml.projects.home.recap.config import RecapConfig, run_seed
from tml.projects.home.recap.data.generate_random_data import generate_random_data
from tml.projects.home.recap.job import run

REPO_ROOT = Path(__file__).resolve().parents[4]
LOCAL_YAML = REPO_ROOT / "projects" / "home" / "recap" / "config" / "local.yaml"
SETS = ("validation", "train", '"recap.engagement.is_replied"')
TINY = [
    "training.num_train_steps=6",
    "training.checkpoint_every_n=6",
    "training.eval_log_every_n=6",
    "training.train_log_every_n=6",
    "training.num_eval_steps=2",
    "train_data.global_batch_size=16",
    *[f"validation_data.{name}.global_batch_size=16" for name in SETS],
]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    with mock.patch.dict(os.environ, {"HOME": str(home), "TML_BASE": str(REPO_ROOT)}):
        config = load_config_from_yaml(RecapConfig, LOCAL_YAML)
    generate_random_data(config.train_data, str(home / "tmp/tml/recap_local/data"), n_examples=320, num_files=10)
    return home


def _train(home: Path, save_dir: Path, *overrides: str) -> dict[str, dict[str, float]]:
    with mock.patch.dict(os.environ, {"HOME": str(home), "TML_BASE": str(REPO_ROOT)}):
        config = load_config_from_yaml(RecapConfig, LOCAL_YAML, [*TINY, f"training.save_dir={save_dir}", *overrides])
    try:
        return run(config)
    finally:
        device_lib.teardown()


def test_two_runs_of_one_config_give_identical_metrics_and_another_seed_does_not(home, tmp_path):
    # local.yaml has dropout in one tower and shuffles its training rows.
    first = _train(home, tmp_path / "a", "training.seed=3")
    torch.rand(5)  # whatever ran before must not matter
    second = _train(home, tmp_path / "b", "training.seed=3")
    other = _train(home, tmp_path / "c", "training.seed=4")
    assert first and _same(first, second)
    assert not _same(first, other)


def _same(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> bool:
    """Equal results, NaN (e.g. AUROC of a task without positives in a set) equal to NaN."""
    flat = lambda results: {(s, k): ("nan" if math.isnan(v) else v) for s, m in results.items() for k, v in m.items()}
    return flat(a) == flat(b)


def test_without_training_seed_the_data_seed_seeds_the_run():
    config = RecapConfig.model_construct(
        training=RecapConfig.model_fields["training"].default_factory(),
        train_data=mock.Mock(seed=7),
    )
    assert config.training.seed is None and run_seed(config) == 7
    config.training.seed = 2
    assert run_seed(config) == 2


def test_seed_torch_is_repeatable_and_salted():
    seed_torch(5)
    a = torch.rand(3)
    seed_torch(5)
    assert torch.equal(a, torch.rand(3))
    seed_torch(5, 1)
    assert not torch.equal(a, torch.rand(3))
    assert derived_seed(5, 1) != derived_seed(5, 2) and 0 <= derived_seed(5) < 2**63
