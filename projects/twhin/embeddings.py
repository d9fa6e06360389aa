"""Embeddings out of a TwHIN run: export tables to Parquet, look rows up, find nearest neighbours.

A `source` is any of:
- a checkpoint directory (`<save_dir>/<step>`, written by any world size and sharding plan);
- a save directory (its newest complete checkpoint is used);
- an export directory written by `export_embeddings` (`<table>.parquet` files with columns
  id: int64 and vector: fixed-size list of float32, plus `embeddings.json`).
Checkpoints are read with torch.distributed.checkpoint without building the model: a table is
found by its state-dict key `...embedding_bags.<table>.weight` and loaded whole.

    python -m tml.projects.twhin.embeddings export --source SAVE_DIR_OR_CKPT --out_dir DIR [--table T ...]
    python -m tml.projects.twhin.embeddings get --source SRC --table user --ids 1 2 3 [--normalize]
    python -m tml.projects.twhin.embeddings nearest --source SRC --table user --ids 1 2 --k 10 [--exact]
    python -m tml.projects.twhin.embeddings index --source EXPORT_DIR --table user [--kind auto|hnsw|ivf]

`index` builds a faiss index of an exported table (HNSW or IVF by size, see `ann_index`) and saves
it beside the export; `nearest` then uses it for that table unless `--exact` is given. Without a
saved index (the default, and for small tables) `nearest` is exact.

This module is the command line; the library (`export_embeddings`, `get_embeddings`, `nearest`,
`load_table`, ...) lives in `embedding_tables.py` and is served from here too, imported on first
use so that `--help` answers without importing torch.
"""
from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from tml.common.entry_point import call_command, command_parser, library_attributes, run_command

__getattr__ = library_attributes("tml.projects.twhin.embedding_tables")


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__, config="none")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="Write every table of a checkpoint to Parquet.")
    export.add_argument("--source", required=True, help="Checkpoint or save directory.")
    export.add_argument("--out_dir", required=True)
    export.add_argument("--table", action="append", help="Export only these tables (repeatable).")
    export.add_argument("--config_path", "--config_yaml_path", dest="config_path", metavar="FILE",
                        help="TwHIN config, to name the relation vectors (--config_yaml_path is the same flag).")
    get = commands.add_parser("get", help="Print rows as JSON lines {id, vector}.")
    near = commands.add_parser("nearest", help="Print the k nearest rows (cosine) as JSON lines.")
    for sub in (get, near):
        sub.add_argument("--source", required=True, help="Checkpoint, save directory or export directory.")
        sub.add_argument("--table", required=True)
        sub.add_argument("--ids", type=int, nargs="+", required=True)
    get.add_argument("--normalize", action="store_true")
    near.add_argument("--k", type=int, default=10)
    near.add_argument("--exact", action="store_true", help="Exact search even when a saved index exists.")
    index = commands.add_parser("index", help="Build a faiss index of an exported table, saved beside it.")
    index.add_argument("--source", required=True, help="Export directory.")
    index.add_argument("--table", required=True)
    index.add_argument("--kind", choices=("auto", "exact", "hnsw", "ivf"), default="auto",
                       help="auto: none below 50k rows (exact search), HNSW below 1M, IVF from 1M.")
    index.add_argument("--metric", choices=("cosine", "dot"), default="cosine",
                       help="cosine (what `nearest` ranks by) or dot (the translation/dot operators' ranking).")
    return parser


def run(args: argparse.Namespace) -> int:
    from tml.projects.twhin.embedding_tables import build_nearest_index, export_embeddings, get_embeddings, nearest

    if args.command == "export":
        names = None
        if args.config_path:
            from tml.core.config import load_config_from_yaml
            from tml.projects.twhin.config import TwhinConfig

            names = [r.name for r in load_config_from_yaml(TwhinConfig, args.config_path).model.relations]
        for table, path in export_embeddings(args.source, args.out_dir, args.table, names).items():
            print(f"{table}: {path}")
    elif args.command == "get":
        for node, vector in get_embeddings(args.ids, args.table, args.source, args.normalize).items():
            print(json.dumps({"id": node, "vector": [round(float(x), 7) for x in vector]}))
    elif args.command == "index":
        path = build_nearest_index(args.source, args.table, args.kind, args.metric)
        print(f"{args.table}: {path}" if path else f"{args.table}: small table, no index built: `nearest` searches it exactly")
    else:
        for node, neighbours in nearest(args.ids, args.k, args.table, args.source, exact=args.exact).items():
            print(json.dumps({"id": node, "nearest": [{"id": i, "cosine": round(s, 6)} for i, s in neighbours]}))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
