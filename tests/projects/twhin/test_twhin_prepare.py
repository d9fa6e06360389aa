
import pyarrow.parquet as pq
import pytest
import yaml

from tml.core.config import load_config_from_yaml
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.reader import read_edges
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.scripts import prepare_movielens, prepare_nations
from tml.projects.twhin.scripts.package_data import package_data_dir
from twhin_helpers import CONFIG_DIR
from installed import installed


def column(path, name):
    return pq.read_table(path).column(name).to_pylist()


def test_nations_conversion_numbers_entities_and_relations_by_name(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.txt").write_text("usa\tembassy\tuk\nuk\taid\tegypt\n")
    (source / "valid.txt").write_text("egypt\tembassy\tusa\n")
    (source / "test.txt").write_text("\nusa\taid\tegypt\n")
    counts = prepare_nations.prepare_nations(str(source), str(tmp_path / "out"))
    assert counts == {"entities": 3, "relations": 2, "train": 2, "valid": 1, "test": 1}
    assert column(tmp_path / "out/mapping/country.parquet", "key") == ["egypt", "uk", "usa"]
    assert column(tmp_path / "out/mapping/relations.parquet", "key") == ["aid", "embassy"]
    train = tmp_path / "out/train/part-00000.parquet"
    assert (column(train, "lhs"), column(train, "rel"), column(train, "rhs")) == ([2, 1], [1, 0], [1, 0])


def test_nations_rejects_malformed_lines(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("a\tb\tc\n")
    (tmp_path / "valid.txt").write_text("a\tb\n")
    with pytest.raises(ValueError, match=r"valid\.txt:1: expected 'head<TAB>relation<TAB>tail'"):
        prepare_nations.prepare_nations(str(tmp_path), str(tmp_path / "out"))


def write_recbole(folder):
    folder.mkdir()
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t1\n2\t10\t1\t2\n1\t20\t3\t3\n10\t20\t4\t4\n"
    )
    (folder / "ml-100k.link").write_text("item_id:token\tentity_id:token\n10\tm.ten\n20\tm.twenty\n")
    (folder / "ml-100k.kg").write_text(
        "head_id:token\trelation_id:token\ttail_id:token\n"
        "m.ten\tfilm.film.genre\tm.drama\n"
        "m.twenty\tfilm.film.genre\tm.comedy\n"
        "m.ten\tfilm.film.sequel\tm.twenty\n"
        "m.ten\tfilm.film.sequel\tm.other\n"
    )


def test_movielens_graph_types_nodes_and_names_relations(tmp_path):
    write_recbole(tmp_path / "src")
    graph = prepare_movielens.prepare_movielens(str(tmp_path / "src"), str(tmp_path / "out"))
    assert graph["tables"] == {"user": 3, "movie": 2, "entity": 3}
    names = [(r["name"], r["lhs"], r["rhs"], r["edges"]) for r in graph["relations"]]
    assert names == [
        ("liked", "user", "movie", 2),  # ratings 5 and 4
        ("disliked", "user", "movie", 1),  # rating 1; the 3 is dropped
        ("film.film.genre", "movie", "entity", 2),
        ("film.film.sequel:movie-entity", "movie", "entity", 1),
        ("film.film.sequel:movie-movie", "movie", "movie", 1),
    ]
    assert column(tmp_path / "out/mapping/user.parquet", "key") == ["1", "2", "10"]
    assert column(tmp_path / "out/mapping/entity.parquet", "key") == ["m.comedy", "m.drama", "m.other"]
    assert graph["edges"]["train"] + graph["edges"]["valid"] + graph["edges"]["test"] == 3 + 4
    schema = GraphSchema.build(graph["tables"], [(r["name"], r["lhs"], r["rhs"]) for r in graph["relations"]])
    for split in ("train", "valid", "test"):
        read_edges(str(tmp_path / f"out/{split}/*.parquet"), schema)  # every id fits its table
    kg = read_edges(str(tmp_path / "out/train/*.parquet"), schema)
    assert sorted(kg.rel.tolist()).count(4) == 1  # sequel m.ten -> m.twenty is movie 0 -> movie 1
    assert yaml.safe_load(open(tmp_path / "out/graph.yaml")) == graph


def test_missing_package_says_how_to_install():
    with pytest.raises(FileNotFoundError, match=r"'no-such-dataset-pkg' is not installed.*pip install --no-deps no-such-dataset-pkg==1\.0"):
        package_data_dir("no-such-dataset-pkg", "1.0", "data")


@pytest.mark.skipif(not installed("pykeen"), reason="pykeen (data only) is not installed")
def test_real_nations(tmp_path):
    prepare_nations.main(["--out_dir", str(tmp_path)])
    assert len(column(tmp_path / "mapping/country.parquet", "key")) == 14
    assert len(column(tmp_path / "mapping/relations.parquet", "key")) == 55
    assert [pq.read_metadata(tmp_path / f"{s}/part-00000.parquet").num_rows for s in ("train", "valid", "test")] == [1592, 199, 201]
    config = load_config_from_yaml(TwhinConfig, str(CONFIG_DIR / "nations.yaml"))
    relations = [r.name for r in config.model.relations]
    assert relations == column(tmp_path / "mapping/relations.parquet", "key")


@pytest.mark.skipif(not installed("recbole"), reason="recbole (data only) is not installed")
def test_real_movielens_matches_its_config(tmp_path):
    prepare_movielens.main(["--out_dir", str(tmp_path)])
    graph = yaml.safe_load(open(tmp_path / "graph.yaml"))
    config = load_config_from_yaml(TwhinConfig, str(CONFIG_DIR / "movielens.yaml"))
    assert config.model.table_sizes == graph["tables"]
    assert [(r.name, r.lhs, r.rhs) for r in config.model.relations] == [(r["name"], r["lhs"], r["rhs"]) for r in graph["relations"]]
    assert graph["edges"] == {"train": 157200, "valid": 3642, "test": 3644}
