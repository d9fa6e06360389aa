"""Read only the data sections of a recap YAML file, for data tools that need no model config."""
from __future__ import annotations

import argparse
from typing import Dict

import pydantic

from tml.core.config import load_config_from_yaml
from tml.projects.home.recap.data.config import RecapDataConfig


class RecapDataSections(pydantic.BaseModel):
    """`train_data` and `validation_data` of a full recap config; the other sections are not looked at."""

    model_config = pydantic.ConfigDict(extra="ignore")

    train_data: RecapDataConfig
    validation_data: Dict[str, RecapDataConfig] = {}


def load_data_sections(config_path: str, overrides: tuple[str, ...] | list[str] = ()) -> RecapDataSections:
    return load_config_from_yaml(RecapDataSections, config_path, overrides)


def select_section(sections: RecapDataSections, section: str) -> RecapDataConfig:
    """`train_data` or `validation_data.<name>`."""
    if section == "train_data":
        return sections.train_data
    prefix = "validation_data."
    if section.startswith(prefix) and section[len(prefix):] in sections.validation_data:
        return sections.validation_data[section[len(prefix):]]
    available = ["train_data"] + [prefix + name for name in sections.validation_data]
    raise ValueError(f"no data section '{section}'; available: {available}")


def load_section(args: argparse.Namespace) -> RecapDataConfig:
    return select_section(load_data_sections(args.config_path, args.overrides), args.section)
