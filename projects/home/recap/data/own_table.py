"""A table of one's own (Parquet or CSV) as Heavy Ranker data, its segdense schema and a starter config.

The library of the `from_table` command (its module is the command line and serves these names
too). `from_table(args)` writes, DIR being `args.output_dir`:
    DIR/segdense.json       the layout: the numeric, binary and categorical columns as three blocks
                            (only the blocks used), one column per label and per id; its "columns"
                            entry lists which input column fills which slot of a block
    DIR/train/*.parquet     the training split (negatives down-sampled when asked), rows shuffled
    DIR/validation/*.parquet  the held-out split, never down-sampled
    DIR/config.yaml         a starter config: train_data with the down-sampling rates declared,
                            validation_data on the held-out split, a small model, Adam
    DIR/stats.json          row counts and label rates of the input and of both splits

Rows are split at random (seeded) or, with --split_by, by that column: its latest values hold out.
Negative down-sampling (one label) keeps every positive and each negative with the given
probability, as production training data does; the rate goes into the config so that training
undoes it (`model.downsampling_correction`). Bad input (a missing column, a label that is not 0/1,
a negative categorical id, ...) stops with a message naming the column (exit 1). An output folder
with earlier output is refused unless --overwrite, which replaces only what this command wrote.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import yaml

from tml.common.entry_point import CommandError
from tml.common.filesystem import util as fs_util
from tml.common.filesystem.generated_files import claim_output_dir
from tml.projects.home.recap.data.segdense import parse_segdense_schema
from tml.projects.home.recap.data.splits import check_widths, part_file_name, split_count, split_rows, write_split

# segdense names of the three feature blocks, and the batch feature each is renamed to
BLOCKS = {"numeric": ("numeric_values", "continuous"), "binary": ("binary_values", "binary"),
          "categorical": ("categorical_values", "discrete")}
EMBEDDING_DIM = 8


COMMAND = "tml.projects.home.recap.data.from_table"
TOP_FILES = ("segdense.json", "config.yaml", "stats.json")


class TableError(CommandError):
    """Input the command cannot convert, or an output folder it must not write to; the message
    names the column, file or folder."""


def read_table(pattern: str, columns: Sequence[str]) -> pa.Table:
    """The columns of a Parquet or CSV file (or a glob of them; the format from the extension)."""
    files = sorted(fs_util.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    if not files or not all(fs_util.exists(path) for path in files):
        raise TableError(f"no input file matches {pattern}")
    formats = {"csv" if path.lower().endswith((".csv", ".csv.gz")) else "parquet" for path in files}
    if len(formats) > 1:
        raise TableError(f"{pattern} mixes CSV and Parquet files")
    dataset = ds.dataset(files, format=formats.pop())
    missing = [name for name in columns if name not in dataset.schema.names]
    if missing:
        raise TableError(f"column(s) {missing} are not in {pattern}; its columns: {dataset.schema.names}")
    return dataset.to_table(columns=list(columns))


def _column(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        raise TableError(f"column '{name}' has {column.null_count} missing values; fill or drop them first")
    return column.to_numpy()


def _integers(table: pa.Table, name: str, what: str) -> np.ndarray:
    values = _column(table, name)
    if values.dtype == bool:
        return values.astype(np.int64)
    if not np.issubdtype(values.dtype, np.number):
        raise TableError(f"{what} column '{name}' must hold integers; it holds {table.schema.field(name).type}")
    as_int = values.astype(np.int64)
    if not np.array_equal(as_int, values):
        raise TableError(f"{what} column '{name}' must hold integers; e.g. row {int(np.argmax(as_int != values))} is {values[as_int != values][0]}")
    return as_int


def _zero_one(table: pa.Table, name: str, what: str) -> np.ndarray:
    values = _integers(table, name, what)
    bad = (values != 0) & (values != 1)
    if bad.any():
        raise TableError(f"{what} column '{name}' must hold 0 or 1; row {int(np.argmax(bad))} is {values[bad][0]}")
    return values


def _numeric(table: pa.Table, names: Sequence[str]) -> np.ndarray:
    parts = []
    for name in names:
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
            raise TableError(f"numeric column '{name}' holds {column.type}, not numbers")
        # Missing numbers become NaN; the featurization maps non-finite values to 0.
        parts.append(pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False))
    return np.stack(parts, axis=1).astype(np.float32)


def build_columns(table: pa.Table, args: argparse.Namespace) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Columns keyed by segdense name, and which input columns fill each block."""
    columns: dict[str, np.ndarray] = {}
    blocks: dict[str, list[str]] = {}
    if args.numeric:
        columns[BLOCKS["numeric"][0]] = _numeric(table, args.numeric)
        blocks[BLOCKS["numeric"][0]] = list(args.numeric)
    if args.binary:
        columns[BLOCKS["binary"][0]] = np.stack([_zero_one(table, n, "binary") for n in args.binary], axis=1)
        blocks[BLOCKS["binary"][0]] = list(args.binary)
    if args.categorical:
        ids = np.stack([_integers(table, n, "categorical") for n in args.categorical], axis=1)
        negative = (ids < 0).any(axis=0)
        if negative.any():
            raise TableError(f"categorical column '{args.categorical[int(np.argmax(negative))]}' has negative ids; "
                             f"ids index an embedding table and must be >= 0")
        columns[BLOCKS["categorical"][0]] = ids
        blocks[BLOCKS["categorical"][0]] = list(args.categorical)
    for name in blocks:
        if columns[name].shape[1] == 1:
            columns[name] = columns[name][:, 0]  # segdense length 1 is a scalar column
    for name in args.labels:
        columns[name] = _zero_one(table, name, "label")
    for name in args.id_columns:
        columns[name] = _integers(table, name, "id")
    return columns, blocks


def segdense_document(columns: dict[str, np.ndarray], blocks: dict[str, list[str]]) -> dict[str, Any]:
    schema = []
    for name, values in columns.items():
        dtype = "float_list" if values.dtype == np.float32 else "int64_list"
        schema.append({"feature_name": name, "dtype": dtype, "length": values.shape[1] if values.ndim == 2 else 1})
    return {"schema": schema, "columns": blocks}


def down_sample(rows: np.ndarray, labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Every positive row, and each negative with probability `rate`, in the given order."""
    keep = (labels[rows] == 1) | (rng.random(len(rows)) < rate)
    return rows[keep]


def _lr_schedule(steps: int) -> dict[str, Any]:
    ramp = min(100, max(1, steps // 10))
    # Decaying to 1% of the peak matters for calibration: measured on one 500k-row table, the held-out
    # mean calibrated probability varied by -3% to +8% over training seeds with batch 256 and 2e-3 ->
    # 1e-4, and by +1% to +3% (the sample's own +2%) with batch 512 and 1e-3 -> 1e-5.
    return {"linear_ramp_to_cosine": {"learning_rate": 0.001, "final_learning_rate": 0.00001,
                                      "num_ramp_steps": ramp, "final_num_steps": steps}}


def starter_config(output_dir: str, args: argparse.Namespace, columns: dict[str, np.ndarray],
                   train_rows: int, neg_rate: Optional[float]) -> dict[str, Any]:
    """A small model that trains in minutes on a laptop: an MLP backbone shared by one MLP tower per
    label, the production featurization for numeric columns, a small embedding per categorical one."""
    steps = args.train_steps or max(100, math.ceil(args.epochs * train_rows / args.batch_size))
    renamed = {batch_name: schema_name for kind, (schema_name, batch_name) in BLOCKS.items() if getattr(args, kind)}
    segdense = {"schema_path": os.path.join(output_dir, "segdense.json"), "renamed_features": renamed}
    tasks = {name: {} for name in args.labels}
    train_tasks = {name: ({"pos_downsampling_rate": 1.0, "neg_downsampling_rate": neg_rate} if neg_rate else {})
                   for name in args.labels}
    model: dict[str, Any] = {
        "downsampling_correction": "calibration",
        "multi_task_type": "share_all",
        "backbone": {"mlp_config": {"layer_sizes": [128, 64], "final_layer_activation": True}},
        "tasks": {name: {"mlp_config": {"layer_sizes": [32, 1]}} for name in args.labels},
    }
    concat = ["binary"] if args.binary else []
    if args.numeric:
        model["featurization_config"] = {
            "double_norm_log_config": {
                "batch_norm_config": {"affine": True, "momentum": 0.01},
                "clip_magnitude": 5.0,
                # No LayerNorm over the row, unlike production: over a few (or one) features it
                # erases what the batch norm kept (a row of one feature always normalizes to 0).
            },
            "feature_names_to_concat": concat,
        }
    else:
        model["featurization_config"] = {"log1p_abs_config": {}, "feature_names_to_concat": concat}
    if args.categorical:
        ids = columns[BLOCKS["categorical"][0]].reshape(len(columns[args.labels[0]]), -1)
        model["small_embeddings"] = {"tables": [
            {"name": name, "num_embeddings": int(ids[:, index].max()) + 1, "embedding_dim": EMBEDDING_DIM, "index": index}
            for index, name in enumerate(args.categorical)
        ]}
    return {
        "training": {
            "save_dir": os.path.join(output_dir, "run"),
            "num_train_steps": steps,
            "checkpoint_every_n": steps,
            "train_log_every_n": max(1, steps // 10),
            "eval_log_every_n": steps,
            "num_eval_steps": -1,
            "seed": args.seed,
        },
        "model": model,
        "train_data": {
            "inputs": os.path.join(output_dir, "train", "*.parquet"),
            "global_batch_size": args.batch_size,
            "examples_shuffle_buffer_size": 4096,
            "seg_dense_schema": segdense,
            "tasks": train_tasks,
        },
        "validation_data": {
            "validation": {
                "inputs": os.path.join(output_dir, "validation", "*.parquet"),
                "global_batch_size": 1024,
                "seg_dense_schema": segdense,
                "tasks": tasks,
            }
        },
        "optimizer": {"adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
                      "single_task_learning_rate": _lr_schedule(steps)},
    }


CONFIG_HEADER = """\
# Starter config written by `python -m tml.projects.home.recap.data.from_table` (edit freely).
# train_data.tasks declares the negative down-sampling of the training split (if any);
# model.downsampling_correction: calibration trains on the sample as it is and the calibrated
# probabilities undo the rates (see the recap README, "Down-sampled training data").
"""


def _rates(labels: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    return {name: float(values[rows].mean()) if len(rows) else float("nan") for name, values in labels.items()}


def _claim_output(output_dir: str, files_per_split: dict[str, int], overwrite: bool) -> None:
    """Refuse (before writing anything) to mix with or delete what this command did not write:
    the split folders are claimed with a manifest, the top-level files replaced only with --overwrite."""
    existing = [name for name in TOP_FILES if os.path.exists(os.path.join(output_dir, name))]
    if existing and not overwrite:
        raise TableError(f"{output_dir} already holds {existing}; pass --overwrite to replace this command's "
                         f"earlier output, or choose another --output_dir")
    for split, count in files_per_split.items():
        claim_output_dir(os.path.join(output_dir, split), [part_file_name(i) for i in range(count)],
                         COMMAND, overwrite)


def from_table(args: argparse.Namespace) -> dict[str, Any]:
    if not args.labels:
        raise TableError("--labels names no column; give at least one 0/1 label column")
    features = [*args.numeric, *args.binary, *args.categorical]
    if not features:
        raise TableError("no feature columns: give --numeric, --binary and/or --categorical")
    named = [*args.labels, *features, *args.id_columns]
    repeated = sorted({name for name in named if named.count(name) > 1})
    if repeated:
        raise TableError(f"column(s) {repeated} are given more than once")
    if args.neg_downsampling_rate is not None:
        if not 0.0 < args.neg_downsampling_rate <= 1.0:
            raise TableError(f"--neg_downsampling_rate must lie in (0, 1], got {args.neg_downsampling_rate}")
        if len(args.labels) != 1:
            raise TableError("--neg_downsampling_rate needs exactly one label: with several, a row negative for one "
                             "label may be positive for another, and no single rate per label describes the sample")
    split_by = [args.split_by] if args.split_by and args.split_by not in named else []
    table = read_table(args.input, named + split_by)
    if table.num_rows == 0:
        raise TableError(f"{args.input} has no rows")
    columns, blocks = build_columns(table, args)

    rng = np.random.default_rng(args.seed)
    if args.split_by:
        order = np.argsort(table.column(args.split_by).to_numpy(zero_copy_only=False), kind="stable")
    else:
        order = rng.permutation(table.num_rows)
    train_rows, validation_rows = split_rows(table.num_rows, args.validation_fraction, order)
    labels = {name: columns[name] for name in args.labels}
    all_train_rows = train_rows
    if args.neg_downsampling_rate is not None and args.neg_downsampling_rate < 1.0:
        train_rows = down_sample(train_rows, labels[args.labels[0]], args.neg_downsampling_rate, rng)
    train_rows = rng.permutation(train_rows)  # the reader shuffles only within a buffer

    output_dir = os.path.abspath(args.output_dir)
    document = segdense_document(columns, blocks)
    schema = parse_segdense_schema(document, "from_table")
    check_widths(columns, schema)
    splits = {"train": (train_rows, args.num_train_files), "validation": (validation_rows, 1)}
    _claim_output(output_dir, {name: split_count(files, len(rows)) for name, (rows, files) in splits.items()},
                  args.overwrite)
    with open(os.path.join(output_dir, "segdense.json"), "w") as stream:
        json.dump(document, stream, indent=2)
    for name, (rows, files) in splits.items():
        write_split(os.path.join(output_dir, name), columns, rows, files, schema, remove_stale=False)
    neg_rate = args.neg_downsampling_rate if args.neg_downsampling_rate not in (None, 1.0) else None
    config = starter_config(output_dir, args, columns, len(train_rows), neg_rate)
    with open(os.path.join(output_dir, "config.yaml"), "w") as stream:
        stream.write(CONFIG_HEADER)
        yaml.safe_dump(config, stream, sort_keys=False)
    stats = {
        "input": args.input,
        "rows": table.num_rows,
        "train_rows_before_down_sampling": len(all_train_rows),
        "train_rows": len(train_rows),
        "validation_rows": len(validation_rows),
        "neg_downsampling_rate": neg_rate or 1.0,
        "label_rates": {"input": _rates(labels, np.arange(table.num_rows)),
                        "train": _rates(labels, train_rows), "validation": _rates(labels, validation_rows)},
    }
    with open(os.path.join(output_dir, "stats.json"), "w") as stream:
        json.dump(stats, stream, indent=2)
    return stats
