"""The TwHIN feature join: ids (direct and through a key mapping), rows without a vector, widths."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tml.projects.home.recap import twhin_features as tf


def _export(folder, table, ids, vectors):
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "vector": column}), folder / f"{table}.parquet")


@pytest.fixture
def export(tmp_path):
    folder = tmp_path / "export"
    _export(folder, "user", [0, 1, 2], [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]])
    _export(folder, "movie", [0, 1], [[10, 0], [0, 10]])  # another width
    return folder


def _data(folder, name, **columns):
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns)
    pq.write_table(table, folder / name, row_group_size=2)
    return folder / name


def test_join_by_row_id_fills_missing_with_zeros_and_counts_them(tmp_path, export):
    _data(tmp_path / "in", "a.parquet", **{"meta.user_id": pa.array([2, 0, 7, None, 1], pa.int64()),
                                          "meta.movie_id": pa.array([1, 1, 0, 0, 5], pa.int64()),
                                          "label": pa.array([1, 0, 1, 0, 1], pa.int64())})
    features = [tf.TwhinFeature.parse("tu=user:meta.user_id"), tf.TwhinFeature.parse("tm=movie:meta.movie_id")]
    summary = tf.write_twhin_features(str(tmp_path / "in/*.parquet"), str(tmp_path / "out"), str(export), features)
    out = pq.read_table(tmp_path / "out/a.parquet")
    assert out.column_names == ["meta.user_id", "meta.movie_id", "label", "tu", "tm"]
    assert out.schema.field("tu").type == pa.list_(pa.float32(), 4)
    assert out.schema.field("tm").type == pa.list_(pa.float32(), 2)
    users = np.array(out.column("tu").to_pylist())
    np.testing.assert_array_equal(users, [[3] * 4, [1] * 4, [0] * 4, [0] * 4, [2] * 4])  # 7 and null: zeros
    np.testing.assert_array_equal(np.array(out.column("tm").to_pylist()), [[0, 10], [0, 10], [10, 0], [10, 0], [0, 0]])
    assert out.column("label").to_pylist() == [1, 0, 1, 0, 1]
    assert pq.ParquetFile(tmp_path / "out/a.parquet").num_row_groups == 3  # row groups kept
    assert summary["features"]["tu"]["rows_without_vector"] == 2
    assert summary["features"]["tm"]["rows_without_vector"] == 1
    assert json.loads((tmp_path / "out" / tf.SUMMARY_FILE).read_text())["rows"] == 5


def test_join_through_key_mapping(tmp_path, export):
    mapping = tmp_path / "mapping"
    mapping.mkdir()
    # data ids are the original keys "101", "102", "103" -> TwHIN rows 2, 0, 1
    pq.write_table(pa.table({"id": pa.array([2, 0, 1], pa.int64()), "key": ["101", "102", "103"]}), mapping / "user.parquet")
    _data(tmp_path / "in", "a.parquet", uid=pa.array([103, 101, 999], pa.int64()))
    summary = tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"), str(export),
                                      [tf.TwhinFeature("v", "user", "uid")], str(mapping))
    got = np.array(pq.read_table(tmp_path / "out/a.parquet").column("v").to_pylist())
    np.testing.assert_array_equal(got, [[2] * 4, [3] * 4, [0] * 4])
    assert summary["features"]["v"]["rows_without_vector"] == 1


def test_length_one_list_ids_are_read_as_scalars(tmp_path, export):
    ids = pa.FixedSizeListArray.from_arrays(pa.array([1, 0], pa.int64()), 1)
    _data(tmp_path / "in", "a.parquet", uid=ids)
    tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"), str(export),
                            [tf.TwhinFeature("v", "user", "uid")])
    got = np.array(pq.read_table(tmp_path / "out/a.parquet").column("v").to_pylist())
    np.testing.assert_array_equal(got, [[2] * 4, [1] * 4])


def test_bad_inputs_are_named(tmp_path, export):
    _data(tmp_path / "in", "a.parquet", uid=pa.array([1], pa.int64()), v=pa.array([1.0]))
    with pytest.raises(KeyError, match="no id column 'nope'"):
        tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"), str(export),
                                [tf.TwhinFeature("x", "user", "nope")])
    with pytest.raises(FileNotFoundError, match="'song' is not a table"):
        tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"), str(export),
                                [tf.TwhinFeature("x", "song", "uid")])
    with pytest.raises(ValueError, match="already has a column 'v'"):
        tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"), str(export),
                                [tf.TwhinFeature("v", "user", "uid")])
    with pytest.raises(ValueError, match="holds the input"):
        tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "in"), str(export),
                                [tf.TwhinFeature("x", "user", "uid")])
    with pytest.raises(ValueError, match="COLUMN=TABLE:ID_COLUMN"):
        tf.TwhinFeature.parse("x=user")
    assert tf.main(["--embeddings", str(export), "--input", str(tmp_path / "in/a.parquet"), "--output_dir",
                    str(tmp_path / "o2"), "--feature", "x=user:nope"]) == 1  # bad input: exit 1


def test_drop_zeros_a_seeded_share_and_counts_it(tmp_path, export):
    _data(tmp_path / "in", "a.parquet", uid=pa.array(np.arange(1000) % 3, pa.int64()))
    run = lambda out, seed: tf.write_twhin_features(  # noqa: E731
        str(tmp_path / "in/a.parquet"), str(tmp_path / out), str(export), [tf.TwhinFeature("v", "user", "uid")],
        drop={"v": 0.3}, seed=seed)
    summary = run("o1", 0)
    vectors = np.array(pq.read_table(tmp_path / "o1/a.parquet").column("v").to_pylist())
    zero_rows = int((vectors == 0).all(axis=1).sum())
    assert zero_rows == summary["features"]["v"]["rows_without_vector"]
    assert 240 < zero_rows < 360
    again = np.array(pq.read_table(tmp_path / "o1/a.parquet").column("v").to_pylist())
    run("o2", 0)
    np.testing.assert_array_equal(again, np.array(pq.read_table(tmp_path / "o2/a.parquet").column("v").to_pylist()))
    with pytest.raises(ValueError, match="no --feature writes"):
        tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "o3"), str(export),
                                [tf.TwhinFeature("v", "user", "uid")], drop={"w": 0.5})


def _relations(folder, vectors):
    names = list(vectors)
    column = pa.array([list(map(float, vectors[n])) for n in names], pa.list_(pa.float32()))
    pq.write_table(pa.table({"name": names, "vector": column}), folder / "relations.parquet")


def _twhin_config(relation_aware, operator="translation"):
    from types import SimpleNamespace

    relation = SimpleNamespace(name="liked", lhs="user", rhs="movie", operator=operator)
    return SimpleNamespace(model=SimpleNamespace(relations=[relation], relation_aware=relation_aware))


@pytest.fixture
def score_export(tmp_path):
    folder = tmp_path / "score_export"
    _export(folder, "user", [0, 1], [[1, 0], [0, 2]])
    _export(folder, "movie", [0, 1, 2], [[1, 1], [2, 0], [0, -1]])
    _relations(folder, {"liked": [1, 1], "liked:reverse": [0, 1]})
    return folder


def test_score_is_the_models_edge_score_appended_to_the_block_by_hand(tmp_path, score_export):
    block = pa.FixedSizeListArray.from_arrays(pa.array([7.0, 8.0, 9.0, 10.0, 11.0, 12.0], pa.float32()), 2)
    _data(tmp_path / "in", "a.parquet", uid=pa.array([0, 1, 5], pa.int64()), mid=pa.array([2, 0, 1], pa.int64()),
          cont=block)
    summary = tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"), str(score_export), [],
                                      scores=[tf.TwhinScore.parse("liked=uid:mid")],
                                      twhin_config=_twhin_config(True), score_into="cont")
    out = pq.read_table(tmp_path / "out/a.parquet")
    assert out.column_names == ["uid", "mid", "cont"] and out.schema.field("cont").type == pa.list_(pa.float32(), 5)
    got = np.array(out.column("cont").to_pylist())
    # relation-aware translation ranks movies x for user u by x . (u + r_reverse):
    # user 0: q = (1, 1), scores of movies 0, 1, 2 = 2, 2, -1 (mean 1, std sqrt(2)); movie 2 -> -1
    # user 1: q = (0, 3), scores 3, 0, -3 (mean 0, std sqrt(6)); movie 0 -> 3; user 5 has no vector
    expected = [[7, 8, -1, -2 / np.sqrt(2), 1], [9, 10, 3, 3 / np.sqrt(6), 1], [11, 12, 0, 0, 0]]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert summary["scores"]["rows_without_score"] == {"liked": 1}
    assert summary["scores"]["values"] == ["liked.score", "liked.score_in_user", "liked.has_score"]


def test_score_without_relation_aware_is_the_forward_translation_score(tmp_path, score_export):
    _data(tmp_path / "in", "a.parquet", uid=pa.array([1], pa.int64()), mid=pa.array([1], pa.int64()))
    tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"), str(score_export), [],
                            scores=[tf.TwhinScore("liked", "uid", "mid")], twhin_config=_twhin_config(False),
                            score_into="new")
    # u . (x + r) with u = (0, 2), x = (2, 0), r = (1, 1): 0 + 2 = 2; over movies: 2, 2, 0 -> mean 4/3
    got = pq.read_table(tmp_path / "out/a.parquet").column("new").to_pylist()[0]
    all_scores = np.array([4.0, 2.0, 0.0])
    np.testing.assert_allclose(got, [2, (2 - all_scores.mean()) / all_scores.std(), 1], rtol=1e-6)


def test_score_bad_inputs_are_named(tmp_path, score_export):
    _data(tmp_path / "in", "a.parquet", uid=pa.array([1], pa.int64()), mid=pa.array([1], pa.int64()),
          ints=pa.array([[1, 2]], pa.list_(pa.int64())))
    _data(tmp_path / "ragged", "a.parquet", uid=pa.array([1, 0], pa.int64()), mid=pa.array([1, 0], pa.int64()),
          c=pa.array([[1.0], [1.0, 2.0]], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match="rows of lengths \\[1, 2\\]"):
        tf.write_twhin_features(str(tmp_path / "ragged/a.parquet"), str(tmp_path / "out"), str(score_export), [],
                                scores=[tf.TwhinScore("liked", "uid", "mid")], twhin_config=_twhin_config(True),
                                score_into="c")
    assert tf.main(["--embeddings", str(score_export), "--input", str(tmp_path / "in/a.parquet"), "--output_dir",
                    str(tmp_path / "o2"), "--score", "liked=uid:mid", "--score_into", "c"]) == 1  # no --twhin_config
    write = lambda **kw: tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"),  # noqa: E731
                                                 str(score_export), [], **kw)
    with pytest.raises(ValueError, match="--score needs --twhin_config"):
        write(scores=[tf.TwhinScore("liked", "uid", "mid")], score_into="c")
    with pytest.raises(KeyError, match="'loved' is not a relation"):
        write(scores=[tf.TwhinScore("loved", "uid", "mid")], twhin_config=_twhin_config(True), score_into="c")
    with pytest.raises(TypeError, match="'ints' is list<.*int64>, expected a list of floats"):
        write(scores=[tf.TwhinScore("liked", "uid", "mid")], twhin_config=_twhin_config(True), score_into="ints")
    with pytest.raises(ValueError, match="nothing to write"):
        write()
    with pytest.raises(ValueError, match="RELATION=LHS_ID_COLUMN:RHS_ID_COLUMN"):
        tf.TwhinScore.parse("liked=uid")
    (score_export / "relations.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="relations.parquet does not exist"):
        write(scores=[tf.TwhinScore("liked", "uid", "mid")], twhin_config=_twhin_config(True), score_into="c")


def test_score_appended_to_a_variable_length_list_keeps_its_kind(tmp_path, score_export):
    _data(tmp_path / "in", "a.parquet", uid=pa.array([0], pa.int64()), mid=pa.array([1], pa.int64()),
          c=pa.array([[1.5]], pa.list_(pa.float32())))
    tf.write_twhin_features(str(tmp_path / "in/a.parquet"), str(tmp_path / "out"), str(score_export), [],
                            scores=[tf.TwhinScore("liked", "uid", "mid")], twhin_config=_twhin_config(True),
                            score_into="c")
    out = pq.read_table(tmp_path / "out/a.parquet")
    assert out.schema.field("c").type == pa.list_(pa.float32())
    # user 0, movie 1: (2, 0) . (1, 1) = 2; the user's scores 2, 2, -1: (2 - 1) / sqrt(2)
    np.testing.assert_allclose(out.column("c").to_pylist()[0], [1.5, 2, 1 / np.sqrt(2), 1], rtol=1e-6)
