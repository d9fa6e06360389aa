"""RecBole's MovieLens-100k as a heterogeneous TwHIN graph: users, movies and Freebase entities.

Reads `recbole/dataset_example/ml-100k/` from the installed `recbole` wheel
(`.venv/bin/pip install --no-deps recbole==1.2.1`; it is never imported):
- ml-100k.inter (user, item, rating, time): `liked` = rating >= 4, `disliked` = rating <= 2, both
  user -> movie (ratings of 3 are dropped);
- ml-100k.kg (head, relation, tail Freebase triples) with ml-100k.link (item -> entity): an entity
  linked to an item is that movie; the others form the `entity` table. A KG relation becomes one
  TwHIN relation per (head type, tail type) it connects, named `<relation>` when it connects one
  pair only, else `<relation>:<head type>-<tail type>`.
The ratings are split at random (seed 0) into 90% train, 5% valid and 5% test; every KG triple is
training data. `--split time` cuts them by time instead, exactly where the Heavy Ranker's MovieLens
data is cut (the earliest 80% of all ratings, 3 stars included, in (time, user, movie) order,
train; the rest is valid; test is empty), so that TwHIN vectors trained on it can feed that
ranker without seeing its validation ratings. Then only users with a training edge are in the user
table (ids 0..n-1; the config's larger table leaves its last rows unused): a user first seen after
the split has no vector, rather than an untrained random one. Written under --out_dir (default
$TML_OUTPUT/twhin/movielens, TML_OUTPUT defaulting to ~/tmp/tml: the path config/movielens.yaml reads):
    train/, valid/, test/ (part-00000.parquet: lhs, rel, rhs), mapping/<table>.parquet (id, key),
    mapping/relations.parquet, graph.yaml (the tables and relations, to paste into a config).

    python -m tml.projects.twhin.scripts.prepare_movielens [--out_dir DIR] [--source_dir DIR]
"""
from __future__ import annotations

import argparse
import csv
import os
from collections import Counter
from typing import Iterator, Optional, Sequence

import numpy as np
import yaml

from tml.common.entry_point import call_command, command_parser, run_command
from tml.common.output_dirs import default_output_dir
from tml.projects.twhin.scripts.package_data import package_data_dir, write_edges, write_mapping

DEFAULT_OUT_DIR = default_output_dir("twhin", "movielens")  # the folder config/movielens.yaml reads
LIKED_MIN_RATING = 4.0
DISLIKED_MAX_RATING = 2.0
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)
TABLES = ("user", "movie", "entity")


def _rows(path: str) -> Iterator[dict[str, str]]:
    """RecBole atomic files: TSV whose header names columns as `name:type`."""
    with open(path, encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [column.split(":")[0] for column in next(reader)]
        for row in reader:
            if row:
                yield dict(zip(header, row))


def _numbered(keys: set[str]) -> list[str]:
    return sorted(keys, key=lambda key: (0, int(key), key) if key.isdigit() else (1, 0, key))


def _time_split(times: np.ndarray, users: np.ndarray, items: np.ndarray, validation_fraction: float) -> np.ndarray:
    """Positions (in rating order) of the earliest (1 - validation_fraction) ratings, ordered by
    (time, user, movie) as the Heavy Ranker's preparation orders them."""
    order = np.lexsort((items, users, times))
    return order[: int(round(len(order) * (1.0 - validation_fraction)))]


def prepare_movielens(source_dir: str, out_dir: str, seed: int = 0, split: str = "random",
                      validation_fraction: float = 0.2) -> dict:
    """Convert; returns the graph description written to graph.yaml (tables, relations, counts)."""
    if split not in ("random", "time"):
        raise ValueError(f"split must be 'random' or 'time', got '{split}'")
    inter = list(_rows(os.path.join(source_dir, "ml-100k.inter")))
    ratings = [(r["user_id"], r["item_id"], float(r["rating"])) for r in inter]
    in_train = np.zeros(len(ratings), dtype=bool)
    if split == "time":
        in_train[_time_split(
            np.array([float(r["timestamp"]) for r in inter]),
            np.array([int(r["user_id"]) for r in inter]),
            np.array([int(r["item_id"]) for r in inter]),
            validation_fraction,
        )] = True
    entity_of_item = {r["item_id"]: r["entity_id"] for r in _rows(os.path.join(source_dir, "ml-100k.link"))}
    item_of_entity = {entity: item for item, entity in entity_of_item.items()}
    triples = [(r["head_id"], r["relation_id"], r["tail_id"]) for r in _rows(os.path.join(source_dir, "ml-100k.kg"))]

    is_edge = [rating >= LIKED_MIN_RATING or rating <= DISLIKED_MAX_RATING for _, _, rating in ratings]
    if split == "time":  # a user without a training edge gets no vector (and no row): nothing could train it
        users = _numbered({ratings[i][0] for i in range(len(ratings)) if in_train[i] and is_edge[i]})
    else:
        users = _numbered({user for user, _, _ in ratings})
    movies = _numbered({item for _, item, _ in ratings} | set(entity_of_item))
    kg_nodes = {node for head, _, tail in triples for node in (head, tail)}
    entities = sorted(kg_nodes - set(item_of_entity))
    ids = {
        "user": {key: i for i, key in enumerate(users)},
        "movie": {key: i for i, key in enumerate(movies)},
        "entity": {key: i for i, key in enumerate(entities)},
    }

    def node(key: str) -> tuple[str, int]:
        if key in item_of_entity and item_of_entity[key] in ids["movie"]:
            return "movie", ids["movie"][item_of_entity[key]]
        return "entity", ids["entity"][key]

    kg_edges = []
    for head, relation, tail in triples:
        (head_type, head_id), (tail_type, tail_id) = node(head), node(tail)
        kg_edges.append((relation, head_type, tail_type, head_id, tail_id))
    pairs_of = {}
    for relation, head_type, tail_type, _, _ in kg_edges:
        pairs_of.setdefault(relation, set()).add((head_type, tail_type))
    relation_keys = [("liked", "user", "movie"), ("disliked", "user", "movie")]
    relation_keys += sorted({(relation, h, t) for relation, h, t, _, _ in kg_edges})
    names = [
        key if key in ("liked", "disliked") or len(pairs_of[key]) == 1 else f"{key}:{h}-{t}"
        for key, h, t in relation_keys
    ]
    rel_index = {key: i for i, key in enumerate(relation_keys)}

    liked, disliked = rel_index[("liked", "user", "movie")], rel_index[("disliked", "user", "movie")]
    kept = [i for i in range(len(ratings)) if is_edge[i] and ratings[i][0] in ids["user"]]
    rating_edges = [
        (liked if ratings[i][2] >= LIKED_MIN_RATING else disliked, ids["user"][ratings[i][0]], ids["movie"][ratings[i][1]])
        for i in kept
    ]
    if split == "time":
        train_mask = in_train[kept]
        splits = {
            "train": np.flatnonzero(train_mask),
            "valid": np.flatnonzero(~train_mask),
            "test": np.zeros(0, dtype=np.int64),
        }
    else:
        order = np.random.default_rng(seed).permutation(len(rating_edges))
        cut_train = int(len(order) * SPLIT_FRACTIONS[0])
        cut_valid = cut_train + int(len(order) * SPLIT_FRACTIONS[1])
        splits = {"train": order[:cut_train], "valid": order[cut_train:cut_valid], "test": order[cut_valid:]}
    kg_rows = [(rel_index[(r, h, t)], head, tail) for r, h, t, head, tail in kg_edges]
    kg_array = np.array(kg_rows, dtype=np.int64).reshape(-1, 3)
    rating_array = np.array(rating_edges, dtype=np.int64).reshape(-1, 3)
    counts = {}
    for split, rows in splits.items():
        edges = rating_array[np.sort(rows)]
        if split == "train":
            edges = np.concatenate([edges, kg_array])
        write_edges(os.path.join(out_dir, split, "part-00000.parquet"), edges[:, 1], edges[:, 0], edges[:, 2])
        counts[split] = int(edges.shape[0])
    for table, keys in (("user", users), ("movie", movies), ("entity", entities)):
        write_mapping(os.path.join(out_dir, "mapping", f"{table}.parquet"), keys)
    write_mapping(os.path.join(out_dir, "mapping", "relations.parquet"), names)
    relation_counts = Counter(int(r) for r in np.concatenate([rating_array[:, 0], kg_array[:, 0]]))
    graph = {
        "tables": {"user": len(users), "movie": len(movies), "entity": len(entities)},
        "relations": [
            {"name": name, "lhs": h, "rhs": t, "edges": relation_counts[i]}
            for i, (name, (_, h, t)) in enumerate(zip(names, relation_keys))
        ],
        "edges": counts,
    }
    with open(os.path.join(out_dir, "graph.yaml"), "w", encoding="utf-8") as stream:
        yaml.safe_dump(graph, stream, sort_keys=False)
    return graph


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__, config="none")
    parser.add_argument("--out_dir", default=DEFAULT_OUT_DIR)
    parser.add_argument("--source_dir", help="Folder with the ml-100k.* files (default: from the recbole package).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the train/valid/test split of the ratings.")
    parser.add_argument("--split", choices=("random", "time"), default="random",
                        help="random: 90/5/5 train/valid/test; time: the Heavy Ranker's time cut (train/valid).")
    parser.add_argument("--validation_fraction", type=float, default=0.2, help="Latest share of ratings (--split time).")
    return parser


def run(args: argparse.Namespace) -> int:
    source = args.source_dir or str(package_data_dir("recbole", "1.2.1", "recbole/dataset_example/ml-100k"))
    graph = prepare_movielens(source, args.out_dir, args.seed, args.split, args.validation_fraction)
    relations = len(graph["relations"])
    print(f"movielens: tables {graph['tables']}, {relations} relations, edges {graph['edges']} -> {args.out_dir}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
