"""Scoring and ranking candidates with a trained Heavy Ranker (projects/home/recap/score.py)."""
import glob

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tml.common.testing_utils import run_on_ranks
from tml.projects.home.recap import score
from tml.projects.home.recap.candidates import CandidateReader
from tml.projects.home.recap.data.assembly import mask_mantissa_
from tml.projects.home.recap.engagement_weights import (
    APRIL_2023_WEIGHTS,
    parse_weights,
    rank_within_groups,
    resolve_weights,
)
from tml.projects.home.recap.trained_model import build_model, recap_input_spec

from rank_fns_recap_score import train_then_predict
from recap_scoring_fixtures import KEPT_CONTINUOUS, TASKS, load_setup_config, make_setup

FAV, REPLY = TASKS


def test_rank_within_groups_ranks_each_user_by_score_ties_in_input_order():
    users = np.array([5, 7, 5, 5, 7, 9])
    scores = np.array([0.1, 0.9, 0.3, 0.3, 0.2, -4.0])
    assert rank_within_groups(users, scores).tolist() == [3, 1, 1, 2, 2, 1]


def test_parse_weights_reads_dotted_task_names_and_rejects_bad_entries():
    assert parse_weights("recap.engagement.is_replied=20, liked=-1.5") == {
        "recap.engagement.is_replied": 20.0,
        "liked": -1.5,
    }
    with pytest.raises(ValueError, match="entry 'liked' must look like task=weight"):
        parse_weights("liked")
    with pytest.raises(ValueError, match="weight 'lots' is not a number"):
        parse_weights("liked=lots")


def test_resolve_weights_defaults_overrides_and_errors():
    assert resolve_weights([FAV, REPLY]) == {FAV: 0.5, REPLY: 13.5}
    assert APRIL_2023_WEIGHTS["recap.engagement.is_report_tweet_clicked"] == -369.0
    assert resolve_weights([FAV, REPLY], {REPLY: 2.0}) == {FAV: 0.5, REPLY: 2.0}
    assert resolve_weights([FAV, "liked"]) == {FAV: 0.5, "liked": 0.0}
    assert resolve_weights(["liked", "loved"], {"loved": 3.0}) == {"liked": 0.0, "loved": 3.0}
    with pytest.raises(ValueError, match=r"weights name task\(s\) \['is_faved'\] that the model does not have"):
        resolve_weights([FAV], {"is_faved": 1.0})
    assert resolve_weights(["liked", "loved"]) == {"liked": 1.0, "loved": 1.0}  # one's own tasks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of a 2-rank run and that run's own predictions for the candidates."""
    setup = make_setup(str(tmp_path_factory.mktemp("recap_score")))
    predictions = run_on_ranks(train_then_predict, 2, setup["config_path"], setup["candidates"], timeout_s=150)
    np.testing.assert_array_equal(predictions[0], predictions[1])
    return setup, predictions[0]


def _candidate_ids(setup, name):
    files = sorted(glob.glob(setup["candidates"]))
    return np.concatenate([pq.read_table(path, columns=[name]).column(name).to_numpy() for path in files])


def _probabilities(table):
    return np.stack([table.column(task).to_numpy() for task in TASKS], axis=1)


def test_scores_from_a_two_rank_checkpoint_equal_the_trained_models_predictions(trained):
    setup, predictions = trained
    config = load_setup_config(setup["config_path"])
    table = score.score_candidates(config, setup["save_dir"], setup["candidates"], batch_rows=4)
    assert table.column_names == ["meta.user_id", "meta.tweet_id", FAV, REPLY, "score", "rank"]
    assert table.num_rows == 45
    np.testing.assert_array_equal(table.column("meta.user_id").to_numpy(), _candidate_ids(setup, "meta.user_id"))
    np.testing.assert_array_equal(table.column("meta.tweet_id").to_numpy(), _candidate_ids(setup, "meta.tweet_id"))
    np.testing.assert_allclose(_probabilities(table), predictions, atol=1e-6)


def test_score_is_the_weighted_sum_and_ranks_order_each_users_candidates(trained):
    setup, _ = trained
    config = load_setup_config(setup["config_path"])
    table = score.score_candidates(config, setup["save_dir"], setup["candidates"])
    probabilities = _probabilities(table)
    scores = table.column("score").to_numpy()
    np.testing.assert_allclose(scores, 0.5 * probabilities[:, 0] + 13.5 * probabilities[:, 1], rtol=1e-6)
    users = table.column("meta.user_id").to_numpy()
    ranks = table.column("rank").to_numpy()
    assert len(np.unique(users)) > 1 and len(users) > len(np.unique(users))
    for user in np.unique(users):
        mine = users == user
        assert sorted(ranks[mine].tolist()) == list(range(1, mine.sum() + 1))
        by_rank = scores[mine][np.argsort(ranks[mine])]
        assert np.all(np.diff(by_rank) <= 0)


def test_weights_override_reranks(trained):
    setup, _ = trained
    config = load_setup_config(setup["config_path"])
    default = score.score_candidates(config, setup["save_dir"], setup["candidates"])
    favorites_only = score.score_candidates(config, setup["save_dir"], setup["candidates"], weights={REPLY: 0.0, FAV: 2.0})
    np.testing.assert_allclose(favorites_only.column("score").to_numpy(), 2.0 * favorites_only.column(FAV).to_numpy())
    expected = rank_within_groups(default.column("meta.user_id").to_numpy(), default.column(FAV).to_numpy())
    np.testing.assert_array_equal(favorites_only.column("rank").to_numpy(), expected)
    assert not np.array_equal(favorites_only.column("rank").to_numpy(), default.column("rank").to_numpy())
    assert favorites_only.schema.metadata[b"tml.engagement_weights"] == f"{FAV}=2.0,{REPLY}=0.0".encode()


def test_calibrated_probabilities_undo_the_negative_downsampling(trained):
    setup, _ = trained
    config = load_setup_config(setup["config_path"])
    raw = score.score_candidates(config, setup["save_dir"], setup["candidates"], probabilities="probabilities")
    calibrated = score.score_candidates(config, setup["save_dir"], setup["candidates"])
    np.testing.assert_allclose(calibrated.column(FAV).to_numpy(), raw.column(FAV).to_numpy(), rtol=1e-6)
    p = raw.column(REPLY).to_numpy().astype(np.float64)
    ratio = 0.5  # neg_downsampling_rate / pos_downsampling_rate of the reply task
    np.testing.assert_allclose(calibrated.column(REPLY).to_numpy(), p * ratio / (1 - p + ratio * p), rtol=1e-5)


def test_command_line_writes_the_ranked_parquet(trained, tmp_path):
    setup, predictions = trained
    output = tmp_path / "out" / "scores.parquet"
    exit_code = score.main([
        "--config_path", setup["config_path"],
        "--checkpoint", setup["save_dir"] + "/12",
        "--input", setup["candidates"],
        "--output", str(output),
        "--weights", f"{REPLY}=1",
    ])
    assert exit_code == 0
    table = pq.read_table(output)
    np.testing.assert_allclose(_probabilities(table), predictions, atol=1e-6)
    np.testing.assert_allclose(table.column("score").to_numpy(), 0.5 * predictions[:, 0] + predictions[:, 1], rtol=1e-5)


def test_missing_inputs_fail_with_clear_messages(trained, tmp_path):
    setup, _ = trained
    config = load_setup_config(setup["config_path"])
    with pytest.raises(ValueError, match="id column 'meta.request_id' is not in segdense schema"):
        score.score_candidates(config, setup["save_dir"], setup["candidates"], user_id_column="meta.request_id")
    with pytest.raises(FileNotFoundError, match="is neither a complete checkpoint nor a save_dir holding one"):
        score.score_candidates(config, str(tmp_path), setup["candidates"])
    with pytest.raises(ValueError, match="no data files match inputs"):
        score.score_candidates(config, setup["save_dir"], str(tmp_path / "*.parquet"))


def test_candidate_reader_applies_truncation_and_keeps_every_row_in_order(trained):
    setup, _ = trained
    config = load_setup_config(setup["config_path"])
    reader = CandidateReader(config.train_data, setup["candidates"], sparse_feature_names=["tweet_ids"], batch_rows=4)
    assert recap_input_spec(config).shapes["continuous_features"] == (-1, 4)  # 5 columns in the files, truncated to 4
    seen_users, seen_tweets = [], []
    for ids, batch in reader:
        assert batch.labels is None and batch.continuous_features.shape[0] <= 4
        assert batch.continuous_features.shape[1] == 4
        np.testing.assert_array_equal(batch.sparse_features["tweet_ids"].values().numpy(), ids["meta.tweet_id"])
        seen_users.append(ids["meta.user_id"])
        seen_tweets.append(ids["meta.tweet_id"])
    np.testing.assert_array_equal(np.concatenate(seen_users), _candidate_ids(setup, "meta.user_id"))
    np.testing.assert_array_equal(np.concatenate(seen_tweets), _candidate_ids(setup, "meta.tweet_id"))


def test_candidates_are_masked_then_down_cast_as_in_training_and_score(tmp_path):
    """Inference runs the training pipeline's own stages in training order: mantissa masking of the
    float32 column first, then the down-cast (the reverse order fails: masking needs float32)."""
    setup = make_setup(str(tmp_path), train_rows=32, candidate_rows=25)
    with open(setup["config_path"]) as stream:
        document = yaml.safe_load(stream)
    document["train_data"]["seg_dense_schema"]["mask_mantissa_features"] = {"continuous": 16}
    document["train_data"]["preprocess"]["downcast"] = {"features": {"continuous": "bfloat16"}}
    with open(setup["config_path"], "w") as stream:
        yaml.safe_dump(document, stream)
    config = load_setup_config(setup["config_path"])
    spec = recap_input_spec(config)
    reader = CandidateReader(
        config.train_data, setup["candidates"], sparse_feature_names=spec.sparse_feature_names, batch_rows=8
    )
    _, batch = next(iter(reader))
    raw = torch.from_numpy(np.stack(pq.read_table(sorted(glob.glob(setup["candidates"]))[0])["cont_vals"].to_numpy(zero_copy_only=False)))
    expected = mask_mantissa_(raw[:8, :KEPT_CONTINUOUS].clone(), 16).to(torch.bfloat16)
    assert batch.continuous_features.dtype == torch.bfloat16
    assert torch.equal(batch.continuous_features, expected)
    assert tuple(batch.continuous_features.shape[1:]) == tuple(spec.shapes["continuous_features"][1:])

    table = score.rank_candidates(build_model(config), reader)
    assert table.num_rows == 25
    assert np.isfinite(table.column(score.SCORE_COLUMN).to_numpy()).all()
