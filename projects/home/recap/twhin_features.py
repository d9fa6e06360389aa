"""Write exported TwHIN vectors into Heavy Ranker Parquet data as embedding columns.

    python -m tml.projects.home.recap.twhin_features --embeddings EXPORT_DIR \
        --input 'data/train/*.parquet' --output_dir OUT/train \
        --feature twhin.user_embedding=user:meta.user_id --feature twhin.movie_embedding=movie:meta.movie_id \
        [--id_mapping MAPPING_DIR]

In production the Heavy Ranker reads TwHIN vectors as input columns (renamed to `user_embedding`,
`author_embedding`, ... by the config's `renamed_features`); this joins them by id. Each
`--feature COLUMN=TABLE:ID_COLUMN` adds the float[dim] column COLUMN holding, for every row, the
vector of TABLE (an `embeddings export` table: id, vector) at the row's ID_COLUMN. With
`--id_mapping DIR` the data's ids are keys: DIR/<table>.parquet (id, key; written by the TwHIN
preparation scripts) turns them into TwHIN row ids. A row whose id has no vector (absent from the
export or the mapping, or null) gets zeros, and is counted: the counts are printed and saved as
`twhin_features.json` in the output folder. Every input file becomes one output file of the same
name with all its columns and row groups; input files are never written. `--drop COLUMN=SHARE`
zeros that share of the rows' vectors (seeded): for training data, when many nodes at serving time
will have no vector (new users), so the model has learnt what such rows mean.

`--score RELATION=LHS_ID_COLUMN:RHS_ID_COLUMN` (with `--twhin_config`, the model's TwHIN config) adds
the trained model's own score of the edge (row's lhs id, RELATION, row's rhs id), as its link
prediction and `retrieval` rank items (operator, relation vectors, `relation_aware`): the retrieval
signal itself as a ranker input. Three values per score, appended in `--score` order to the float
list column `--score_into` (the continuous block, whose segdense length grows by 3 per score; a new
column of that name when the data has none):
    score           x . q(u) + b(u), the model's score
    score_in_user   (score - mean) / std over every item of the rhs table for the same lhs node: how
                    far above this user's average item the item is, comparable across models
    has_score       1, or 0 when either node has no vector (all three values are then 0; counted)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, ClassVar, Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tml.common.entry_point import CommandError, call_command, command_parser, run_command
from tml.common.filesystem import util as fs_util

SUMMARY_FILE = "twhin_features.json"
SCORE_VALUES = ("score", "score_in_user", "has_score")


class _FlagSpec:
    """A flag's value `A=B:C`, parsed into the three fields of the dataclass that inherits this."""

    FLAG: ClassVar[str]
    FORM: ClassVar[str]
    EXAMPLE: ClassVar[str]

    @classmethod
    def parse(cls, text: str) -> Any:
        first, sep, rest = text.partition("=")
        second, sep2, third = rest.partition(":")
        if not (sep and sep2 and first and second and third):
            raise ValueError(f"{cls.FLAG} '{text}' is not {cls.FORM} (e.g. {cls.EXAMPLE})")
        return cls(first, second, third)  # type: ignore[call-arg]


@dataclasses.dataclass(frozen=True)
class TwhinFeature(_FlagSpec):
    """Output column `column` = vector of TwHIN table `table` at the row's `id_column`."""

    FLAG, FORM, EXAMPLE = "--feature", "COLUMN=TABLE:ID_COLUMN", "twhin.user_embedding=user:meta.user_id"
    column: str
    table: str
    id_column: str


@dataclasses.dataclass(frozen=True)
class TwhinScore(_FlagSpec):
    """The TwHIN model's score of (row's `lhs_id_column`, `relation`, row's `rhs_id_column`)."""

    FLAG, FORM, EXAMPLE = "--score", "RELATION=LHS_ID_COLUMN:RHS_ID_COLUMN", "liked=meta.user_id:meta.movie_id"
    relation: str
    lhs_id_column: str
    rhs_id_column: str


class VectorTable:
    """The rows of one exported TwHIN table, looked up by data id (through an optional id mapping)."""

    def __init__(self, export_dir: str, table: str, mapping_dir: Optional[str] = None) -> None:
        path = os.path.join(export_dir, f"{table}.parquet")
        if not fs_util.exists(path):
            raise FileNotFoundError(f"{path} does not exist: '{table}' is not a table of the TwHIN export {export_dir}")
        with fs_util.open_file(path, "rb") as stream:
            data = pq.read_table(stream, columns=["id", "vector"])
        vector_type = data.schema.field("vector").type
        if not pa.types.is_fixed_size_list(vector_type):
            raise ValueError(f"{path}: column 'vector' is {vector_type}, expected a fixed-size list of floats")
        self.dim = vector_type.list_size
        ids = data.column("id").to_numpy().astype(np.int64)
        vectors = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        order = np.argsort(ids, kind="stable")
        self.ids = ids[order]
        self.vectors = vectors.astype(np.float32).reshape(-1, self.dim)[order]
        self.keys: Optional[pa.Array] = None
        self.key_ids: Optional[np.ndarray] = None
        if mapping_dir is not None:
            mapping_path = os.path.join(mapping_dir, f"{table}.parquet")
            if not fs_util.exists(mapping_path):
                raise FileNotFoundError(f"{mapping_path} does not exist: no id mapping for table '{table}'")
            with fs_util.open_file(mapping_path, "rb") as stream:
                mapping = pq.read_table(stream, columns=["id", "key"])
            self.keys = mapping.column("key").combine_chunks().cast(pa.string())
            self.key_ids = mapping.column("id").to_numpy().astype(np.int64)

    def lookup(self, data_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """([n, dim] vectors, [n] bool found) for the data's ids; not found rows are zeros."""
        if self.keys is not None:
            positions = pc.index_in(data_ids.cast(pa.string()), value_set=self.keys)
            found = positions.is_valid().to_numpy(zero_copy_only=False)
            row_ids = np.where(found, self.key_ids[positions.fill_null(0).to_numpy()], -1)
        else:
            found = data_ids.is_valid().to_numpy(zero_copy_only=False)
            row_ids = np.where(found, data_ids.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), -1)
        slots = np.minimum(np.searchsorted(self.ids, row_ids), max(len(self.ids) - 1, 0))
        if len(self.ids):
            found &= self.ids[slots] == row_ids
        else:
            found[:] = False
        out = np.zeros((len(row_ids), self.dim), dtype=np.float32)
        out[found] = self.vectors[slots[found]]
        return out, found


def _vector_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=pa.float32()), matrix.shape[1])


def _id_array(table: pa.Table, column: str, where: str) -> pa.Array:
    if column not in table.column_names:
        raise KeyError(f"{where} has no id column '{column}'; columns: {table.column_names}")
    values = table.column(column).combine_chunks()
    if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = pc.list_element(values, 0)  # length-1 lists hold scalars in the segdense layout
    if not pa.types.is_integer(values.type):
        raise TypeError(f"{where}: id column '{column}' is {values.type}, expected integers")
    return values


def add_twhin_columns(
    table: pa.Table, features: Sequence[TwhinFeature], vectors: dict[str, VectorTable], where: str = "table",
    drop: Optional[dict[str, float]] = None, rng: Optional[np.random.Generator] = None,
) -> tuple[pa.Table, dict[str, int]]:
    """`table` with one vector column per feature appended; and the number of rows without a vector
    per feature. `drop` (column -> share) zeros that share of the rows' vectors at random (they count
    as without a vector)."""
    missing: dict[str, int] = {}
    for feature in features:
        if feature.column in table.column_names:
            raise ValueError(f"{where} already has a column '{feature.column}'")
        matrix, found = vectors[feature.table].lookup(_id_array(table, feature.id_column, where))
        share = (drop or {}).get(feature.column, 0.0)
        if share > 0:
            dropped = (rng or np.random.default_rng(0)).random(len(found)) < share
            matrix[dropped] = 0.0
            found &= ~dropped
        table = table.append_column(pa.field(feature.column, pa.list_(pa.float32(), matrix.shape[1])), _vector_array(matrix))
        missing[feature.column] = int((~found).sum())
    return table, missing


class EdgeScorer:
    """Scores (lhs id, rhs id) pairs with one relation of a trained TwHIN model (see `TwhinScore`)."""

    def __init__(self, score: TwhinScore, export_dir: str, twhin_config: object, mapping_dir: Optional[str] = None) -> None:
        from tml.projects.twhin.retrieval import config_relation

        chosen = config_relation(twhin_config, score.relation, label="--score relation")
        self.score, self.export_dir, self.config = score, export_dir, twhin_config
        self.tables = (chosen.lhs, chosen.rhs)
        self.lhs = VectorTable(export_dir, chosen.lhs, mapping_dir)
        self.rhs = VectorTable(export_dir, chosen.rhs, mapping_dir)
        items = self.rhs.vectors.astype(np.float64)
        self.item_mean = items.mean(axis=0)
        self.item_covariance = np.cov(items, rowvar=False, bias=True).reshape(items.shape[1], items.shape[1])

    def values(self, table: pa.Table, where: str) -> tuple[np.ndarray, int]:
        """([n, 3] score, score_in_user, has_score) for the rows; and how many rows have no score."""
        from tml.projects.twhin.retrieval import model_queries

        lhs, lhs_found = self.lhs.lookup(_id_array(table, self.score.lhs_id_column, where))
        rhs, rhs_found = self.rhs.lookup(_id_array(table, self.score.rhs_id_column, where))
        found = lhs_found & rhs_found
        out = np.zeros((len(found), len(SCORE_VALUES)), dtype=np.float32)
        if found.any():
            query, bias = model_queries(lhs[found], self.export_dir, self.config, self.score.relation, self.tables)
            query, bias = query.astype(np.float64), bias.astype(np.float64)
            score = (rhs[found].astype(np.float64) * query).sum(axis=1) + bias
            mean = query @ self.item_mean + bias
            std = np.sqrt(np.maximum(np.einsum("nd,de,ne->n", query, self.item_covariance, query), 0.0))
            out[found, 0] = score
            out[found, 1] = np.where(std > 0, (score - mean) / np.where(std > 0, std, 1.0), 0.0)
            out[found, 2] = 1.0
        return out, int((~found).sum())


def append_values(table: pa.Table, column: str, values: np.ndarray, where: str) -> pa.Table:
    """`table` with the [n, m] float `values` appended to each row's float list `column` (kept in
    place and kind: fixed or variable size), or added as a new fixed-size column."""
    matrix = values.astype(np.float32)
    if column not in table.column_names:
        return table.append_column(pa.field(column, pa.list_(pa.float32(), matrix.shape[1])), _vector_array(matrix))
    existing = table.column(column).combine_chunks()
    kind = existing.type
    if not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)) \
            or not pa.types.is_floating(kind.value_type):
        raise TypeError(f"{where}: --score_into column '{column}' is {kind}, expected a list of floats")
    if existing.null_count:
        raise ValueError(f"{where}: --score_into column '{column}' has {existing.null_count} null rows")
    lengths = pc.list_value_length(existing).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValueError(f"{where}: --score_into column '{column}' has rows of lengths {sorted(set(lengths.tolist()))[:5]}; "
                         "scores are appended to a block of one width")
    width = int(lengths[0]) if len(lengths) else 0
    old = pc.list_flatten(existing).to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(existing), width)
    merged = np.concatenate([old, matrix], axis=1)
    flat = pa.array(merged.reshape(-1), type=pa.float32())
    if pa.types.is_fixed_size_list(kind):
        array: pa.Array = pa.FixedSizeListArray.from_arrays(flat, merged.shape[1])
    else:
        array = pa.ListArray.from_arrays(pa.array(np.arange(len(merged) + 1) * merged.shape[1], pa.int32()), flat)
    position = table.column_names.index(column)
    return table.set_column(position, pa.field(column, array.type), array)


def load_vector_tables(
    export_dir: str, features: Iterable[TwhinFeature], mapping_dir: Optional[str] = None
) -> dict[str, VectorTable]:
    return {f.table: VectorTable(export_dir, f.table, mapping_dir) for f in features}


def write_twhin_features(
    inputs: str | Sequence[str],
    output_dir: str,
    export_dir: str,
    features: Sequence[TwhinFeature],
    mapping_dir: Optional[str] = None,
    drop: Optional[dict[str, float]] = None,
    seed: int = 0,
    scores: Sequence[TwhinScore] = (),
    twhin_config: Optional[object] = None,
    score_into: Optional[str] = None,
) -> dict[str, object]:
    """Join every input file with the TwHIN vectors and edge scores; returns the summary also saved as
    twhin_features.json. `drop` (column -> share of rows whose vector is zeroed, seeded by `seed`) is
    for training data. `scores` need the model's `twhin_config` (a `TwhinConfig`) and `score_into`."""
    if not features and not scores:
        raise ValueError("nothing to write: give --feature and/or --score")
    if scores and (twhin_config is None or not score_into):
        raise ValueError("--score needs --twhin_config (the TwHIN model's config) and --score_into (the column "
                         "the values are appended to, e.g. the continuous block)")
    if len(set(scores)) != len(scores):
        raise ValueError(f"a --score is given twice: {[f'{s.relation}={s.lhs_id_column}:{s.rhs_id_column}' for s in scores]}")
    if score_into and score_into in {f.column for f in features}:
        raise ValueError(f"--score_into '{score_into}' is also a --feature column")
    unknown = sorted(set(drop or {}) - {f.column for f in features})
    if unknown:
        raise ValueError(f"--drop names {unknown}, which no --feature writes")
    if any(not 0.0 <= share < 1.0 for share in (drop or {}).values()):
        raise ValueError(f"--drop shares must be in [0, 1), got {drop}")
    rng = np.random.default_rng(seed)
    paths = sorted(fs_util.glob(inputs)) if isinstance(inputs, str) else list(inputs)
    if not paths:
        raise FileNotFoundError(f"no Parquet files match {inputs}")
    if len({f.column for f in features}) != len(features):
        raise ValueError(f"two --feature options write the same column: {[f.column for f in features]}")
    out_abs = os.path.abspath(output_dir)
    clashes = [p for p in paths if os.path.dirname(os.path.abspath(p)) == out_abs]
    if clashes:
        raise ValueError(f"--output_dir {output_dir} holds the input {clashes[0]}; write the joined files elsewhere")
    vectors = load_vector_tables(export_dir, features, mapping_dir)
    scorers = [EdgeScorer(score, export_dir, twhin_config, mapping_dir) for score in scores]
    os.makedirs(output_dir, exist_ok=True)
    rows, missing = 0, {f.column: 0 for f in features}
    unscored = [0] * len(scorers)
    for path in paths:
        target = os.path.join(output_dir, os.path.basename(path))
        with fs_util.open_file(path, "rb") as stream:
            source = pq.ParquetFile(stream)
            writer: Optional[pq.ParquetWriter] = None
            try:
                for group in range(source.num_row_groups):
                    joined, group_missing = add_twhin_columns(source.read_row_group(group), features, vectors, path,
                                                                drop, rng)
                    if scorers:
                        blocks = []
                        for position, scorer in enumerate(scorers):
                            values, without = scorer.values(joined, path)
                            blocks.append(values)
                            unscored[position] += without
                        joined = append_values(joined, score_into, np.concatenate(blocks, axis=1), path)
                    if writer is None:
                        writer = pq.ParquetWriter(target + ".tmp", joined.schema)
                    writer.write_table(joined)
                    rows += joined.num_rows
                    for column, count in group_missing.items():
                        missing[column] += count
            finally:
                if writer is not None:
                    writer.close()
        if writer is not None:
            os.replace(target + ".tmp", target)
    summary: dict[str, object] = {
        "embeddings": export_dir,
        "id_mapping": mapping_dir,
        "files": len(paths),
        "drop": drop or {},
        "rows": rows,
        "features": {
            f.column: {"table": f.table, "id_column": f.id_column, "dim": vectors[f.table].dim, "rows_without_vector": missing[f.column]}
            for f in features
        },
        "scores": {
            "into": score_into,
            "values": [f"{s.relation}.{value}" for s in scores for value in SCORE_VALUES],
            "rows_without_score": {s.relation: unscored[i] for i, s in enumerate(scores)},
        } if scores else {},
    }
    with open(os.path.join(output_dir, SUMMARY_FILE), "w") as stream:
        json.dump(summary, stream, indent=2)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__.split("\n\n")[0], config="none")
    parser.add_argument("--embeddings", required=True, help="A TwHIN export directory (embeddings export --out_dir).")
    parser.add_argument("--input", required=True, help="Glob of Heavy Ranker Parquet files.")
    parser.add_argument("--output_dir", required=True, help="Where the joined files (same names) are written.")
    parser.add_argument("--feature", action="append", default=[], metavar="COLUMN=TABLE:ID_COLUMN",
                        help="Add COLUMN = vector of TABLE at ID_COLUMN (repeatable).")
    parser.add_argument("--score", action="append", default=[], metavar="RELATION=LHS_ID_COLUMN:RHS_ID_COLUMN",
                        help="Append the TwHIN model's score of (LHS id, RELATION, RHS id) to --score_into: "
                             f"{', '.join(SCORE_VALUES)} (repeatable).")
    parser.add_argument("--twhin_config", help="The TwHIN config the export was trained with (for --score).")
    parser.add_argument("--score_into", help="Float list column the --score values are appended to "
                        "(e.g. movielens_cont__segdense_vals); a new column when absent.")
    parser.add_argument("--id_mapping", help="Folder of <table>.parquet (id, key): the data's ids are keys.")
    parser.add_argument("--drop", action="append", default=[], metavar="COLUMN=SHARE",
                        help="Zero this share of the rows' COLUMN vectors (training data), so that the model "
                             "learns rows without a vector, as it will see for nodes new at serving time.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of --drop.")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        features = [TwhinFeature.parse(text) for text in args.feature]
        drop = {}
        for text in args.drop:
            column, sep, share = text.partition("=")
            try:
                drop[column] = float(share)
            except ValueError:
                raise ValueError(f"--drop '{text}' is not COLUMN=SHARE (e.g. twhin.user_embedding=0.5)") from None
        scores = [TwhinScore.parse(text) for text in args.score]
        twhin_config = None
        if args.twhin_config:
            from tml.core.config import load_config_from_yaml
            from tml.projects.twhin.config import TwhinConfig

            twhin_config = load_config_from_yaml(TwhinConfig, args.twhin_config)
        summary = write_twhin_features(args.input, args.output_dir, args.embeddings, features, args.id_mapping,
                                       drop, args.seed, scores, twhin_config, args.score_into)
    except (KeyError, ValueError, TypeError) as error:  # bad ids, widths, tables or flags: the message says which
        raise CommandError(error.args[0] if error.args else str(error)) from error
    for column, info in summary["features"].items():  # type: ignore[union-attr]
        print(f"{column}: {info['dim']}-d vectors of '{info['table']}' by {info['id_column']}; "
              f"{info['rows_without_vector']} of {summary['rows']} rows without a vector (zeros)")
    if summary["scores"]:
        info = summary["scores"]
        for relation, without in info["rows_without_score"].items():  # type: ignore[index]
            print(f"score of '{relation}' appended to {info['into']}; {without} of {summary['rows']} rows without a score (zeros)")  # type: ignore[index]
    print(f"wrote {summary['files']} files to {args.output_dir}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """In-process call (tests): the exit code (0, 1 for bad input, 2 for a bad command line)."""
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
