"""A random heterogeneous graph with planted structure, written as TwHIN edge Parquet files.

Every node gets one of `num_clusters` hidden clusters. Each relation maps an lhs cluster to an rhs
cluster through its own random permutation; an edge joins a uniform lhs node to a uniform rhs node
of the mapped cluster (or, with probability `noise`, of the whole rhs table). A model can learn the
clusters and the per-relation mappings, so held-out edges of the same graph are predictable: tests
and local runs can check that training helps, not only that it runs.

    python -m tml.projects.twhin.data.generate_random_graph --out_dir /tmp/g \
        --table user=1000 --table tweet=500 --relation fav:user:tweet --relation reply:user:tweet \
        --num_edges 20000 [--num_files 2] [--num_clusters 8] [--noise 0.05] [--weights] [--seed 0]
    python -m tml.projects.twhin.data.generate_random_graph --out_dir /tmp/g \
        --config_yaml_path projects/twhin/config/local.yaml --num_edges 20000
"""
from __future__ import annotations

import argparse
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.common import filesystem
from tml.projects.twhin.data.schema import GraphSchema


def _nodes_by_cluster(clusters: np.ndarray, num_clusters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(node ids sorted by cluster, start of each cluster in that list, size of each cluster)."""
    order = np.argsort(clusters, kind="stable")
    sizes = np.bincount(clusters, minlength=num_clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return order, starts, sizes


def generate_random_graph(
    tables: Mapping[str, int],
    relations: Sequence[tuple[str, str, str]],
    num_edges: int,
    num_clusters: int = 8,
    noise: float = 0.05,
    weights: bool = False,
    seed: int = 0,
) -> pa.Table:
    """Edges (columns lhs, rel, rhs and, with `weights`, weight) of a planted-cluster graph.

    `relations` are (name, lhs table, rhs table); `rel` is the index into that list.
    """
    schema = GraphSchema.build(dict(tables), relations)
    if num_edges <= 0 or num_clusters <= 0 or not 0.0 <= noise <= 1.0:
        raise ValueError(
            f"need num_edges > 0, num_clusters > 0 and 0 <= noise <= 1; got {num_edges}, {num_clusters}, {noise}."
        )
    rng = np.random.default_rng(seed)
    cluster_of = [rng.integers(0, num_clusters, size=size) for size in schema.table_sizes]
    grouped = [_nodes_by_cluster(clusters, num_clusters) for clusters in cluster_of]
    mapping = np.stack([rng.permutation(num_clusters) for _ in relations])  # [R, C]

    rel = rng.integers(0, schema.num_relations, size=num_edges)
    lhs_table = np.asarray(schema.relation_lhs)[rel]
    rhs_table = np.asarray(schema.relation_rhs)[rel]
    sizes = schema.sizes_array()
    lhs = rng.integers(0, sizes[lhs_table])
    rhs = rng.integers(0, sizes[rhs_table])  # the noise edges; structured ones are overwritten below
    structured = rng.random(num_edges) >= noise
    lhs_cluster = np.empty(num_edges, dtype=np.int64)
    for table, clusters in enumerate(cluster_of):
        rows = lhs_table == table
        lhs_cluster[rows] = clusters[lhs[rows]]
    target_cluster = mapping[rel, lhs_cluster]
    for table, (order, starts, counts) in enumerate(grouped):
        rows = np.flatnonzero(structured & (rhs_table == table) & (counts[target_cluster] > 0))
        target = target_cluster[rows]
        rhs[rows] = order[starts[target] + rng.integers(0, counts[target])]
    columns = {"lhs": lhs.astype(np.int64), "rel": rel.astype(np.int64), "rhs": rhs.astype(np.int64)}
    if weights:
        columns["weight"] = rng.uniform(0.5, 1.5, size=num_edges).astype(np.float32)
    return pa.table(columns)


def write_random_graph(
    out_dir: str,
    tables: Mapping[str, int],
    relations: Sequence[tuple[str, str, str]],
    num_edges: int,
    num_files: int = 1,
    **kwargs,
) -> list[str]:
    """Write the graph as `num_files` files `part-00000.parquet`, ... under `out_dir`; returns their paths."""
    table = generate_random_graph(tables, relations, num_edges, **kwargs)
    fs = filesystem.infer_fs(out_dir)
    fs.makedirs(out_dir, exist_ok=True)
    paths = []
    for part in range(num_files):
        start, stop = num_edges * part // num_files, num_edges * (part + 1) // num_files
        path = f"{out_dir.rstrip('/')}/part-{part:05d}.parquet"
        with filesystem.open_file(path, "wb") as sink:
            pq.write_table(table.slice(start, stop - start), sink)
        paths.append(path)
    return paths


def _parse_table(text: str) -> tuple[str, int]:
    name, sep, size = text.partition("=")
    if not sep or not size.replace("_", "").isdigit():
        raise argparse.ArgumentTypeError(f"--table expects NAME=ROWS, got {text!r}")
    return name, int(size)


def _parse_relation(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"--relation expects NAME:LHS_TABLE:RHS_TABLE, got {text!r}")
    return parts[0], parts[1], parts[2]


def _graph_from_config(path: str) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    from tml.core.config import load_config_from_yaml
    from tml.projects.twhin.config import TwhinConfig

    model = load_config_from_yaml(TwhinConfig, path).model
    return model.table_sizes, [(r.name, r.lhs, r.rhs) for r in model.relations]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", required=True, help="Directory (local or fsspec URL) to write part files to.")
    parser.add_argument("--config_yaml_path", help="Take tables and relations from this TwHIN config.")
    parser.add_argument("--table", type=_parse_table, action="append", default=[], help="NAME=ROWS (repeatable).")
    parser.add_argument("--relation", type=_parse_relation, action="append", default=[],
                        help="NAME:LHS_TABLE:RHS_TABLE (repeatable; rel = order given).")
    parser.add_argument("--num_edges", type=int, required=True)
    parser.add_argument("--num_files", type=int, default=1)
    parser.add_argument("--num_clusters", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--weights", action="store_true", help="Add a weight column (uniform in [0.5, 1.5]).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.config_yaml_path:
        if args.table or args.relation:
            parser.error("give either --config_yaml_path or --table/--relation, not both")
        tables, relations = _graph_from_config(args.config_yaml_path)
    else:
        if not args.table or not args.relation:
            parser.error("give --config_yaml_path, or at least one --table and one --relation")
        tables, relations = dict(args.table), args.relation
    paths = write_random_graph(
        args.out_dir, tables, relations, args.num_edges, num_files=args.num_files,
        num_clusters=args.num_clusters, noise=args.noise, weights=args.weights, seed=args.seed,
    )
    print(f"wrote {args.num_edges} edges to {len(paths)} file(s) under {args.out_dir}")


if __name__ == "__main__":
    main()
