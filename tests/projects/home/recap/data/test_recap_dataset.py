"""RecapDataset end to end on small files whose rows carry their ids (row id = discrete[:, 0])."""
from __future__ import annotations

import itertools
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from recap_data_fixtures import TASKS, make_config, row_columns, write_files, write_rows, write_schema

from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.data.parquet_writer import to_table
from tml.projects.home.recap.data.segdense import load_segdense_schema


@pytest.fixture
def schema(tmp_path) -> str:
    return write_schema(str(tmp_path))


def _ids(batch) -> list[int]:
    return batch.discrete_features[:, 0].tolist()


def _inputs(tmp_path) -> str:
    return f"{tmp_path}/data/*.parquet"


def test_batches_in_order_without_shuffle(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [10])
    batches = list(RecapDataset(make_config(schema, _inputs(tmp_path), global_batch_size=4)))
    assert [_ids(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the partial last batch is dropped
    batch = batches[1]
    assert batch.label_names == TASKS
    assert batch.labels.dtype == torch.int64 and batch.labels.tolist() == [[0, 0], [1, 0], [0, 1], [1, 0]]
    assert batch.label("task.b").tolist() == [0, 0, 1, 0]
    assert torch.equal(batch.weights, torch.ones(4, 2))
    assert batch.continuous_features[:, 0].tolist() == [40.0, 50.0, 60.0, 70.0]
    assert batch.user_embedding[:, 1].tolist() == [-4.0, -5.0, -6.0, -7.0]
    assert batch.author_embedding.shape == (0, 0)  # absent embedding: the original's placeholder
    moved = batch.to(torch.device("cpu"))
    assert moved.label_names == TASKS and torch.equal(moved.labels, batch.labels)


def test_sampling_rate_weights_and_element_spec(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [4])
    config = make_config(
        schema, _inputs(tmp_path), tasks={"task.a": {"pos_downsampling_rate": 0.5, "neg_downsampling_rate": 0.25}, "task.b": {}},
        preprocess={"truncate_and_slice": {"continuous_feature_truncation": 3}},
    )
    dataset = RecapDataset(config)
    batch = next(iter(dataset))
    assert batch.weights.tolist() == [[4.0, 1.0], [2.0, 1.0], [4.0, 1.0], [2.0, 1.0]]  # task.a = id % 2
    assert batch.continuous_features.shape == (4, 3)
    assert dataset.torch_element_spec["continuous_features"] == torch.Size([-1, 3])
    assert dataset.torch_element_spec["labels"] == torch.Size([-1, 2])
    # Derived from the config alone, the spec names every model input and its width as batches have it.
    model_inputs = {"continuous_features", "binary_features", "discrete_features", "user_embedding", "labels"}
    assert set(dataset.torch_element_spec) == model_inputs
    for name, shape in dataset.torch_element_spec.items():
        assert tuple(getattr(batch, name).shape[1:]) == tuple(shape[1:]), name


def test_shuffled_pass_sees_every_row_once_and_seed_reproduces(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [30, 30, 40])
    config = make_config(schema, _inputs(tmp_path), examples_shuffle_buffer_size=16, seed=7)
    first = [_ids(b) for b in RecapDataset(config)]
    again = [_ids(b) for b in RecapDataset(config)]
    other = [_ids(b) for b in RecapDataset(config.model_copy(update={"seed": 8}))]
    assert sorted(itertools.chain(*first)) == list(range(100))
    assert first == again and first != other
    assert list(itertools.chain(*first)) != sorted(itertools.chain(*first))


def test_prefetch_thread_and_inline_give_the_same_stream(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [8, 8])
    config = make_config(schema, _inputs(tmp_path), examples_shuffle_buffer_size=4)
    with_thread = list(itertools.islice(RecapDataset(config, repeat=True), 12))
    inline = list(itertools.islice(RecapDataset(config.model_copy(update={"prefetch": 0}), repeat=True), 12))
    assert [_ids(b) for b in with_thread] == [_ids(b) for b in inline]


def test_repeat_reshuffles_files_every_pass(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [2] * 8)
    seen = list(itertools.chain(*(_ids(b) for b in itertools.islice(RecapDataset(make_config(schema, _inputs(tmp_path)), repeat=True), 12))))
    passes = [seen[i * 16: (i + 1) * 16] for i in range(3)]
    assert all(sorted(one_pass) == list(range(16)) for one_pass in passes)
    assert passes[0] != passes[1] and passes[1] != passes[2]


def test_cache_keeps_rows_after_the_files_are_gone(tmp_path, schema):
    paths = write_files(str(tmp_path / "data"), schema, [8])
    dataset = RecapDataset(make_config(schema, _inputs(tmp_path), cache=True, prefetch=0), repeat=True)
    batches = iter(dataset)
    first_pass = [next(batches) for _ in range(2)]
    os.remove(paths[0])
    second_pass = [next(batches) for _ in range(2)]
    assert sorted(sum((_ids(b) for b in second_pass), [])) == list(range(8))
    assert dataset.stats.passes >= 2 and len(first_pass) == 2


def test_inference_needs_no_labels_and_shapes_inputs_as_training(tmp_path, schema):
    features = [f for f in load_segdense_schema(schema).values() if not f.name.startswith("task.")]
    os.makedirs(tmp_path / "data")
    pq.write_table(to_table(features, row_columns(np.arange(4))), tmp_path / "data" / "x.parquet")
    config = make_config(schema, _inputs(tmp_path), preprocess={"truncate_and_slice": {"continuous_feature_truncation": 2}})
    batch = next(iter(RecapDataset(config, mode="inference")))
    assert batch.labels is None and batch.label_names == ()
    assert torch.equal(batch.weights, torch.zeros(4, 1))
    assert batch.continuous_features.shape == (4, 2)  # truncate_and_slice shapes inputs at inference too


def test_sparse_features_and_extracted_features(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [4])
    config = make_config(
        schema, _inputs(tmp_path),
        seg_dense_schema={"schema_path": schema, "features": ["ids.varlen"],
                          "renamed_features": {"continuous": "cont_vals", "binary": "bin_vals", "discrete": "disc_vals", "row_id": "meta.row_id"}},
        preprocess={"extract_features": {"extract_feature_table": [{"name": "c2", "source_tensor": "continuous", "index": 2}]}},
    )
    batch = next(iter(RecapDataset(config, sparse_feature_names=["row_id", "ids.varlen"])))
    kjt = batch.sparse_features
    assert kjt.keys() == ["row_id", "ids.varlen"]
    assert kjt["row_id"].values().tolist() == [0, 1, 2, 3]
    assert kjt["ids.varlen"].lengths().tolist() == [0, 1, 2, 0]  # id % 3 copies of the id
    assert kjt["ids.varlen"].values().tolist() == [1, 2, 2]
    assert batch.extracted_feature_names == ("c2",) and batch.extracted_feature("c2").tolist() == [2.0, 12.0, 22.0, 32.0]


def test_downsample_negatives_reads_multiplier_times_the_batch(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [8])
    config = make_config(
        schema, _inputs(tmp_path), global_batch_size=2,
        preprocess={"downsample_negatives": {"batch_multiplier": 2, "engagements_list": ["task.b"], "num_engagements": 2}},
    )
    dataset = RecapDataset(config)
    batches = list(dataset)
    assert dataset.read_rows == 4 and [_ids(b) for b in batches] == [[0, 3], [6, 4]]  # task.b = (id % 3 == 0)
    assert batches[0].weights.tolist() == [[1.0, 1.0], [1.0, 1.0]]  # 2 positives of 4 rows fill the batch
    assert batches[1].weights.tolist() == [[1.0, 1.0], [3.0, 3.0]]  # 1 positive: negatives weigh (4-1)/(2-1)


def test_missing_column_names_column_file_and_schema(tmp_path, schema):
    features = [f for f in load_segdense_schema(schema).values() if f.name != "task.b"]
    os.makedirs(tmp_path / "data")
    path = tmp_path / "data" / "x.parquet"
    pq.write_table(to_table(features, row_columns(np.arange(4))), path)
    with pytest.raises(ValueError, match=re.escape(f"column 'task.b' is missing from {path}; expected schema (from segdense {schema}):") + r"(.|\n)*cont_vals: fixed_size_list<item: float>\[6\]"):
        list(RecapDataset(make_config(schema, _inputs(tmp_path))))


def _write_with_column(path, schema, name: str, array: pa.Array) -> None:
    table = to_table(list(load_segdense_schema(schema).values()), row_columns(np.arange(len(array))))
    table = table.set_column(table.schema.get_field_index(name), name, array)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def test_wrong_fixed_list_length_names_file_column_and_lengths(tmp_path, schema):
    path = tmp_path / "data" / "x.parquet"
    _write_with_column(path, schema, "cont_vals", pa.array([[1.0] * 5] * 4, pa.list_(pa.float32(), 5)))
    with pytest.raises(ValueError, match=re.escape(f"column 'cont_vals' in {path}: lists have length 5; expected length 6")):
        list(RecapDataset(make_config(schema, _inputs(tmp_path))))


def test_wrong_variable_list_length_names_the_row(tmp_path, schema):
    path = tmp_path / "data" / "x.parquet"
    _write_with_column(path, schema, "cont_vals", pa.array([[1.0] * 6, [1.0] * 7, [1.0] * 6, [1.0] * 6], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match=re.escape(f"column 'cont_vals' in {path}: row 1 has a list of length 7; expected length 6")):
        list(RecapDataset(make_config(schema, _inputs(tmp_path))))


def test_plain_lists_and_nulls_are_read_with_defaults(tmp_path, schema):
    path = tmp_path / "data" / "x.parquet"
    _write_with_column(path, schema, "bin_vals", pa.array([[1, 1, 1, 1], None, [0, 1, None, 1], [1, 0, 0, 1]], pa.list_(pa.int64(), 4)))
    batch = next(iter(RecapDataset(make_config(schema, _inputs(tmp_path)))))
    assert batch.binary_features.tolist() == [[1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 0, 1]]


def test_ignore_data_errors_skips_and_counts_bad_files(tmp_path, schema):
    write_rows(str(tmp_path / "data" / "a_good.parquet"), schema, np.arange(8))
    (tmp_path / "data" / "b_garbage.parquet").write_bytes(b"not parquet at all")
    _write_with_column(tmp_path / "data" / "c_short.parquet", schema, "cont_vals", pa.array([[1.0] * 5] * 4, pa.list_(pa.float32(), 5)))
    config = make_config(schema, _inputs(tmp_path), ignore_data_errors=True)
    dataset = RecapDataset(config)
    ids = sorted(sum((_ids(b) for b in dataset), []))
    assert ids == list(range(8))
    assert sorted(os.path.basename(path) for path in dataset.stats.bad_files) == ["b_garbage.parquet", "c_short.parquet"]
    with pytest.raises(RuntimeError, match="reading .*b_garbage.parquet failed: .*set ignore_data_errors: true"):
        list(RecapDataset(config.model_copy(update={"ignore_data_errors": False, "num_files_to_keep": 2})))


def test_nonfinite_continuous_values_pass_through_and_are_counted(tmp_path, schema):
    values = np.zeros((4, 6), dtype=np.float32)
    values[1, 2], values[3, 0], values[3, 5] = np.nan, np.inf, -np.inf
    path = tmp_path / "data" / "x.parquet"
    _write_with_column(path, schema, "cont_vals", pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 6))
    dataset = RecapDataset(make_config(schema, _inputs(tmp_path)))
    batch = next(iter(dataset))
    assert np.isnan(batch.continuous_features[1, 2].item()) and batch.continuous_features[3, 0].item() == np.inf
    assert dataset.stats.nonfinite_continuous_values == 3


def test_parallel_reads_and_assembly_cover_the_data(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [12, 12, 12, 12], rows_per_row_group=4)
    config = make_config(
        schema, _inputs(tmp_path), file_batch_size=1, interleave_num_parallel_calls=2, map_num_parallel_calls=2,
        examples_shuffle_buffer_size=8,
    )
    batches = list(RecapDataset(config))
    assert sorted(sum((_ids(b) for b in batches), [])) == list(range(48))


def test_fsspec_memory_files(schema):
    import fsspec

    fs = fsspec.filesystem("memory")
    features = list(load_segdense_schema(schema).values())
    with fs.open("/recap_dataset_test/x.parquet", "wb") as stream:
        pq.write_table(to_table(features, row_columns(np.arange(4))), stream)
    batch = next(iter(RecapDataset(make_config(schema, "memory://recap_dataset_test/*.parquet"))))
    assert _ids(batch) == [0, 1, 2, 3]


def test_mantissa_masking_in_the_pipeline(tmp_path, schema):
    values = np.full((4, 6), 1.0 + 2.0**-23 + 2.0**-10, dtype=np.float32)
    _write_with_column(tmp_path / "data" / "x.parquet", schema, "cont_vals", pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 6))
    renames = {"continuous": "cont_vals", "binary": "bin_vals", "discrete": "disc_vals"}
    config = make_config(schema, _inputs(tmp_path), seg_dense_schema={"schema_path": schema, "renamed_features": renames, "mask_mantissa_features": {"continuous": 13}})
    batch = next(iter(RecapDataset(config)))
    assert torch.all(batch.continuous_features == 1.0 + 2.0**-10)
    bad = {"schema_path": schema, "renamed_features": renames, "mask_mantissa_features": {"discrete": 3}}
    with pytest.raises(ValueError, match="mask_mantissa_features names 'discrete', which must be a float_list feature"):
        RecapDataset(make_config(schema, _inputs(tmp_path), seg_dense_schema=bad))


def test_feature_missing_from_schema_fails_at_construction(tmp_path, schema):
    write_files(str(tmp_path / "data"), schema, [4])
    config = make_config(schema, _inputs(tmp_path), tasks={"task.nope": {}})
    with pytest.raises(ValueError, match=re.escape(f"feature 'task.nope' is missing from segdense schema {schema}")):
        RecapDataset(config)
