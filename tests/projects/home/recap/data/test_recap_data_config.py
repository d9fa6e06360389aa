"""Data config classes: the original's YAML loads unchanged; task and field-group checks."""
from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest
import yaml

from tml.core.config.config_load import substitute_env_variables
from tml.projects.home.recap.data import config as data_config
from tml.projects.home.recap.data.config_files import load_data_sections, select_section

from original_configs import ORIGINAL_DIR

ORIGINAL_YAML = ORIGINAL_DIR / "recap_local_prod.yaml"
BASE = {
    "global_batch_size": 8,
    "inputs": "/data/*.parquet",
    "seg_dense_schema": {"schema_path": "s.json"},
    "tasks": {"a": {}, "b": {"pos_downsampling_rate": 0.5}},
}


@pytest.fixture
def original_tree() -> dict:
    if not ORIGINAL_YAML.exists():
        pytest.skip(f"{ORIGINAL_YAML} (the original's config) is not on this machine")
    text = substitute_env_variables(ORIGINAL_YAML.read_text(), {"HOME": "/home/u", "TML_BASE": "/repo"})
    return yaml.safe_load(text)


def test_original_train_data_validates(original_tree):
    train = data_config.RecapDataConfig.model_validate(original_tree["train_data"])
    assert train.global_batch_size == 128
    assert train.inputs == "/home/u/tmp/recap_local_random_data/*.gz"
    assert train.dataset_service_compression == data_config.DdsCompressionOption.AUTO
    assert len(train.tasks) == 13 and list(train.tasks)[0] == "recap.engagement.is_bookmarked"
    assert train.seg_dense_schema.renamed_features["continuous"] == "home_recap_2022_cont__segdense_vals"
    assert train.preprocess.truncate_and_slice.continuous_feature_truncation == 2117
    assert train.preprocess.truncate_and_slice.binary_feature_truncation == 59
    assert train.examples_shuffle_buffer_size == 1024 and train.file_batch_size == 16


def test_original_validation_data_validates(original_tree):
    sections = {name: data_config.RecapDataConfig.model_validate(v) for name, v in original_tree["validation_data"].items()}
    assert len(sections) == 12
    fav = sections["recap.engagement.is_favorited"]
    assert fav.evaluation_tasks == ["recap.engagement.is_favorited"]
    assert fav.tasks["recap.engagement.is_favorited"].pos_downsampling_rate == pytest.approx(0.8387)
    assert fav.tasks["recap.engagement.is_favorited"].neg_downsampling_rate == pytest.approx(0.01)
    assert fav.tasks["recap.engagement.is_bookmarked"].neg_downsampling_rate == 1.0  # from the merge key
    assert sections["recap.engagement.is_report_tweet_clicked"].tasks[
        "recap.engagement.is_report_tweet_clicked"].neg_downsampling_rate == pytest.approx(0.000014)


def test_data_sections_loader_reads_the_original_file(original_tree, monkeypatch):
    monkeypatch.setenv("TML_BASE", "/repo")
    sections = load_data_sections(str(ORIGINAL_YAML))
    assert select_section(sections, "validation_data.train").global_batch_size == 128
    with pytest.raises(ValueError, match="no data section 'validation_data.nope'; available: .*train_data"):
        select_section(sections, "validation_data.nope")


def test_defaults_match_the_original():
    config = data_config.RecapDataConfig.model_validate(BASE)
    assert config.num_files_to_keep is None and config.repeat_files is True and config.cache is False
    assert config.ignore_data_errors is False and config.map_num_parallel_calls is None
    assert config.evaluation_tasks == [] and config.preprocess is None and config.sampler is None
    assert config.seed == 0 and config.prefetch == 2
    assert data_config.TaskData().pos_downsampling_rate == 1.0
    assert data_config.RectifyLabels(
        served_timestamp_field="s", impressed_timestamp_field="i", label_to_engaged_timestamp_field={}
    ).label_rectification_window_in_hours == 3.0
    assert data_config.DownsampleNegatives(num_engagements=2).batch_multiplier is None
    assert [t.value for t in data_config.DownCastType] == ["bfloat16", "bool", "float32", "float16", "uint8"]


def test_explicit_nulls_load():
    values = dict(BASE, num_files_to_keep=None, preprocess={"truncate_and_slice": None, "downcast": None},
                  data_service_dispatcher=None, explicit_date_inputs=None)
    assert data_config.RecapDataConfig.model_validate(values).preprocess.truncate_and_slice is None


def test_evaluation_task_must_be_a_task():
    with pytest.raises(pydantic.ValidationError, match="evaluation_tasks entry 'c' is not in tasks; tasks are: \\['a', 'b'\\]"):
        data_config.RecapDataConfig.model_validate(dict(BASE, evaluation_tasks=["a", "c"]))


def test_exactly_one_input_format():
    both = dict(BASE, explicit_date_inputs={"data_root": "/d", "end_date": "2023/01/02", "days": 2})
    with pytest.raises(pydantic.ValidationError, match="Exactly one of inputs,explicit_datetime_inputs,explicit_date_inputs"):
        data_config.RecapDataConfig.model_validate(both)
    neither = {k: v for k, v in BASE.items() if k != "inputs"}
    with pytest.raises(pydantic.ValidationError, match="none is set"):
        data_config.RecapDataConfig.model_validate(neither)


def test_unknown_field_and_bad_values_fail():
    with pytest.raises(pydantic.ValidationError, match="global_batch_sise"):
        data_config.RecapDataConfig.model_validate(dict(BASE, global_batch_sise=3))
    with pytest.raises(pydantic.ValidationError, match="global_batch_size"):
        data_config.RecapDataConfig.model_validate(dict(BASE, global_batch_size=0))
    with pytest.raises(pydantic.ValidationError, match="neg_downsampling_rate"):
        data_config.TaskData(neg_downsampling_rate=0.0)


REPO_CONFIGS = Path(__file__).resolve().parents[5] / "projects" / "home" / "recap" / "config"


@pytest.mark.parametrize("name", ["local_prod.yaml", "local.yaml"])
def test_repository_configs_data_sections_validate(name, monkeypatch):
    path = REPO_CONFIGS / name
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    monkeypatch.setenv("TML_BASE", str(REPO_CONFIGS.parents[3]))
    sections = load_data_sections(str(path))
    assert sections.train_data.tasks and sections.validation_data
    assert os.path.exists(sections.train_data.seg_dense_schema.schema_path)


def test_only_train_data_reads_from_remote_readers():
    from tml.projects.home.recap.config import RecapConfig

    with_readers = {**BASE, "remote_readers": ["127.0.0.1:2222"]}
    with pytest.raises(pydantic.ValidationError, match=r"validation sets \['heldout'\] set remote_readers: only train_data"):
        RecapConfig.model_validate({"model": {}, "train_data": BASE, "optimizer": {},
                                    "validation_data": {"heldout": with_readers}})
