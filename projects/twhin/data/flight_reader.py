"""A TwHIN reader process: serve a config's ready edge batches to trainers over Arrow Flight.

    python -m tml.projects.twhin.data.flight_reader --config_path FILE [--set key=value ...] \\
        [--host 0.0.0.0] [--port 2222]

It reads `train_data` of a TwHIN config as a training rank would (`EdgesDataset`: the edge files,
checked against the graph, shuffled anew every epoch, cut into batches of per_replica_batch_size
edges with their negatives), repeating the edges forever, and serves each batch once, as an Arrow
record batch, to whichever trainer asks next (the original's TwHIN reader role, `serve()`).
Trainers name the readers in `train_data.remote_readers: [host:port, ...]`. Give each reader its
own edges (`train_data.data_root`, or `offset`/`limit`) or its own `train_data.seed`, or they serve
the same edges in the same order.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from tml.common.entry_point import call_command, command_parser, load_command_config, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("Serve a TwHIN config's ready edge batches over Arrow Flight.")
    parser.add_argument("--host", default="0.0.0.0", help="Address to listen on (127.0.0.1: this machine only).")
    parser.add_argument("--port", type=int, default=2222, help="Port; 0 picks a free one (printed).")
    return parser


def serve(args: argparse.Namespace) -> int:
    from tml.common.batch_arrow import batch_to_arrow
    from tml.common.flight import serve_until_stopped
    from tml.projects.twhin.config import TwhinConfig
    from tml.projects.twhin.data.data import create_dataset

    config = load_command_config(TwhinConfig, args)
    dataset = create_dataset(config.train_data, config.model, rank=0, world_size=1)
    dataset.edges()  # read and check the edges now: a bad file stops the reader before it serves
    batches = (batch_to_arrow(batch) for batch in dataset.dataloader(num_epochs=None))
    what = f"{dataset.num_edges} edges of {config.train_data.data_root} in batches of {dataset.batch_size}"
    return serve_until_stopped(batches, args.host, args.port, what)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), serve, argv)


if __name__ == "__main__":
    run_command(build_parser(), serve)
