"""TFRecord (tf.Example, GZIP as the original wrote them) to Parquet, round trip through RecapDataset."""
from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from recap_data_fixtures import make_config, row_columns, write_schema
from recap_tfrecords import write_tfrecord as _write_tfrecord

from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.data.tfrecord_import import convert_tfrecords, main, parquet_name, read_records

tfrecord = pytest.importorskip("tfrecord", reason="TFRecord import needs the tfrecord package")


def test_round_trip_through_the_dataset(tmp_path):
    schema = write_schema(str(tmp_path))
    (tmp_path / "in").mkdir()
    _write_tfrecord(tmp_path / "in" / "random.tfrecord.gz", schema, np.arange(6))
    _write_tfrecord(tmp_path / "in" / "plain.tfrecord", schema, np.arange(6, 10), gzipped=False)
    outputs = convert_tfrecords([f"{tmp_path}/in/*"], schema, str(tmp_path / "out"))
    assert sorted(p.rsplit("/", 1)[1] for p in outputs) == ["plain.parquet", "random.parquet"]
    table = pq.read_table(tmp_path / "out" / "random.parquet")
    assert table.column("ids.varlen").to_pylist() == [[], [1], [2, 2], [], [4], [5, 5]]
    assert table.column("unused.text").to_pylist() == [b"r0", b"r1", b"r2", b"r3", b"r4", b"r5"]
    config = make_config(schema, f"{tmp_path}/out/*.parquet", global_batch_size=10)
    batch = next(iter(RecapDataset(config)))
    order = np.argsort(batch.discrete_features[:, 0].numpy())
    expected = row_columns(np.arange(10))
    np.testing.assert_array_equal(batch.continuous_features.numpy()[order], expected["cont_vals"])
    np.testing.assert_array_equal(batch.binary_features.numpy()[order], expected["bin_vals"])
    np.testing.assert_array_equal(batch.labels.numpy()[order], np.stack([expected["task.a"], expected["task.b"]], 1))


def test_absent_feature_takes_the_default(tmp_path):
    schema = write_schema(str(tmp_path))
    _write_tfrecord(tmp_path / "x.gz", schema, np.arange(1, 3), skip=("user_emb", "task.b"))
    main(["--schema_path", schema, "--output_dir", str(tmp_path / "out"), str(tmp_path / "x.gz")])
    table = pq.read_table(tmp_path / "out" / "x.parquet")
    assert table.column("user_emb").to_pylist() == [[0.0, 0.0], [0.0, 0.0]]
    assert table.column("task.b").to_pylist() == [0, 0]
    assert table.column("task.a").to_pylist() == [1, 0]


def test_wrong_length_names_file_example_and_lengths(tmp_path):
    schema = write_schema(str(tmp_path))
    writer = tfrecord.TFRecordWriter(str(tmp_path / "bad.tfrecord"))
    writer.write({"cont_vals": ([1.0, 2.0], "float")})
    writer.close()
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path}/bad.tfrecord, example 0: feature 'cont_vals' has 2 values; expected length 6")):
        convert_tfrecords([str(tmp_path / "bad.tfrecord")], schema, str(tmp_path / "out"))


def test_wrong_kind_and_corrupt_records(tmp_path):
    schema = write_schema(str(tmp_path))
    writer = tfrecord.TFRecordWriter(str(tmp_path / "kind.tfrecord"))
    writer.write({"bin_vals": ([1.0, 0.0, 1.0, 0.0], "float")})
    writer.close()
    with pytest.raises(ValueError, match="feature 'bin_vals' is a float_list; the segdense schema says int64_list"):
        convert_tfrecords([str(tmp_path / "kind.tfrecord")], schema, str(tmp_path / "out"))
    data = bytearray((tmp_path / "kind.tfrecord").read_bytes())
    data[20] ^= 0xFF
    (tmp_path / "corrupt.tfrecord").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt.tfrecord: record 0 is corrupt \\(checksum mismatch\\)"):
        list(read_records(str(tmp_path / "corrupt.tfrecord")))
    (tmp_path / "short.tfrecord").write_bytes(bytes(data[:30]))
    with pytest.raises(ValueError, match="short.tfrecord: record 0 is truncated"):
        list(read_records(str(tmp_path / "short.tfrecord")))


def test_parquet_names_and_empty_glob(tmp_path):
    assert parquet_name("gs://b/d/random.tfrecord.gz") == "random.parquet"
    assert parquet_name("/d/part-0001.gz") == "part-0001.parquet"
    with pytest.raises(ValueError, match="no TFRecord files match"):
        convert_tfrecords([f"{tmp_path}/none/*.gz"], write_schema(str(tmp_path)), str(tmp_path / "out"))
