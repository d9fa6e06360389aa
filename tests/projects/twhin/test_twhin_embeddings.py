import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tml.common.testing_utils import run_on_ranks
from tml.projects.twhin.embeddings import export_embeddings, get_embeddings, main, nearest
from rank_fns_twhin import save_sharded_checkpoint
from twhin_helpers import model_config

CONFIG = model_config(operators=("translation", "diagonal"), tables={"user": 30, "tweet": 17})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint written by 2 sharded ranks (user row-wise, tweet table-wise) and its true tables."""
    save_dir = str(tmp_path_factory.mktemp("twhin") / "run")
    tables = run_on_ranks(save_sharded_checkpoint, 2, CONFIG.model_dump_json(), save_dir, 7)[0]
    export_dir = str(tmp_path_factory.mktemp("export"))
    export_embeddings(save_dir, export_dir, relation_names=["fav", "follow"])
    return save_dir, export_dir, tables


def test_export_writes_every_table_and_the_relations(saved):
    save_dir, export_dir, tables = saved
    for name in ("user", "tweet"):
        data = pq.read_table(f"{export_dir}/{name}.parquet")
        assert data.column("id").to_pylist() == list(range(len(tables[name])))
        np.testing.assert_array_equal(np.array(data.column("vector").to_pylist(), dtype=np.float32), tables[name])
    relations = pq.read_table(f"{export_dir}/relations.parquet")
    assert relations.column("name").to_pylist() == ["fav", "follow"]
    np.testing.assert_array_equal(np.array(relations.column("vector").to_pylist(), dtype=np.float32), tables["relations"])
    metadata = json.load(open(f"{export_dir}/embeddings.json"))
    assert metadata["tables"] == {"user": [30, 8], "tweet": [17, 8]} and metadata["checkpoint"].endswith("/7")


@pytest.mark.parametrize("source", ["save_dir", "checkpoint", "export"])
def test_get_embeddings_equals_the_table_rows(saved, source):
    save_dir, export_dir, tables = saved
    path = {"save_dir": save_dir, "checkpoint": f"{save_dir}/7", "export": export_dir}[source]
    found = get_embeddings([16, 3, 3, 0], table="tweet", source=path)
    assert sorted(found) == [0, 3, 16]
    for node, vector in found.items():
        np.testing.assert_array_equal(vector, tables["tweet"][node])
    unit = get_embeddings([5], table="user", source=path, normalize=True)[5]
    np.testing.assert_allclose(unit, tables["user"][5] / np.linalg.norm(tables["user"][5]), rtol=1e-6)


def test_unknown_ids_and_tables_fail_clearly(saved):
    save_dir, export_dir, _ = saved
    with pytest.raises(KeyError, match="id 17 is not in table 'tweet'"):
        get_embeddings([1, 17], table="tweet", source=save_dir)
    with pytest.raises(KeyError, match="id 40 is not in table 'user'"):
        get_embeddings([40], table="user", source=export_dir)
    with pytest.raises(KeyError, match=r"has no table 'post'; tables: \['tweet', 'user'\]"):
        get_embeddings([1], table="post", source=save_dir)
    with pytest.raises(FileNotFoundError, match="neither an embeddings export"):
        get_embeddings([1], table="user", source=export_dir + "/missing")


def brute_force_nearest(matrix, node, k):
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = unit @ unit[node]
    scores[node] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return order.tolist(), scores[order]


@pytest.mark.parametrize("source", ["save_dir", "export"])
def test_nearest_is_exact_across_chunks(saved, source):
    save_dir, export_dir, tables = saved
    result = nearest([4, 11], k=5, table="user", source=save_dir if source == "save_dir" else export_dir, chunk_rows=4)
    for node in (4, 11):
        ids, scores = brute_force_nearest(tables["user"], node, 5)
        assert [i for i, _ in result[node]] == ids
        np.testing.assert_allclose([s for _, s in result[node]], scores, rtol=1e-5)
    assert len(nearest([2], k=100, table="tweet", source=export_dir)[2]) == 16  # all other rows


def test_command_line(saved, capsys, tmp_path):
    save_dir, _, tables = saved
    main(["export", "--source", save_dir, "--out_dir", str(tmp_path / "out"), "--table", "tweet"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["embeddings.json", "relations.parquet", "tweet.parquet"]
    capsys.readouterr()
    main(["get", "--source", str(tmp_path / "out"), "--table", "tweet", "--ids", "2", "5"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == [2, 5]
    np.testing.assert_allclose(lines[1]["vector"], tables["tweet"][5], atol=1e-6)
    main(["nearest", "--source", save_dir, "--table", "user", "--ids", "9", "--k", "3"])
    line = json.loads(capsys.readouterr().out)
    assert [n["id"] for n in line["nearest"]] == brute_force_nearest(tables["user"], 9, 3)[0]


def test_export_names_the_reverse_relations_of_a_relation_aware_model(tmp_path):
    from tml.common.checkpointing import save_state
    from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss

    config = model_config(operators=("translation", "diagonal")).model_copy(update={"relation_aware": True})
    model = TwhinModelAndLoss(TwhinModel(config, device="cpu"))
    checkpoint = str(tmp_path / "run" / "3")
    save_state(checkpoint, {"model": model}, no_dist=True)
    export_embeddings(checkpoint, str(tmp_path / "out"), relation_names=["fav", "follow"])
    relations = pq.read_table(f"{tmp_path}/out/relations.parquet")
    assert relations.column("name").to_pylist() == ["fav", "follow", "fav:reverse", "follow:reverse"]
    np.testing.assert_array_equal(np.array(relations.column("vector").to_pylist(), dtype=np.float32),
                                  model.model.all_trans_embs.detach().numpy())
