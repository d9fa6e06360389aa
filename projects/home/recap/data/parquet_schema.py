"""The Parquet layout of Heavy Ranker data, derived from the segdense schema.

One column per segdense feature, named exactly as in the schema:

| segdense dtype | length n > 1               | length 1  | length -1       |
|----------------|----------------------------|-----------|-----------------|
| float_list     | fixed_size_list<float>[n]  | float     | list<float>     |
| int64_list     | fixed_size_list<int64>[n]  | int64     | list<int64>     |
| bytes_list     | fixed_size_list<binary>[n] | binary    | list<binary>    |

Readers also accept plain `list<...>` columns whose lists all have length n, and length-1 lists for
scalars, so files written by other tools load too.

    python -m tml.projects.home.recap.data.parquet_schema --config_path CONFIG.yaml [--section train_data]

prints the schema that a config's data section reads.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from tml.common.entry_point import call_command, command_parser, run_command

# pyarrow and segdense (numpy) are imported where used: the command's `--help` needs neither.
if TYPE_CHECKING:
    import pyarrow as pa

    from tml.projects.home.recap.data.segdense import FeaturePlan, SegDenseFeature


def arrow_type(feature: SegDenseFeature) -> pa.DataType:
    import pyarrow as pa

    from tml.projects.home.recap.data.segdense import VARIABLE_LENGTH

    value_type = {"float_list": pa.float32, "int64_list": pa.int64, "bytes_list": pa.binary}[feature.dtype]()
    if feature.length == 1:
        return value_type
    if feature.length == VARIABLE_LENGTH:
        return pa.list_(value_type)
    return pa.list_(value_type, feature.length)


def arrow_schema(features: Iterable[SegDenseFeature]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(feature.name, arrow_type(feature), nullable=False) for feature in features])


def plan_schema(plan: FeaturePlan) -> pa.Schema:
    """The columns a pipeline with this plan reads, with the names the batch knows them by as metadata."""
    import pyarrow as pa

    fields = []
    for column in plan.columns:
        metadata = {"read_as": column.name, "role": "label" if column.is_label else "feature"}
        fields.append(pa.field(column.feature.name, arrow_type(column.feature), nullable=False, metadata=metadata))
    return pa.schema(fields)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("Print the Parquet schema a recap data config reads.")
    parser.add_argument(
        "--section",
        default="train_data",
        help="Data section to use: train_data (default) or validation_data.<name>.",
    )
    parser.add_argument("--inference", action="store_true", help="Leave out the label columns.")
    return parser


def run(args: argparse.Namespace) -> int:
    from tml.projects.home.recap.data.config_files import load_section
    from tml.projects.home.recap.data.segdense import plan_features

    data_config = load_section(args)
    plan = plan_features(data_config, with_labels=not args.inference)
    print(plan_schema(plan).to_string(show_field_metadata=True, show_schema_metadata=False))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
