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


def test_paired_ndcg_difference_and_standard_errors_by_hand():
    relevant = {1: {10}, 2: {20}, 3: {30}}
    first = {1: [10], 2: [5, 20], 3: [30]}
    second = {1: [5, 10], 2: [20], 3: [30]}
    # per user: first 1, 1/log2(3), 1; second 1/log2(3), 1, 1 -> differences d, -d, 0 with d = 1 - 1/log2(3)
    d = 1 - 1 / np.log2(3)
    got = rr.paired_ndcg_difference(first, second, relevant)
    assert got["mean"] == pytest.approx(0.0, abs=1e-12)
    assert got["se"] == pytest.approx(np.std([d, -d, 0.0], ddof=1) / np.sqrt(3))
    m = rr.ranking_metrics(first, relevant)
    assert m["ndcg_at_10_se"] == pytest.approx(np.std([1, 1 / np.log2(3), 1], ddof=1) / np.sqrt(3))


@needs_movielens
def test_earliest_ratings_are_the_rows_before_the_cut(rows):
    folder, columns, _ = rows
    users, movies = ml.earliest_ratings(folder, 0.4)
    np.testing.assert_array_equal(users, columns["meta.user_id"][:40000])
    np.testing.assert_array_equal(movies, columns["meta.movie_id"][:40000])
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        ml.earliest_ratings(folder, 1.0)


@needs_movielens
def test_served_candidates_are_labelled_by_the_label_periods_ratings(rows):
    folder, columns, num_train = rows
    start = 40000
    period = slice(start, num_train)
    period_users, period_stars = columns["meta.user_id"][period], columns["meta.rating"][period]
    user = int(next(u for u in period_users if {5, 2} <= set(period_stars[period_users == u].tolist())))
    mine = period_users == user
    stars = dict(zip(columns["meta.movie_id"][period][mine].tolist(), period_stars[mine].tolist()))
    five = next(m for m, s in stars.items() if s == 5)
    low = next(m for m, s in stars.items() if s <= 2)
    never = next(m for m in range(1, 1683) if m not in stars and m not in columns["meta.movie_id"][columns["meta.user_id"] == user])
    idle = next(int(u) for u in np.unique(columns["meta.user_id"][:start]) if u not in set(columns["meta.user_id"][period].tolist()))
    wanted = [five, never, low]
    got = ml.served_candidate_rows(folder, columns, start, num_train, {user: np.array(wanted), idle: np.array([1, 2])})
    assert set(got["meta.user_id"].tolist()) == {user}  # a user without ratings in the label period is left out
    by_movie = {int(m): i for i, m in enumerate(got["meta.movie_id"].tolist())}
    assert sorted(by_movie) == sorted(wanted)
    assert (got["liked"][by_movie[five]], got["loved"][by_movie[five]], got["disliked"][by_movie[five]]) == (1, 1, 0)
    assert (got["liked"][by_movie[never]], got["loved"][by_movie[never]], got["disliked"][by_movie[never]]) == (0, 0, 0)
    assert (got["liked"][by_movie[low]], got["disliked"][by_movie[low]]) == (0, 1)
    assert got["meta.rating"][by_movie[five]] == 5
    # the features are the state at the label period's start, as candidates at a split are
    state = ml.candidate_columns(folder, got["meta.user_id"], got["meta.movie_id"], 0.6)
    np.testing.assert_array_equal(got[ml.CONTINUOUS], state[ml.CONTINUOUS])


def test_candidate_files_are_checked(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"meta.user_id": [1, 1, 2], "meta.movie_id": [5, 6, 7]}), tmp_path / "good.parquet")
    got = ml.read_candidates(str(tmp_path / "good.parquet"))
    assert sorted(got) == [1, 2] and got[1].tolist() == [5, 6] and got[2].tolist() == [7]
    pq.write_table(pa.table({"meta.user_id": [1], "movie": [5]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no column\\(s\\) \\['meta.movie_id'\\]"):
        ml.read_candidates(str(tmp_path / "bad.parquet"))
    pq.write_table(pa.table({"meta.user_id": [1.5], "meta.movie_id": [5]}), tmp_path / "float.parquet")
    with pytest.raises(ValueError, match="must be integers"):
        ml.read_candidates(str(tmp_path / "float.parquet"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ml.read_candidates(str(tmp_path / "none.parquet"))
    with pytest.raises(ValueError, match="label_start_fraction > 0"):
        ml.prepare_movielens(str(tmp_path / "out"), served_candidates=str(tmp_path / "good.parquet"))


@needs_movielens
def test_movielens_candidates_are_the_top_k_unrated_movies_at_the_cut(tmp_path):
    import pyarrow as pa

    from tml.projects.home.recap.scripts import movielens_candidates as mc

    rng = np.random.default_rng(0)
    export, mapping = tmp_path / "export", tmp_path / "graph" / "mapping"
    export.mkdir()
    mapping.mkdir(parents=True)
    vectors = {"user": rng.normal(size=(943, 4)).astype(np.float32), "movie": rng.normal(size=(1682, 4)).astype(np.float32)}
    for table, matrix in vectors.items():
        ids = np.arange(len(matrix))
        column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), 4)
        pq.write_table(pa.table({"id": ids, "vector": column}), export / f"{table}.parquet")
        pq.write_table(pa.table({"id": ids, "key": [str(i + 1) for i in ids]}), mapping / f"{table}.parquet")
    counts = mc.write_candidates(str(export), str(tmp_path / "graph"), None, 0.05, str(tmp_path / "c.parquet"), k=7)
    got = pq.read_table(tmp_path / "c.parquet").to_pydict()
    users, movies = ml.earliest_ratings(ml.movielens_folder(), 0.05)
    assert counts["users"] == len(np.unique(users)) and counts["rows"] == 7 * counts["users"]
    user = int(users[0])
    seen = set(movies[users == user].tolist())
    scores = vectors["movie"] @ vectors["user"][user - 1]
    best = [int(m) + 1 for m in np.argsort(-scores) if int(m) + 1 not in seen][:7]
    assert [m for u, m in zip(got["meta.user_id"], got["meta.movie_id"]) if u == user] == best
    assert not any(m in seen for u, m in zip(got["meta.user_id"], got["meta.movie_id"]) if u == user)


def test_the_score_config_is_movielens_yaml_with_three_more_continuous_values(monkeypatch):
    import json
    import pathlib

    import tml
    from tml.core.config import load_config_from_yaml
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.twhin_features import SCORE_VALUES

    folder = pathlib.Path(tml.__file__).parent / "projects/home/recap/config"
    monkeypatch.setenv("TML_BASE", str(pathlib.Path(tml.__file__).parent))
    base = load_config_from_yaml(RecapConfig, str(folder / "movielens.yaml"))
    score = load_config_from_yaml(RecapConfig, str(folder / "movielens_twhin_score.yaml"))
    assert score.model == base.model and score.optimizer == base.optimizer
    assert score.train_data.seg_dense_schema.renamed_features == base.train_data.seg_dense_schema.renamed_features
    plain, wide = (json.loads((folder / name).read_text())["schema"]
                   for name in ("movielens_segdense.json", "movielens_score_segdense.json"))
    assert wide[0]["length"] == plain[0]["length"] + len(SCORE_VALUES) and wide[1:] == plain[1:]
    assert score.train_data.seg_dense_schema.schema_path.endswith("movielens_score_segdense.json")
