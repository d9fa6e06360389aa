import enum
from typing import List, Optional

import pydantic
import pytest

from tml.core.config import BaseConfig, ConfigError, load_config_from_yaml


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


class Schedule(BaseConfig):
    constant: Optional[float] = pydantic.Field(None, json_schema_extra={"one_of": "lr"})
    linear: Optional[List[float]] = pydantic.Field(None, json_schema_extra={"one_of": "lr"})


class Init(BaseConfig):
    from_checkpoint: Optional[str] = pydantic.Field(None, json_schema_extra={"at_most_one_of": "init"})
    from_seed: Optional[int] = pydantic.Field(None, json_schema_extra={"at_most_one_of": "init"})


class Experiment(BaseConfig):
    name: str = "run"
    color: Color = Color.RED
    schedule: Schedule
    init: Init = Init()
    sizes: List[int] = [1, 2]


def test_one_of_accepts_exactly_one():
    assert Schedule(constant=0.1).constant == 0.1
    assert Schedule(linear=[0.1, 0.2]).linear == [0.1, 0.2]


def test_one_of_rejects_none_set():
    message = r"Exactly one of constant,linear required \(field group 'lr'\); none is set"
    with pytest.raises(pydantic.ValidationError, match=message):
        Schedule()


def test_one_of_rejects_two_set():
    message = r"Exactly one of constant,linear required .*; got constant, linear"
    with pytest.raises(pydantic.ValidationError, match=message):
        Schedule(constant=0.1, linear=[0.2])


def test_at_most_one_of_allows_zero_or_one():
    assert Init().from_checkpoint is None
    assert Init(from_seed=3).from_seed == 3


def test_at_most_one_of_rejects_two():
    message = (
        r"At most one of from_checkpoint,from_seed can be set \(field group 'init'\); "
        r"got from_checkpoint, from_seed"
    )
    with pytest.raises(pydantic.ValidationError, match=message):
        Init(from_checkpoint="/c", from_seed=3)


def test_explicit_null_counts_as_unset():
    assert Schedule.model_validate({"constant": None, "linear": [1.0]}).linear == [1.0]


def test_extra_fields_are_forbidden():
    with pytest.raises(pydantic.ValidationError, match="extra_forbidden|Extra inputs are not permitted"):
        Init(from_sed=3)


def test_field_groups_lists_members_per_group():
    assert Schedule.field_groups("one_of") == {"lr": ["constant", "linear"]}
    assert Schedule.field_groups("at_most_one_of") == {}
    assert Init.field_groups("at_most_one_of") == {"init": ["from_checkpoint", "from_seed"]}


def test_pretty_print_is_plain_yaml_in_field_order():
    config = Experiment(color=Color.BLUE, schedule=Schedule(constant=0.5))
    text = config.pretty_print()
    assert text.splitlines()[:2] == ["name: run", "color: blue"]
    assert "constant: 0.5" in text


def test_pretty_print_round_trips_through_the_loader(tmp_path):
    config = Experiment(
        name="x", color=Color.BLUE, schedule=Schedule(linear=[0.1, 0.01]), init=Init(from_seed=7), sizes=[3]
    )
    path = tmp_path / "dump.yaml"
    path.write_text(config.pretty_print())
    assert load_config_from_yaml(Experiment, path) == config


def test_required_nested_config_is_reported_missing(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match="missing required field 'schedule'"):
        load_config_from_yaml(Experiment, path)
