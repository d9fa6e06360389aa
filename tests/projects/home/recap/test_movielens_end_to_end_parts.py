"""MovieLens parts of the end-to-end example: sampled non-engagements, candidate rows as of the split,
TwHIN's time split (the Heavy Ranker's cut) and the ranking metrics."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from tml.projects.home.recap.scripts import movielens_retrieve_rank as rr
from tml.projects.home.recap.scripts import prepare_movielens as ml
from installed import installed


needs_movielens = pytest.mark.skipif(not installed("recbole"), reason="recbole (MovieLens data) is not installed")


def test_ranking_metrics_by_hand():
    relevant = {1: {10, 20}, 2: {30}}
    lists = {1: [20, 5, 10] + list(range(100, 160)), 2: list(range(200, 260))}
    m = rr.ranking_metrics(lists, relevant)
    ideal = 1 + 1 / np.log2(3)
    assert m["recall_at_10"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["ndcg_at_10"] == pytest.approx(((1 + 1 / np.log2(4)) / ideal + 0.0) / 2)
    assert m["recall_at_50"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def rows():
    if not installed("recbole"):
        pytest.skip("recbole (MovieLens data) is not installed")
    folder = ml.movielens_folder()
    columns, num_train = ml.build_rows(folder, 0.2)
    return folder, columns, num_train


@needs_movielens
def test_negatives_are_unrated_movies_with_the_rating_users_features(rows):
    folder, columns, num_train = rows
    negatives, source = ml.negative_rows(folder, columns, num_train, per_rating=2, seed=0)
    assert len(source) == 2 * len(columns["liked"])
    rated = set(zip(columns["meta.user_id"].tolist(), columns["meta.movie_id"].tolist()))
    pairs = zip(negatives["meta.user_id"].tolist(), negatives["meta.movie_id"].tolist())
    assert not any(pair in rated for pair in pairs)
    for task in ("liked", "loved", "disliked", "meta.rating"):
        assert not negatives[task].any()
    np.testing.assert_array_equal(negatives["meta.user_id"], columns["meta.user_id"][source])
    np.testing.assert_array_equal(negatives[ml.CONTINUOUS][:, [0, 3, 4]], columns[ml.CONTINUOUS][source][:, [0, 3, 4]])
    np.testing.assert_array_equal(negatives[ml.DISCRETE], columns[ml.DISCRETE][source])
    # a negative shown at rating i counts the movie's ratings before i
    i = 5000
    movie = negatives["meta.movie_id"][np.flatnonzero(source == i)[0]]
    earlier = columns["meta.movie_id"][:i] == movie
    assert negatives[ml.CONTINUOUS][np.flatnonzero(source == i)[0], 5] == earlier.sum()


@needs_movielens
def test_candidate_rows_are_the_state_at_the_split(rows):
    folder, columns, num_train = rows
    # the first validation rating happens at the split: its row must equal a candidate row of the same pair
    user, movie = columns["meta.user_id"][num_train: num_train + 1], columns["meta.movie_id"][num_train: num_train + 1]
    candidate = ml.candidate_columns(folder, user, movie, 0.2)
    np.testing.assert_allclose(candidate[ml.CONTINUOUS][0], columns[ml.CONTINUOUS][num_train], rtol=1e-6)
    np.testing.assert_array_equal(candidate[ml.BINARY][0], columns[ml.BINARY][num_train])
    np.testing.assert_array_equal(candidate[ml.DISCRETE][0], columns[ml.DISCRETE][num_train])


@needs_movielens
def test_twhin_time_split_is_the_rankers_cut(rows, tmp_path):
    from tml.projects.twhin.scripts import prepare_movielens as graph_prep

    _, columns, num_train = rows
    graph = graph_prep.prepare_movielens(str(ml.movielens_folder()), str(tmp_path), split="time")
    users = pq.read_table(tmp_path / "mapping/user.parquet").to_pydict()
    movies = pq.read_table(tmp_path / "mapping/movie.parquet").to_pydict()
    user_key = dict(zip(users["id"], map(int, users["key"])))
    movie_key = dict(zip(movies["id"], map(int, movies["key"])))
    edges = pq.read_table(tmp_path / "train/part-00000.parquet").to_pydict()
    train_pairs = {(user_key[l], movie_key[r]) for l, rel, r in zip(edges["lhs"], edges["rel"], edges["rhs"]) if rel < 2}
    stars = columns["meta.rating"]
    kept = (stars >= 4) | (stars <= 2)
    expected = set(zip(columns["meta.user_id"][:num_train][kept[:num_train]].tolist(),
                       columns["meta.movie_id"][:num_train][kept[:num_train]].tolist()))
    assert train_pairs == expected
    assert set(user_key.values()) == {u for u, _ in expected}  # only users with a training edge have a row
    assert graph["edges"]["test"] == 0


@needs_movielens
def test_popularity_sampled_negatives_are_more_popular_than_uniform_ones(rows):
    folder, columns, num_train = rows
    mean_count = {}
    for sampling in ("uniform", "popularity"):
        negatives, _ = ml.negative_rows(folder, columns, num_train, per_rating=1, seed=0, sampling=sampling)
        mean_count[sampling] = negatives[ml.CONTINUOUS][:, 5].mean()  # the movie's earlier ratings
    assert mean_count["popularity"] > 2 * mean_count["uniform"]  # measured: 67 vs 23 earlier ratings
    with pytest.raises(ValueError, match="negative sampling"):
        ml.negative_rows(folder, columns, num_train, per_rating=1, sampling="zipf")


@needs_movielens
def test_label_period_rows_start_where_an_earlier_twhin_graph_ends(tmp_path):
    """TwHIN cut at 40% of the ratings + ranker rows from 40% on: no training label is a graph edge."""
    from tml.projects.twhin.scripts import prepare_movielens as graph_prep

    stats = ml.prepare_movielens(str(tmp_path / "recap"), num_train_files=1, label_start_fraction=0.4)
    graph_prep.prepare_movielens(str(ml.movielens_folder()), str(tmp_path / "graph"), split="time", validation_fraction=0.6)
    rows = pq.read_table(tmp_path / "recap/train").to_pydict()
    assert min(rows["meta.timestamp"]) == stats["label_start_timestamp"]
    users = pq.read_table(tmp_path / "graph/mapping/user.parquet").to_pydict()
    movies = pq.read_table(tmp_path / "graph/mapping/movie.parquet").to_pydict()
    user_key, movie_key = dict(zip(users["id"], map(int, users["key"]))), dict(zip(movies["id"], map(int, movies["key"])))
    edges = pq.read_table(tmp_path / "graph/train/part-00000.parquet").to_pydict()
    graph_pairs = {(user_key[l], movie_key[r]) for l, rel, r in zip(edges["lhs"], edges["rel"], edges["rhs"]) if rel < 2}
    labelled = set(zip(rows["meta.user_id"], rows["meta.movie_id"]))
    assert graph_pairs and not graph_pairs & labelled
    assert max(pq.read_table(tmp_path / "graph/mapping/user.parquet").column("id").to_pylist()) < 943
    with pytest.raises(ValueError, match="label_start_fraction"):
        ml.prepare_movielens(str(tmp_path / "bad"), label_start_fraction=0.8)


def test_user_halves_are_disjoint_seeded_and_cover_everyone():
    halves = rr.user_halves(range(11), seed=3)
    assert halves["tune"] | halves["test"] == set(range(11)) and not halves["tune"] & halves["test"]
    assert len(halves["tune"]) == 5 and halves == rr.user_halves(list(reversed(range(11))), seed=3)
    assert halves != rr.user_halves(range(11), seed=4)


def test_popular_lists_skip_rated_and_already_held_movies():
    train = {rr.USER_COLUMN: np.array([1, 1, 2, 3, 3, 3, 2]), rr.MOVIE_COLUMN: np.array([5, 6, 5, 5, 6, 7, 8])}
    lists = rr.popular_lists(train, [1, 9], k=3, leave_out={9: {6}})
    assert lists[1] == [7, 8]  # 5 and 6 rated by user 1; nothing else was ever rated
    assert lists[9] == [5, 7, 8]


def test_reciprocal_rank_fusion_by_hand():
    fused = rr.reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 1, 2])], c=10)
    np.testing.assert_allclose(fused, [1 / 11 + 1 / 13, 1 / 12 + 1 / 11, 1 / 13 + 1 / 12])
    assert np.argsort(-fused).tolist() == [1, 0, 2]  # second in one order and first in the other wins
    with pytest.raises(ValueError, match="positive"):
        rr.reciprocal_rank_fusion([np.array([1])], c=0)
