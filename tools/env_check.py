"""Smoke check run at the end of ./setup.sh: versions, device, and one sharded embedding forward.

Run it by hand with `python -m tml.tools.env_check` when an install looks suspicious; it exits 1
when the sharded forward fails.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import sys
import warnings
from typing import TYPE_CHECKING

from tml.common.entry_point import command_parser, run_command

if TYPE_CHECKING:
    import torch


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _sharded_embedding_forward() -> str:
    from tml.common.device import setup_and_get_device, teardown
    from tml.common.sharding import quiet_torchrec_warnings

    quiet_torchrec_warnings()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    device = setup_and_get_device()
    try:
        return _forward_through_a_sharded_table(device)
    finally:
        teardown()  # after the sharded module is gone, so that the group is freed with it


def _forward_through_a_sharded_table(device: "torch.device") -> str:
    import torch
    import torchrec
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from tml.common.sharding import maybe_shard_model
    from tml.core.optimizers import apply_embedding_optimizers
    from tml.core.optimizers.config import EmbeddingOptimizerConfig, FusedSgdConfig

    tables = [torchrec.EmbeddingBagConfig(name="t0", embedding_dim=8, num_embeddings=16, feature_names=["f0"])]
    module = torchrec.EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    apply_embedding_optimizers(module, {"t0": EmbeddingOptimizerConfig(sgd=FusedSgdConfig(lr=0.1))})
    sharded = maybe_shard_model(module, device)
    ids = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 1])
    ).to(device)
    pooled = sharded(ids).to_dict()["f0"]
    if tuple(pooled.shape) != (2, 8) or not torch.isfinite(pooled).all():
        raise RuntimeError(f"unexpected pooled output {tuple(pooled.shape)}")
    return f"ok (sharded EmbeddingBagCollection forward on {device})"


def build_parser() -> argparse.ArgumentParser:
    return command_parser(__doc__, config="none")


def main(args: argparse.Namespace | None = None) -> int:
    import torch

    import tml

    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    print(f"tml           {tml.__version__} ({tml.__file__})")
    print(f"python        {sys.version.split()[0]}")
    for distribution in ("torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu", "pyarrow", "pydantic"):
        version = _version(distribution)
        if version != "not installed" or distribution in ("torch", "torchrec"):
            print(f"{distribution:<13} {version}")
    print(f"device        {device}")
    try:
        print(f"sharded emb   {_sharded_embedding_forward()}")
    except Exception as error:  # noqa: BLE001 - the point is to report any failure in one line
        print(f"sharded emb   FAILED: {type(error).__name__}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    run_command(build_parser(), main)
