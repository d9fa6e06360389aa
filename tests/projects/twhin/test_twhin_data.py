import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.data import create_dataset
from tml.projects.twhin.data.edges import EdgesDataset, edges_to_batch, sample_relation_negatives
from tml.projects.twhin.data.generate_random_graph import main as generate_main
from tml.projects.twhin.data.reader import EdgeArrays, read_edges
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.scripts.package_data import write_edges
from twhin_helpers import CONFIG_DIR, RELATIONS, model_config

SCHEMA = GraphSchema.build({"user": 40, "tweet": 24}, [("fav", "user", "tweet"), ("follow", "user", "user")])


def write(path, lhs, rel, rhs, **extra):
    columns = {"lhs": np.asarray(lhs, dtype=np.int64), "rel": np.asarray(rel, dtype=np.int64),
               "rhs": np.asarray(rhs, dtype=np.int64), **extra}
    pq.write_table(pa.table(columns), str(path), row_group_size=7)
    return str(path)


@pytest.fixture
def three_files(tmp_path):
    """30 edges in files of 10, 5 and 15 rows; lhs = global row number, so rows can be traced."""
    sizes, start = [10, 5, 15], 0
    for index, size in enumerate(sizes):
        rows = np.arange(start, start + size)
        write(tmp_path / f"part-{index}.parquet", rows, rows % 2, rows % 24)
        start += size
    (tmp_path / "_SUCCESS").write_text("")
    return str(tmp_path / "*")


def test_kjt_holds_each_tables_lookups_compactly():
    schema = GraphSchema.build({"user": 4, "author": 4}, [("likes", "user", "author"), ("follows", "user", "user")])
    edges = EdgeArrays.from_lists(lhs=[0, 2, 2, 3], rel=[0, 1, 0, 0], rhs=[3, 1, 1, 0])
    batch = edges_to_batch(edges, schema)
    assert batch.labels.tolist() == [1, 1, 1, 1]
    assert batch.nodes.keys() == ["user", "author"]
    # lookups: lhs u0 u2 u2 u3 | rhs a3 u1 a1 a0 -> 5 user lookups, 3 author lookups, in lookup order
    assert batch.nodes["user"].values().tolist() == [0, 2, 2, 3, 1]
    assert batch.nodes["author"].values().tolist() == [3, 1, 0]
    assert batch.nodes.stride() == 8  # "user" is an lhs and an rhs: it may get all 2B lookups
    assert batch.nodes["user"].lengths().tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert batch.nodes["author"].lengths().tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    # row of lookup i in the pooled [stride, T * D] output viewed as [stride * T, D]: position * T + table
    assert batch.lookup_rows.tolist() == [0, 2, 4, 6, 1, 8, 3, 5]
    tables, ids = batch.lookups()
    assert tables.tolist() == [0, 0, 0, 0, 1, 0, 1, 1] and ids.tolist() == [0, 2, 2, 3, 3, 1, 1, 0]
    assert [ids.tolist() for ids in batch.edge_nodes()] == [[0, 2, 2, 3], [3, 1, 1, 0]]
    assert batch.weights.tolist() == [1, 1, 1, 1]
    assert batch.rels.tolist() == [0, 1, 0, 0]


def test_pooled_rows_follow_lookup_rows():
    """Pooling the KJT with an EmbeddingBagCollection and taking `lookup_rows` gives each lookup's row."""
    schema = GraphSchema.build({"user": 5, "author": 3}, [("likes", "user", "author"), ("follows", "user", "user")])
    edges = EdgeArrays.from_lists(lhs=[0, 2, 4, 3, 1], rel=[0, 1, 0, 1, 1], rhs=[2, 1, 0, 4, 0])
    batch = edges_to_batch(edges, schema, global_negatives=3, rng=np.random.default_rng(0))
    ebc = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=name, num_embeddings=size, embedding_dim=4, feature_names=[name])
                for name, size in (("user", 5), ("author", 3))]
    )
    pooled = ebc(batch.nodes).values()
    rows = pooled.reshape(-1, 4).index_select(0, batch.lookup_rows)
    tables, ids = batch.lookups()
    weights = [ebc.embedding_bags["user"].weight, ebc.embedding_bags["author"].weight]
    expected = torch.stack([weights[t][i] for t, i in zip(tables.tolist(), ids.tolist())])
    torch.testing.assert_close(rows, expected)
    assert rows.shape == (2 * 5 + 2 * 5 * 3, 4)


def test_relation_negatives_are_the_relations_edges_without_replacement_when_possible():
    rels = np.array([0, 1, 0, 0, 2, 1, 0, 0, 0, 0, 0])  # relation 0: 8 edges, 1: 2, 2: 1, 3: none
    rng = np.random.default_rng(1)
    negatives = sample_relation_negatives(rels, 4, 3, rng)
    assert negatives.shape == (4, 3)
    members = [set(np.flatnonzero(rels == r).tolist()) for r in range(4)]
    assert set(negatives[0].tolist()) <= members[0] and len(set(negatives[0].tolist())) == 3  # distinct
    assert sorted(negatives[1].tolist()) in ([1, 1, 5], [1, 5, 5])  # the permutation, repeated
    assert negatives[2].tolist() == [4, 4, 4] and negatives[3].tolist() == [-1, -1, -1]
    # Uniform over the relation's edges: each of relation 0's 8 edges drawn ~3/8 of the time.
    counts = np.bincount(np.concatenate([sample_relation_negatives(rels, 4, 3, rng)[0] for _ in range(4000)]),
                         minlength=11)
    assert counts[[1, 4, 5]].sum() == 0
    np.testing.assert_allclose(counts[sorted(members[0])] / 4000, 3 / 8, atol=0.03)


def test_window_and_rank_shares_are_disjoint_and_cover(three_files):
    everything = read_edges(three_files, SCHEMA)
    assert everything.lhs.tolist() == list(range(30))
    window = read_edges(three_files, SCHEMA, offset=8, limit=13)
    assert window.lhs.tolist() == list(range(8, 21))
    for world_size in (1, 2, 3, 4):
        parts = [read_edges(three_files, SCHEMA, offset=8, limit=13, rank=r, world_size=world_size).lhs for r in range(world_size)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(8, 21))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def real_lhs(batches):
    return [lhs for b in batches for lhs, w in zip(b.edge_nodes()[0].tolist(), b.weights.tolist()) if w > 0]


def test_every_rank_yields_as_many_batches_of_exactly_batch_size(three_files):
    # 21 edges over 2 ranks: shares of 10 and 11, so 3 batches of 5 each, the last ones padded.
    seen = []
    for rank, real_in_last in ((0, 0), (1, 1)):
        batches = list(EdgesDataset(three_files, SCHEMA, 5, in_batch_negatives=3, offset=9, rank=rank, world_size=2))
        assert [b.batch_size for b in batches] == [5, 5, 5]
        last = batches[-1]
        assert last.weights.tolist() == [1.0] * real_in_last + [0.0] * (5 - real_in_last)
        assert (last.lhs_negatives < max(real_in_last, 1)).all()  # padding is never drawn as a negative
        seen += real_lhs(batches)
    assert sorted(seen) == list(range(9, 30))


def test_shuffle_is_seeded_per_epoch(three_files):
    dataset = EdgesDataset(three_files, SCHEMA, 30)
    first = next(dataset.batches(0)).rels.tolist(), next(dataset.batches(0)).nodes.values().tolist()
    again = next(dataset.batches(0)).rels.tolist(), next(dataset.batches(0)).nodes.values().tolist()
    other = next(dataset.batches(1)).nodes.values().tolist()
    assert first == again and first[1] != other
    assert len(list(dataset.dataloader(num_epochs=3))) == 3
    unshuffled = next(iter(EdgesDataset(three_files, SCHEMA, 30, shuffle=False)))
    assert unshuffled.edge_nodes()[0].tolist() == list(range(30))
    tables, ids = unshuffled.lookups()
    first_two = torch.tensor([0, 30, 1, 31])  # lhs and rhs lookups of edges 0 and 1
    assert tables[first_two].tolist() == [0, 1, 0, 0] and ids[first_two].tolist() == [0, 0, 1, 1]  # fav 0->0, follow 1->1


def test_weight_column_is_used_when_present(tmp_path):
    path = write(tmp_path / "w.parquet", [1, 2], [0, 0], [3, 4], weight=np.array([0.5, 2.0], dtype=np.float32))
    assert read_edges(path, SCHEMA).weight.tolist() == [0.5, 2.0]
    plain = write(tmp_path / "p.parquet", [1, 2], [0, 0], [3, 4])
    assert read_edges(plain, SCHEMA).weight.tolist() == [1.0, 1.0]


def test_id_outside_its_table_names_file_column_value_and_size(tmp_path):
    path = write(tmp_path / "bad.parquet", [1, 2, 3], [0, 0, 1], [3, 24, 39])
    with pytest.raises(ValueError, match=r"bad\.parquet: column 'rhs' has value 24 at row 1, outside table 'tweet' of size 24"):
        read_edges(path, SCHEMA)
    path = write(tmp_path / "neg.parquet", [1, -5], [0, 0], [3, 4])
    with pytest.raises(ValueError, match=r"neg\.parquet: column 'lhs' has value -5 at row 1, outside table 'user' of size 40"):
        read_edges(path, SCHEMA)


def test_row_numbers_count_from_the_start_of_the_file(tmp_path):
    rows = np.arange(20)
    rhs = rows % 24
    rhs[17] = 99
    path = write(tmp_path / "late.parquet", rows, np.zeros(20), rhs)
    with pytest.raises(ValueError, match="value 99 at row 17"):
        read_edges(path, SCHEMA, offset=10)


def test_unknown_relation_index_is_named(tmp_path):
    path = write(tmp_path / "rel.parquet", [1, 2], [0, 2], [3, 4])
    with pytest.raises(ValueError, match=r"rel\.parquet: column 'rel' has value 2 at row 1, which is not a relation index \(the config has 2 relations: 0=fav, 1=follow\)"):
        read_edges(path, SCHEMA)


def test_bad_columns(tmp_path):
    path = str(tmp_path / "float.parquet")
    pq.write_table(pa.table({"lhs": [1.0], "rel": [0], "rhs": [2]}), path)
    with pytest.raises(ValueError, match="column 'lhs' has type double; node and relation ids must be integers"):
        read_edges(path, SCHEMA)
    path = str(tmp_path / "missing.parquet")
    pq.write_table(pa.table({"src": [1], "rel": [0], "rhs": [2]}), path)
    with pytest.raises(ValueError, match=r"no column\(s\) \['lhs'\]"):
        read_edges(path, SCHEMA)
    with pytest.raises(FileNotFoundError, match="matches no Parquet edge file"):
        read_edges(str(tmp_path / "nothing*.parquet"), SCHEMA)


def test_fsspec_paths_and_globs():
    import fsspec

    fs = fsspec.filesystem("memory")
    for index in range(2):
        with fs.open(f"/twhin-test/part-{index}.parquet", "wb") as sink:
            pq.write_table(pa.table({"lhs": [index, index + 2], "rel": [0, 1], "rhs": [5, 6]}), sink)
    try:
        edges = read_edges("memory://twhin-test/*.parquet", SCHEMA)
        assert edges.lhs.tolist() == [0, 2, 1, 3]
        assert read_edges("memory://twhin-test/", SCHEMA, offset=1, limit=2).lhs.tolist() == [2, 1]
    finally:
        fs.rm("/twhin-test", recursive=True)


def test_create_dataset_uses_the_data_config(three_files):
    config = TwhinDataConfig(data_root=three_files, per_replica_batch_size=4, in_batch_negatives=3,
                             global_negatives=2, limit=12, offset=2)
    dataset = create_dataset(config, model_config(), rank=1, world_size=2)
    batches = list(dataset)
    assert dataset.num_edges == 12 and len(batches) == 2
    assert sorted(real_lhs(batches)) == list(range(8, 14))
    assert batches[0].lhs_negatives.shape == (len(RELATIONS), 3) and batches[0].global_negatives == 2


def test_generator_cli_writes_valid_edges_for_a_config(tmp_path):
    out = tmp_path / "graph"
    generate_main(["--out_dir", str(out), "--config_yaml_path", str(CONFIG_DIR / "local.yaml"),
                   "--num_edges", "500", "--num_files", "3", "--weights", "--noise", "0"])
    files = sorted(p.name for p in out.glob("*.parquet"))
    assert files == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    schema = GraphSchema.build({"user": 1000, "tweet": 500},
                               [(n, "user", "tweet") for n in ("fav", "reply", "retweet", "magic_recs")])
    edges = read_edges(str(out / "*.parquet"), schema)  # ids are checked against the tables
    assert len(edges) == 500 and set(edges.rel.tolist()) == {0, 1, 2, 3}
    assert 0.5 <= edges.weight.min() and edges.weight.max() <= 1.5


def test_generator_plants_one_rhs_cluster_per_lhs_and_relation():
    from tml.projects.twhin.data.generate_random_graph import generate_random_graph

    table = generate_random_graph({"a": 30, "b": 400}, [("r", "a", "b"), ("s", "a", "b")], 6000,
                                  num_clusters=4, noise=0.0, seed=3)
    lhs, rel, rhs = (table.column(c).to_numpy() for c in ("lhs", "rel", "rhs"))
    # With 4 clusters, a node's rhs neighbours under one relation all lie in one cluster: a quarter
    # of the table on average, far fewer distinct rhs ids than 400.
    distinct = [len(set(rhs[(lhs == node) & (rel == r)])) for node in range(30) for r in (0, 1)]
    assert max(distinct) < 200
    neighbours = {(node, r): set(rhs[(lhs == node) & (rel == r)]) for node in range(30) for r in (0, 1)}
    overlap = [len(neighbours[(n, 0)] & neighbours[(m, 0)]) for n in range(30) for m in range(n)]
    assert min(overlap) == 0 and max(overlap) > 20  # same-cluster pairs share many, others none


def test_prefetching_dataloader_yields_the_same_batches(three_files):
    def stream(prefetch):
        dataset = EdgesDataset(three_files, SCHEMA, 7, in_batch_negatives=2, prefetch=prefetch)
        loader = dataset.dataloader(num_epochs=2)
        return [(b.rels.tolist(), b.nodes.values().tolist(), b.lhs_negatives.tolist(), b.rhs_negatives.tolist())
                for b in loader]

    inline = stream(0)
    assert len(inline) == 2 * 5  # 30 edges: 5 batches of 7 per epoch (the last one padded)
    assert stream(2) == inline


def test_a_bad_file_fails_when_the_prefetching_loader_is_made(tmp_path):
    write_edges(str(tmp_path / "bad.parquet"), [0], [0], [10_000])
    with pytest.raises(ValueError, match="bad.parquet"):
        EdgesDataset(str(tmp_path / "*.parquet"), SCHEMA, 1, prefetch=2).dataloader()
