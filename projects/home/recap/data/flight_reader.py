"""A reader process: serve a dataset config's ready batches to trainers over Arrow Flight.

    python -m tml.projects.home.recap.data.flight_reader --config_path FILE [--set key=value ...] \\
        [--section train_data] [--host 0.0.0.0] [--port 2222] [--trainer_world_size N]

It reads `--section` (default `train_data`; or `validation_data.<name>`) of a Heavy Ranker config
with RecapDataset (files, decoding, preprocessing, shuffling, batching; repeating forever for
train_data) and serves each batch once, as an Arrow record batch, to whichever trainer asks next.
Batches have global_batch_size / --trainer_world_size rows (one trainer rank's share). Trainers
name the readers in `train_data.remote_readers: [host:port, ...]`. Several readers should read
different files (give each its own `inputs`) or different seeds, or they serve the same rows.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from tml.common.entry_point import call_command, command_parser, load_command_config, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("Serve a Heavy Ranker dataset's ready batches over Arrow Flight.")
    parser.add_argument("--section", default="train_data", help="train_data or validation_data.<name>.")
    parser.add_argument("--host", default="0.0.0.0", help="Address to listen on (127.0.0.1: this machine only).")
    parser.add_argument("--port", type=int, default=2222, help="Port; 0 picks a free one (printed).")
    parser.add_argument("--trainer_world_size", type=int, default=1, help="Processes of the training job.")
    return parser


def _section(config, section: str):
    from tml.core.config import ConfigError

    if section == "train_data":
        return config.train_data, True
    prefix = "validation_data."
    name = section[len(prefix):] if section.startswith(prefix) else None
    if name is None or name not in config.validation_data:
        raise ConfigError(
            f"--section {section!r}: expected train_data or validation_data.<name> with a name among "
            f"{list(config.validation_data)}"
        )
    return config.validation_data[name], False


def serve(args: argparse.Namespace) -> int:
    from tml.common.batch_arrow import batch_to_arrow
    from tml.common.flight import serve_until_stopped
    from tml.projects.home.recap.config import JobMode, RecapConfig
    from tml.projects.home.recap.data.dataset import RecapDataset, per_rank_batch_size

    config = load_command_config(RecapConfig, args)
    data_config, is_train = _section(config, args.section)
    rank_batch = per_rank_batch_size(data_config.global_batch_size, args.trainer_world_size)
    data_config = data_config.model_copy(update={"global_batch_size": rank_batch, "remote_readers": None})
    large = config.model.large_embeddings
    dataset = RecapDataset(
        data_config,
        mode=JobMode.TRAIN if is_train else JobMode.EVALUATE,
        repeat=is_train,
        sparse_feature_names=[table.name for table in large.tables] if large is not None else None,
        rank=0,
        world_size=1,
    )
    what = f"{args.section} of {args.config_path} in batches of {rank_batch} rows"
    return serve_until_stopped((batch_to_arrow(batch) for batch in dataset), args.host, args.port, what)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), serve, argv)


if __name__ == "__main__":
    run_command(build_parser(), serve)
