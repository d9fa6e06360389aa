"""Which rank reads what in each pass over the data.

Every rank shuffles the file list with the same seed and pass number, then takes every
world_size-th file, so in one pass the ranks read disjoint files that together cover the data.
With fewer files than ranks the same is done with row groups. The original had no sharding
(each rank read everything) and its generic reader sampled files with replacement (spec B14).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from tml.projects.home.recap.data.parquet_reader import ReadUnit


def pass_rng(seed: int, pass_index: int, rank: int = -1) -> np.random.Generator:
    """A generator per (seed, pass, rank); rank -1 is the one every rank shares, pass -1 a whole run's."""
    return np.random.default_rng([seed, pass_index + 1, rank + 1])


def shuffled_files(files: Sequence[str], seed: int, pass_index: int) -> list[str]:
    """The same permutation on every rank for a given seed and pass."""
    order = pass_rng(seed, pass_index).permutation(len(files))
    return [files[i] for i in order]


def units_for_rank(
    files: Sequence[str],
    rank: int,
    world_size: int,
    row_group_count: Callable[[str], int],
) -> list[ReadUnit]:
    """This rank's share of `files` (already in pass order): whole files, or row groups if files are too few."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if len(files) >= world_size:
        return [ReadUnit(path) for path in files[rank::world_size]]
    row_groups = [(path, index) for path in files for index in range(row_group_count(path))]
    if len(row_groups) < world_size:
        raise ValueError(
            f"{len(files)} files with {len(row_groups)} row groups in all cannot be shared by "
            f"{world_size} ranks; write more files or smaller row groups (each rank needs at least one)"
        )
    mine: dict[str, list[int]] = {}
    for path, index in row_groups[rank::world_size]:
        mine.setdefault(path, []).append(index)
    return [ReadUnit(path, tuple(indices)) for path, indices in mine.items()]


def pass_units(
    files: Sequence[str],
    seed: int,
    pass_index: int,
    rank: int,
    world_size: int,
    row_group_count: Callable[[str], int],
) -> list[ReadUnit]:
    return units_for_rank(shuffled_files(files, seed, pass_index), rank, world_size, row_group_count)
