"""Per-rank sharding: disjoint shares that together cover a pass, by files or by row groups."""
from __future__ import annotations

import pytest
from recap_data_fixtures import make_config, write_files, write_schema

from tml.projects.home.recap.data.dataset import RecapDataset, per_rank_batch_size
from tml.projects.home.recap.data.parquet_reader import ReadUnit
from tml.projects.home.recap.data.sharding import pass_units, shuffled_files, units_for_rank

FILES = [f"f{i}" for i in range(5)]


def test_files_split_disjoint_and_covering():
    shares = [units_for_rank(FILES, rank, 2, row_group_count=lambda path: 1) for rank in range(2)]
    assert shares[0] == [ReadUnit("f0"), ReadUnit("f2"), ReadUnit("f4")]
    assert shares[1] == [ReadUnit("f1"), ReadUnit("f3")]


def test_row_groups_when_fewer_files_than_ranks():
    counts = {"a": 3, "b": 2}
    shares = [units_for_rank(["a", "b"], rank, 3, row_group_count=counts.__getitem__) for rank in range(3)]
    # (a,0) (a,1) (a,2) (b,0) (b,1) dealt round-robin to 3 ranks
    assert shares == [
        [ReadUnit("a", (0,)), ReadUnit("b", (0,))],
        [ReadUnit("a", (1,)), ReadUnit("b", (1,))],
        [ReadUnit("a", (2,))],
    ]


def test_too_few_row_groups_for_the_ranks():
    with pytest.raises(ValueError, match="1 files with 2 row groups in all cannot be shared by 4 ranks"):
        units_for_rank(["a"], 0, 4, row_group_count=lambda path: 2)


def test_pass_order_is_shared_by_ranks_and_changes_per_pass():
    files = [f"f{i}" for i in range(20)]
    assert shuffled_files(files, seed=3, pass_index=0) == shuffled_files(files, seed=3, pass_index=0)
    assert shuffled_files(files, seed=3, pass_index=0) != shuffled_files(files, seed=3, pass_index=1)
    assert sorted(shuffled_files(files, seed=3, pass_index=1)) == sorted(files)
    for pass_index in range(3):
        shares = [pass_units(files, 3, pass_index, rank, 3, lambda path: 1) for rank in range(3)]
        paths = [unit.path for share in shares for unit in share]
        assert sorted(paths) == sorted(files)


def test_per_rank_batch_size():
    assert per_rank_batch_size(128, 4) == 32
    with pytest.raises(ValueError, match="global_batch_size 130 is not divisible by the world size 4"):
        per_rank_batch_size(130, 4)


def _rows_seen(dataset: RecapDataset) -> list[int]:
    return [int(row) for batch in dataset for row in batch.discrete_features[:, 0]]


@pytest.mark.parametrize("rows_per_file, rows_per_row_group", [([10, 10, 10], 1000), ([40], 10)])
def test_two_ranks_read_disjoint_rows_covering_a_pass(tmp_path, rows_per_file, rows_per_row_group):
    schema = write_schema(str(tmp_path))
    write_files(str(tmp_path / "data"), schema, rows_per_file, rows_per_row_group)
    config = make_config(schema, f"{tmp_path}/data/*.parquet", global_batch_size=4, examples_shuffle_buffer_size=8)
    seen = [_rows_seen(RecapDataset(config, rank=rank, world_size=2)) for rank in range(2)]
    assert set(seen[0]).isdisjoint(seen[1])
    assert len(seen[0]) == len(set(seen[0])) and len(seen[1]) == len(set(seen[1]))
    assert sorted(seen[0] + seen[1]) == list(range(sum(rows_per_file)))  # every share is a multiple of 2 rows
    assert seen[0] != sorted(seen[0])  # rows were shuffled within the rank


def test_default_rank_comes_from_the_process_group(tmp_path, process_group):
    schema = write_schema(str(tmp_path))
    write_files(str(tmp_path / "data"), schema, [6])
    dataset = RecapDataset(make_config(schema, f"{tmp_path}/data/*.parquet", global_batch_size=2))
    assert dataset.batch_size == 2 and sorted(_rows_seen(dataset)) == list(range(6))
