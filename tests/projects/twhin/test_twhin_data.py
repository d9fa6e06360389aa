import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.data import create_dataset
from tml.projects.twhin.data.edges import EdgesDataset, edges_to_batch, edges_to_batches
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


def test_layout_puts_each_chunks_nodes_then_its_uniform_draws_under_the_tables_key():
    schema = GraphSchema.build({"user": 50, "author": 40}, [("likes", "user", "author"), ("follows", "user", "user")])
    edges = EdgeArrays.from_lists(lhs=[0, 2, 2, 3, 4, 5], rel=[0, 0, 0, 0, 0, 0], rhs=[3, 1, 1, 0, 7, 8])
    batch = edges_to_batch(edges, schema, in_batch_negatives=2, global_negatives=3, chunk_size=3,
                           rng=np.random.default_rng(0))
    layout = batch.layout
    assert (layout.num_chunks, layout.chunk_size, layout.block_size, layout.side_lookups) == (2, 3, 6, 12)
    assert batch.labels.tolist() == [1] * 6 and batch.weights.tolist() == [1] * 6
    assert batch.nodes.keys() == ["user", "author"] and batch.nodes.length_per_key() == [12, 12]
    assert batch.nodes.stride() == 24  # "user" is both sides of "follows": a batch of it gets 2 x 12 lookups
    assert batch.nodes["user"].lengths().tolist() == [1] * 12 + [0] * 12
    lhs, rhs = batch.side_ids("lhs"), batch.side_ids("rhs")
    assert lhs[:, :3].tolist() == [[0, 2, 2], [3, 4, 5]] and rhs[:, :3].tolist() == [[3, 1, 1], [0, 7, 8]]
    assert (lhs[:, 3:] < 50).all() and (rhs[:, 3:] < 40).all()  # uniform draws from the side's table
    assert [ids.tolist() for ids in batch.edge_nodes()] == [[0, 2, 2, 3, 4, 5], [3, 1, 1, 0, 7, 8]]
    # Negatives of the edge at each chunk position: the first N = 2 nodes but its own, and the 3 draws.
    assert layout.negative_mask.int().tolist() == [[0, 1, 0, 1, 1, 1], [1, 0, 0, 1, 1, 1], [1, 1, 0, 1, 1, 1]]
    assert layout.negatives_per_edge.tolist() == [4, 4, 5]


def test_same_table_layout_holds_the_lhs_side_then_the_rhs_side():
    schema = GraphSchema.build({"user": 50}, [("follows", "user", "user")])
    edges = EdgeArrays.from_lists(lhs=[1, 2, 3, 4], rel=[0] * 4, rhs=[11, 12, 13, 14])
    batch = edges_to_batch(edges, schema, in_batch_negatives=2, global_negatives=1, chunk_size=2)
    values = batch.nodes["user"].values()
    assert values[[0, 1, 3, 4]].tolist() == [1, 2, 3, 4] and values[[6, 7, 9, 10]].tolist() == [11, 12, 13, 14]
    assert batch.layout.start("rhs") == 6 and batch.layout.sides_of("user") == ("lhs", "rhs")


def test_pooled_rows_by_key_are_the_layouts_rows():
    """Pooling the KJT with an EmbeddingBagCollection and reading each key's rows in layout order
    gives each lookup's own row."""
    schema = GraphSchema.build({"user": 5, "author": 3}, [("likes", "user", "author")])
    edges = EdgeArrays.from_lists(lhs=[0, 2, 4, 3], rel=[0, 0, 0, 0], rhs=[2, 1, 0, 1])
    batch = edges_to_batch(edges, schema, in_batch_negatives=2, global_negatives=3, chunk_size=2,
                           rng=np.random.default_rng(0))
    ebc = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=name, num_embeddings=size, embedding_dim=4, feature_names=[name])
                for name, size in (("user", 5), ("author", 3))]
    )
    pooled = ebc(batch.nodes).to_dict()
    for side, table in (("lhs", "user"), ("rhs", "author")):
        ids = batch.side_ids(side).reshape(-1)
        expected = ebc.embedding_bags[table].weight[ids]
        torch.testing.assert_close(pooled[table][: len(ids)], expected)


def test_batches_hold_one_table_pair_and_padding_weighs_nothing():
    edges = EdgeArrays.from_lists(lhs=list(range(7)), rel=[0, 1, 0, 1, 0, 0, 1], rhs=[1, 2, 3, 4, 5, 6, 7])
    batches = edges_to_batches(edges, SCHEMA, 4, in_batch_negatives=2, chunk_size=2, rng=np.random.default_rng(0))
    assert [(b.layout.lhs_table, b.layout.rhs_table) for b in batches] == [(0, 1), (0, 0)]
    fav, follow = batches
    assert fav.rels.tolist() == [0] * 4 and fav.edge_nodes()[0].tolist() == [0, 2, 4, 5]
    assert follow.weights.tolist() == [1, 1, 1, 0] and follow.rels.tolist() == [1] * 4  # padded with a follow edge
    assert follow.edge_nodes()[0][:3].tolist() == [1, 3, 6]


def test_chunk_size_must_hold_the_in_batch_negatives():
    with pytest.raises(ValueError, match="in_batch_negatives=5 needs chunks of at least as many edges; chunk_size=4"):
        edges_to_batches(EdgeArrays.from_lists([0], [0], [0]), SCHEMA, 8, in_batch_negatives=5, chunk_size=4)


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
    # 21 edges over 2 ranks: shares of 10 and 11 edges of two table pairs; batches of 6 (whole chunks
    # of 3) per table pair: at most ceil(11 / 6) + 1 = 3 batches, the same on both ranks.
    seen = []
    for rank in (0, 1):
        batches = list(EdgesDataset(three_files, SCHEMA, 5, in_batch_negatives=3, offset=9, rank=rank, world_size=2,
                                    chunk_size=3))
        assert [b.batch_size for b in batches] == [6, 6, 6]
        seen += real_lhs(batches)
    assert sorted(seen) == list(range(9, 30))


def test_shuffle_is_seeded_per_epoch(three_files):
    dataset = EdgesDataset(three_files, SCHEMA, 30)
    first = [b.nodes.values().tolist() for b in dataset.batches(0)]
    again = [b.nodes.values().tolist() for b in dataset.batches(0)]
    other = [b.nodes.values().tolist() for b in dataset.batches(1)]
    assert first == again and first != other
    assert len(list(dataset.dataloader(num_epochs=3))) == 3 * len(dataset)
    unshuffled = list(EdgesDataset(three_files, SCHEMA, 30, shuffle=False))
    assert unshuffled[0].edge_nodes()[0][:15].tolist() == list(range(0, 30, 2))  # fav (rel 0) edges in order
    assert unshuffled[1].edge_nodes()[0][:15].tolist() == list(range(1, 30, 2))


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
    assert dataset.num_edges == 12 and len(batches) == 3  # 6 edges a rank, 2 table pairs, batches of 4
    assert sorted(real_lhs(batches)) == list(range(8, 14))
    assert batches[0].layout.in_batch_negatives == 3 and batches[0].layout.uniform_negatives == 2


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
        return [(b.rels.tolist(), b.nodes.values().tolist(), b.weights.tolist()) for b in loader]

    inline = stream(0)
    assert len(inline) == 2 * 6  # 15 + 15 edges of two table pairs: 3 batches of 7 each per epoch
    assert stream(2) == inline


def test_a_bad_file_fails_when_the_prefetching_loader_is_made(tmp_path):
    write_edges(str(tmp_path / "bad.parquet"), [0], [0], [10_000])
    with pytest.raises(ValueError, match="bad.parquet"):
        EdgesDataset(str(tmp_path / "*.parquet"), SCHEMA, 1, prefetch=2).dataloader()
