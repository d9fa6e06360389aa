"""PyKEEN's Nations knowledge graph as TwHIN edges (one node type, `country`; 55 relations).

Reads `pykeen/datasets/nations/{train,valid,test}.txt` (head, relation, tail per line) from the
installed `pykeen` wheel (`.venv/bin/pip install --no-deps pykeen==1.11.1`; it is never imported)
and writes under --out_dir (default ~/tmp/tml/twhin/nations, i.e. $TML_OUTPUT/twhin/nations: the path config/nations.yaml reads):
    train/part-00000.parquet, valid/part-00000.parquet, test/part-00000.parquet   (lhs, rel, rhs)
    mapping/country.parquet, mapping/relations.parquet                          (id, key)
Entities and relations are numbered in sorted name order over all three splits.

    python -m tml.projects.twhin.scripts.prepare_nations [--out_dir DIR] [--source_dir DIR]
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy as np

from tml.common.entry_point import call_command, command_parser, run_command
from tml.common.output_dirs import default_output_dir
from tml.projects.twhin.scripts.package_data import package_data_dir, write_edges, write_mapping

SPLITS = ("train", "valid", "test")
DEFAULT_OUT_DIR = default_output_dir("twhin", "nations")  # the folder config/nations.yaml reads


def read_triples(path: str) -> list[tuple[str, str, str]]:
    triples = []
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{number}: expected 'head<TAB>relation<TAB>tail', got {line!r}")
            triples.append((parts[0], parts[1], parts[2]))
    return triples


def prepare_nations(source_dir: str, out_dir: str) -> dict[str, int]:
    """Convert the three splits; returns counts (entities, relations, edges per split)."""
    splits = {split: read_triples(os.path.join(source_dir, f"{split}.txt")) for split in SPLITS}
    all_triples = [triple for triples in splits.values() for triple in triples]
    entities = sorted({h for h, _, _ in all_triples} | {t for _, _, t in all_triples})
    relations = sorted({r for _, r, _ in all_triples})
    entity_id = {name: index for index, name in enumerate(entities)}
    relation_id = {name: index for index, name in enumerate(relations)}
    counts = {"entities": len(entities), "relations": len(relations)}
    for split, triples in splits.items():
        lhs = np.array([entity_id[h] for h, _, _ in triples])
        rel = np.array([relation_id[r] for _, r, _ in triples])
        rhs = np.array([entity_id[t] for _, _, t in triples])
        write_edges(os.path.join(out_dir, split, "part-00000.parquet"), lhs, rel, rhs)
        counts[split] = len(triples)
    write_mapping(os.path.join(out_dir, "mapping", "country.parquet"), entities)
    write_mapping(os.path.join(out_dir, "mapping", "relations.parquet"), relations)
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__, config="none")
    parser.add_argument("--out_dir", default=DEFAULT_OUT_DIR)
    parser.add_argument("--source_dir", help="Folder with train/valid/test.txt (default: from the pykeen package).")
    return parser


def run(args: argparse.Namespace) -> int:
    source = args.source_dir or str(package_data_dir("pykeen", "1.11.1", "pykeen/datasets/nations"))
    counts = prepare_nations(source, args.out_dir)
    print(f"nations: {counts} -> {args.out_dir}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
