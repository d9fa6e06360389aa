"""A table of one's own (Parquet or CSV) as Heavy Ranker data, its segdense schema and a starter config.

    python -m tml.projects.home.recap.data.from_table --input events.parquet --output_dir DIR \
        --labels clicked [--numeric a,b] [--binary c,d] [--categorical e,f] [--id_columns user_id,item_id] \
        [--neg_downsampling_rate 0.1] [--validation_fraction 0.2] [--split_by COLUMN] [--seed 0]

What it writes, how it splits and down-samples: `own_table.py`, the library, whose names
(`from_table`, `read_table`, `TableError`, ...) this module serves too, imported on first use so
that `--help` answers without importing numpy or pyarrow.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence

from tml.common.entry_point import call_command, command_parser, library_attributes, run_command

__getattr__ = library_attributes("tml.projects.home.recap.data.own_table")


def _names(text: Optional[str]) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "Convert a Parquet/CSV table into Heavy Ranker data, a segdense schema and a starter config.", config="none"
    )
    parser.add_argument("--input", required=True, help="Parquet or CSV file, or a glob of them.")
    parser.add_argument("--output_dir", required=True, help="Where segdense.json, config.yaml, train/ and validation/ go.")
    parser.add_argument("--labels", type=_names, required=True, help="Comma-separated 0/1 label columns (the tasks).")
    parser.add_argument("--numeric", type=_names, default=[], help="Numeric feature columns (any scale; NaN allowed).")
    parser.add_argument("--binary", type=_names, default=[], help="0/1 feature columns.")
    parser.add_argument("--categorical", type=_names, default=[],
                        help="Integer id columns (>= 0), each embedded by a small table in the starter config.")
    parser.add_argument("--id_columns", type=_names, default=[],
                        help="Integer columns kept for scoring output (e.g. user_id,item_id); not model inputs.")
    parser.add_argument("--neg_downsampling_rate", type=float, default=None,
                        help="Keep each training negative with this probability (one label only); declared in the config.")
    parser.add_argument("--validation_fraction", type=float, default=0.2, help="Share of rows held out (never down-sampled).")
    parser.add_argument("--split_by", default=None, help="Hold out the rows with the largest values of this column (e.g. a time).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the split, the down-sampling and training (training.seed).")
    parser.add_argument("--num_train_files", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=512, help="global_batch_size of the starter config.")
    parser.add_argument("--epochs", type=float, default=10.0,
                        help="Passes over the training split the starter config trains for (calibration needs about a thousand steps).")
    parser.add_argument("--train_steps", type=int, default=None, help="Training steps instead of --epochs.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace this command's earlier output in --output_dir (nothing else is deleted).")
    return parser


def run(args: argparse.Namespace) -> int:
    from tml.projects.home.recap.data.own_table import from_table

    stats = from_table(args)
    output_dir = os.path.abspath(args.output_dir)
    print(json.dumps(stats, indent=2))
    print(f"wrote {output_dir}/segdense.json, config.yaml, train/ ({stats['train_rows']} rows), "
          f"validation/ ({stats['validation_rows']} rows)")
    print(f"train: python -m tml.projects.home.recap.main --config_path {output_dir}/config.yaml")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command, in-process: returns its exit code."""
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
