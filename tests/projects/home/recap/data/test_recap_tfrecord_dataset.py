"""RecapDataset reads the original's gzip TFRecord files directly: the same batches as from Parquet
files of the same rows, through the same preprocessing; fewer files than ranks are shared by stripes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from recap_data_fixtures import RENAMES, make_config, write_rows, write_schema
from recap_tfrecords import write_tfrecord

from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.data.tfrecord_reader import STRIPES

pytest.importorskip("tfrecord")

PREPROCESS = {"truncate_and_slice": {"continuous_feature_truncation": 4, "binary_feature_truncation": 3}}


def _fields(batch) -> dict[str, object]:
    fields = {}
    for name, value in batch.as_dict().items():
        if isinstance(value, torch.Tensor):
            fields[name] = value
        elif value is not None and hasattr(value, "to_dict"):  # KeyedJaggedTensor
            fields[name] = {key: (jagged.values(), jagged.lengths()) for key, jagged in value.to_dict().items()}
    return fields


def _assert_same(left, right) -> None:
    assert left.keys() == right.keys()
    for name in left:
        if isinstance(left[name], dict):
            for key, (values, lengths) in left[name].items():
                torch.testing.assert_close(values, right[name][key][0], rtol=0, atol=0)
                torch.testing.assert_close(lengths, right[name][key][1], rtol=0, atol=0)
        else:
            torch.testing.assert_close(left[name], right[name], rtol=0, atol=0, msg=name)


def test_gzip_tfrecords_give_the_batches_parquet_gives(tmp_path):
    schema = write_schema(str(tmp_path))
    (tmp_path / "tf").mkdir()
    for index, ids in enumerate((np.arange(0, 12), np.arange(12, 20))):
        write_tfrecord(tmp_path / "tf" / f"part-{index}.gz", schema, ids)
        write_rows(str(tmp_path / "pq" / f"part-{index}.parquet"), schema, ids)
    options = dict(
        global_batch_size=4,
        preprocess=PREPROCESS,
        tasks={"task.a": {"neg_downsampling_rate": 0.5}, "task.b": {}},
        seg_dense_schema={"schema_path": schema, "features": ["ids.varlen"], "renamed_features": RENAMES},
    )
    from_tfrecords = RecapDataset(make_config(schema, f"{tmp_path}/tf/*.gz", **options),
                                  sparse_feature_names=["ids.varlen"])
    from_parquet = RecapDataset(make_config(schema, f"{tmp_path}/pq/*.parquet", **options),
                                sparse_feature_names=["ids.varlen"])
    tfrecord_batches, parquet_batches = list(from_tfrecords), list(from_parquet)
    assert len(tfrecord_batches) == len(parquet_batches) == 5
    for left, right in zip(tfrecord_batches, parquet_batches):
        _assert_same(_fields(left), _fields(right))
    assert tfrecord_batches[0].continuous_features.shape == (4, 4)  # truncated from 6
    assert from_tfrecords.torch_element_spec == from_parquet.torch_element_spec


def test_one_file_is_shared_by_ranks_in_stripes(tmp_path):
    schema = write_schema(str(tmp_path))
    rows = 2 * STRIPES + 6
    write_tfrecord(tmp_path / "only.tfrecord.gz", schema, np.arange(rows))
    seen = []
    for rank in range(2):
        config = make_config(schema, f"{tmp_path}/only.tfrecord.gz", global_batch_size=2)
        dataset = RecapDataset(config, rank=rank, world_size=2)
        seen.append([int(i) for batch in dataset for i in batch.discrete_features[:, 0].tolist()])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(rows))


def test_a_corrupt_tfrecord_names_the_file(tmp_path):
    schema = write_schema(str(tmp_path))
    write_tfrecord(tmp_path / "bad.gz", schema, np.arange(4), gzipped=False)  # a .gz that is not gzip is read raw
    data = bytearray((tmp_path / "bad.gz").read_bytes())
    data[30] ^= 0xFF
    (tmp_path / "bad.gz").write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"reading .*bad.gz failed: .*bad.gz: record 0 is corrupt"):
        list(RecapDataset(make_config(schema, f"{tmp_path}/bad.gz", global_batch_size=2)))


def test_vectorised_decode_equals_the_per_value_parse(tmp_path):
    """Against tfrecord_import's example-by-example parse, with absent features, negative and large
    int64s, empty variable-length lists and bytes."""
    from recap_data_fixtures import SCHEMA

    from tml.projects.home.recap.data.segdense import load_segdense_schema
    from tml.projects.home.recap.data.tfrecord_decode import decode_examples, decode_varints
    from tml.projects.home.recap.data.tfrecord_import import examples_to_columns, read_records

    schema = write_schema(str(tmp_path))
    features = list(load_segdense_schema(schema).values())
    write_tfrecord(tmp_path / "a.gz", schema, np.arange(7), skip=("user_emb", "task.b"))
    write_tfrecord(tmp_path / "b.gz", schema, np.arange(7, 12))
    records = list(read_records(str(tmp_path / "a.gz"))) + list(read_records(str(tmp_path / "b.gz")))
    expected, actual = examples_to_columns(records, features, "x"), decode_examples(records, features, "x")
    assert len(SCHEMA) == len(actual)
    for name, column in expected.items():
        if hasattr(column, "offsets"):
            np.testing.assert_array_equal(actual[name].offsets, column.offsets)
            np.testing.assert_array_equal(actual[name].values, column.values)
        else:
            assert actual[name].dtype == column.dtype, name
            np.testing.assert_array_equal(actual[name], column)
    numbers = [0, 1, 127, 128, 300, -1, -(2**63), 2**63 - 1, 2**40]
    encoded = b""
    for number in numbers:
        value = number & (2**64 - 1)
        while True:
            byte, value = value & 0x7F, value >> 7
            encoded += bytes([byte | (0x80 if value else 0)])
            if not value:
                break
    assert decode_varints(encoded)[0].tolist() == numbers
