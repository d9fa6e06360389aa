"""Rank functions for tests/ml_logging (spawned ranks import them by name)."""
from __future__ import annotations

import contextlib
import io


def log_to_various_ranks(rank: int, world_size: int) -> list[str]:
    """Log with each kind of `rank=` and return what this rank printed to stdout, one entry per line."""
    from tml.ml_logging.torch_logging import logging

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        logging.info("default goes to rank 0")
        logging.info("addressed to rank 1", rank=1)
        logging.warning("everyone, value %d", 7, rank=-1)
        logging.error("rank %s error", "zero", rank=0)
    return printed.getvalue().splitlines()
