"""The Parquet layout derived from segdense, and the command that prints it."""
from __future__ import annotations

import pyarrow as pa
import yaml
from recap_data_fixtures import make_config, write_schema

from tml.projects.home.recap.data.parquet_schema import arrow_type, main
from tml.projects.home.recap.data.segdense import SegDenseFeature, plan_features


def test_arrow_types_per_dtype_and_length():
    assert arrow_type(SegDenseFeature("c", "float_list", 6000)) == pa.list_(pa.float32(), 6000)
    assert arrow_type(SegDenseFeature("b", "int64_list", 512)) == pa.list_(pa.int64(), 512)
    assert arrow_type(SegDenseFeature("label", "int64_list", 1)) == pa.int64()
    assert arrow_type(SegDenseFeature("x", "float_list", 1)) == pa.float32()
    assert arrow_type(SegDenseFeature("ids", "int64_list", -1)) == pa.list_(pa.int64())
    assert arrow_type(SegDenseFeature("s", "bytes_list", 1)) == pa.binary()


def test_plan_reads_listed_renamed_and_label_columns(tmp_path):
    config = make_config(write_schema(str(tmp_path)), "/x/*.parquet")
    plan = plan_features(config)
    assert plan.column_names == ["cont_vals", "bin_vals", "disc_vals", "user_emb", "meta.row_id", "task.a", "task.b"]
    assert [c.name for c in plan.columns][:2] == ["continuous", "binary"]
    assert plan_features(config, with_labels=False).column_names[-1] == "meta.row_id"


def test_cli_prints_the_expected_schema(tmp_path, capsys):
    config = make_config(write_schema(str(tmp_path)), "/x/*.parquet").model_dump(mode="json")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train_data": config, "validation_data": {"v": config}}))
    main(["--config_path", str(path), "--section", "validation_data.v"])
    printed = capsys.readouterr().out
    assert "cont_vals: fixed_size_list<item: float>[6] not null" in printed
    assert "read_as: 'continuous'" in printed
    assert "task.b: int64 not null" in printed and "role: 'label'" in printed
