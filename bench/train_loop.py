"""Examples/s of tml's `train` against a bare hand-written loop on the same sharded model and data.

Both run the same DistributedModelParallel model (two fused-Adagrad tables + an MLP, Adam on the
dense part) over the same in-memory batches, interleaved, several repeats; the ratio of medians is
the headline. `train` includes its pipeline, LR schedule, logging and its final checkpoint.

    .venv/bin/python bench/train_loop.py [--steps 500] [--repeats 5] [--batch 512]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torchrec  # noqa: E402
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: E402

from tml.common.batch import DataclassBatch  # noqa: E402
from tml.common.allocator import keep_freed_memory  # noqa: E402
from tml.common.device import setup_and_get_device  # noqa: E402
from tml.common.sharding import maybe_shard_model, quiet_torchrec_warnings  # noqa: E402
from tml.core.custom_training_loop import train  # noqa: E402
from tml.core.optimizers import DenseGroup, apply_embedding_optimizers, build_combined_optimizer, dense_parameters  # noqa: E402
from tml.core.optimizers.config import EmbeddingOptimizerConfig, FusedAdagradConfig, LearningRate  # noqa: E402
from tml.ml_logging.torch_logging import logging  # noqa: E402

FEATURES = ("user", "item", "author")
NUM_IDS, DIM, DENSE = 20_000, 32, 64


@dataclasses.dataclass
class BenchBatch(DataclassBatch):
    dense: torch.Tensor = None
    sparse: KeyedJaggedTensor = None
    labels: torch.Tensor = None


class BenchModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        tables = [
            torchrec.EmbeddingBagConfig(name=f"t_{f}", embedding_dim=DIM, num_embeddings=NUM_IDS, feature_names=[f])
            for f in FEATURES
        ]
        self.ebc = torchrec.EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(len(FEATURES) * DIM + DENSE, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1),
        )

    def forward(self, batch: BenchBatch):
        pooled = self.ebc(batch.sparse).to_dict()
        logits = self.mlp(torch.cat([pooled[f] for f in FEATURES] + [batch.dense], 1)).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
        return loss, {"logits": logits.detach()}


def make_batches(count: int, batch_size: int) -> list[BenchBatch]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        lengths = torch.randint(1, 6, (len(FEATURES) * batch_size,), generator=generator)
        ids = torch.randint(0, NUM_IDS, (int(lengths.sum()),), generator=generator)
        sparse = KeyedJaggedTensor.from_lengths_sync(keys=list(FEATURES), values=ids, lengths=lengths)
        batches.append(BenchBatch(torch.randn(batch_size, DENSE, generator=generator), sparse,
                                  torch.randint(0, 2, (batch_size,), generator=generator).float()))
    return batches


def build(device: torch.device):
    """(sharded model, combined optimizer, its LRShim): fused Adagrad tables, Adam for the MLP."""
    torch.manual_seed(0)
    model = BenchModel()
    tables = {f"t_{f}": EmbeddingOptimizerConfig(adagrad=FusedAdagradConfig(lr=0.05)) for f in FEATURES}
    apply_embedding_optimizers(model, tables)
    sharded = maybe_shard_model(model, device)
    dense = DenseGroup(dense_parameters(sharded), lambda ps: torch.optim.Adam(ps, lr=1e-3), LearningRate(constant=1e-3))
    optimizer, scheduler = build_combined_optimizer(sharded, {"dense_opt": dense}, tables, fused_first=True)
    return sharded, optimizer, scheduler


def run_bare(batches, device) -> float:
    model, optimizer, _ = build(device)
    model.train()
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def run_tml(batches, device) -> float:
    model, optimizer, scheduler = build(device)
    with tempfile.TemporaryDirectory() as save_dir:
        start = time.perf_counter()
        train(model, optimizer, device, save_dir, logging_interval=100, train_steps=len(batches) - 2,
              checkpoint_frequency=10**9, dataset=batches, worker_batch_size=batches[0].batch_size,
              scheduler=scheduler)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    quiet_torchrec_warnings()
    keep_freed_memory()  # as the entry points do; process-wide, so both loops get it
    logging.setLevel("WARNING")
    device = setup_and_get_device()
    batches = make_batches(args.steps + 2, args.batch)
    run_bare(batches[:20], device), run_tml(batches[:22], device)  # warm-up: tracing, allocator
    bare_rates, tml_rates = [], []
    for _ in range(args.repeats):
        # The pipeline reads two batches ahead, so `train` runs len-2 steps: compare equal step counts.
        bare_rates.append(args.steps * args.batch / run_bare(batches[: args.steps], device))
        tml_rates.append(args.steps * args.batch / run_tml(batches, device))
    ratio = statistics.median(tml_rates) / statistics.median(bare_rates)
    print(f"threads={torch.get_num_threads()} batch={args.batch} steps={args.steps} repeats={args.repeats}")
    print(f"bare examples/s: median {statistics.median(bare_rates):.0f} max {max(bare_rates):.0f}")
    print(f"tml  examples/s: median {statistics.median(tml_rates):.0f} max {max(tml_rates):.0f}")
    print(f"RESULT train_loop_vs_bare_ratio={ratio:.3f}")
    print(f"RESULT tml_train_examples_per_s={statistics.median(tml_rates):.0f}")
    print(f"RESULT bare_loop_examples_per_s={statistics.median(bare_rates):.0f}")


if __name__ == "__main__":
    main()
