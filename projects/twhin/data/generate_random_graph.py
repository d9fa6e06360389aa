"""A random heterogeneous graph with planted structure, written as TwHIN edge Parquet files.

Every node gets one of `num_clusters` hidden clusters. Each relation maps an lhs cluster to an rhs
cluster through its own random permutation; an edge joins a uniform lhs node to a uniform rhs node
of the mapped cluster (or, with probability `noise`, of the whole rhs table). A model can learn the
clusters and the per-relation mappings, so held-out edges of the same graph are predictable: tests
and local runs can check that training helps, not only that it runs.

    python -m tml.projects.twhin.data.generate_random_graph --out_dir DIR \
        --table user=1000 --table tweet=500 --relation fav:user:tweet --relation reply:user:tweet \
        --num_edges 20000 [--num_files 2] [--num_clusters 8] [--noise 0.05] [--weights] [--seed 0]
    python -m tml.projects.twhin.data.generate_random_graph --config_path projects/twhin/config/local.yaml \
        --num_edges 20000 [--out_dir DIR]

With a config, the tables and relations are the config's and --out_dir defaults to the folder of
its train_data.data_root. An output folder holding an earlier graph is refused unless --overwrite is
given (then only the earlier graph's files are deleted); a folder holding anything else is refused.
"""
from __future__ import annotations

import argparse
import posixpath
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import numpy as np

from tml.common.entry_point import call_command, command_parser, run_command

if TYPE_CHECKING:
    import pyarrow as pa


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
    import pyarrow as pa

    from tml.projects.twhin.data.schema import GraphSchema

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
    overwrite: bool = False,
    **kwargs,
) -> list[str]:
    """Write the graph as `num_files` files `part-00000.parquet`, ... under `out_dir`; returns their
    paths. A folder holding an earlier graph is refused unless `overwrite` (see `claim_output_dir`)."""
    import pyarrow.parquet as pq

    from tml.common import filesystem
    from tml.common.filesystem.generated_files import claim_output_dir

    table = generate_random_graph(tables, relations, num_edges, **kwargs)
    names = [f"part-{part:05d}.parquet" for part in range(num_files)]
    claim_output_dir(out_dir, names, "generate_random_graph", overwrite)
    paths = []
    for part, name in enumerate(names):
        start, stop = num_edges * part // num_files, num_edges * (part + 1) // num_files
        path = f"{out_dir.rstrip('/')}/{name}"
        with filesystem.open_file(path, "wb") as sink:
            pq.write_table(table.slice(start, stop - start), sink, write_page_checksum=True)
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


def _graph_from_config(path: str, overrides: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str, str]], str]:
    """Tables, relations and the folder of train_data.data_root of a TwHIN config."""
    from tml.core.config import load_config_from_yaml
    from tml.projects.twhin.config import TwhinConfig

    config = load_config_from_yaml(TwhinConfig, path, overrides)
    model = config.model
    data_root = config.train_data.data_root
    folder = posixpath.dirname(data_root) if any(char in data_root for char in "*?[") else data_root
    return model.table_sizes, [(r.name, r.lhs, r.rhs) for r in model.relations], folder


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__, config="optional")
    parser.add_argument("--out_dir", help="Folder (local or fsspec URL) for the part files; default with a "
                        "config: the folder of its train_data.data_root.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace the files of an earlier graph in --out_dir (and nothing else).")
    parser.add_argument("--table", type=_parse_table, action="append", default=[], help="NAME=ROWS (repeatable).")
    parser.add_argument("--relation", type=_parse_relation, action="append", default=[],
                        help="NAME:LHS_TABLE:RHS_TABLE (repeatable; rel = order given).")
    parser.add_argument("--num_edges", type=int, required=True)
    parser.add_argument("--num_files", type=int, default=1)
    parser.add_argument("--num_clusters", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--weights", action="store_true", help="Add a weight column (uniform in [0.5, 1.5]).")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> int:
    parser = build_parser()
    if args.config_path:
        if args.table or args.relation:
            parser.error("give either --config_path or --table/--relation, not both")
        tables, relations, data_folder = _graph_from_config(args.config_path, args.overrides)
        out_dir = args.out_dir or data_folder
    else:
        if not args.table or not args.relation:
            parser.error("give --config_path, or at least one --table and one --relation")
        if not args.out_dir:
            parser.error("--out_dir is required without --config_path")
        tables, relations, out_dir = dict(args.table), args.relation, args.out_dir
    paths = write_random_graph(
        out_dir, tables, relations, args.num_edges, num_files=args.num_files, overwrite=args.overwrite,
        num_clusters=args.num_clusters, noise=args.noise, weights=args.weights, seed=args.seed,
    )
    print(f"wrote {args.num_edges} edges to {len(paths)} file(s) under {out_dir}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
