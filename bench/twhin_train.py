"""Edges/s of tml's TwHIN training step against a plain-PyTorch step of the same model.

Ours: `TwhinModelAndLoss` under DistributedModelParallel (world size 1) with a fused optimizer per
table, driven exactly as the training loop drives it (`TrainStepRunner`: torchrec's train pipeline
for one CPU process, then the LR scheduler), fed by `EdgesDataset` (shuffling, batching, negative
sampling, loss weights; prepared ahead in a background thread by default, as the data config's
`prefetch` does; `--prefetch 0` prepares them inline). Plain: `nn.Embedding(sparse=True)` tables, a
relation-vector parameter, `torch.optim.SGD` (or `Adagrad`) on sparse gradients, and the same
negatives sampled in torch inside the step (shared per relation, as the model does); written the
fast way for CPU (one GEMM for the in-batch negatives of all relations, product-and-sum scores).
Both read the same in-memory edges of the original's graph shape (424k users, 72k tweets, four
user -> tweet relations), and use the same dim, batch, negatives, translation operator, loss
weighting and learning rates, on the same device (a GPU when there is one). The training math runs
on one CPU thread in both; they run interleaved, several repeats; ratios are of medians.

The headline is at `--batch` (4096 edges per step); `--small_batch` (500, the original's local
config) is measured in the same run and reported as its own ratio: there torchrec's fixed per-step
cost (the sharded lookup's Python, ~0.5 ms) weighs more than at training-size batches.

    .venv/bin/python bench/twhin_train.py [--batch 4096] [--small_batch 500] [--in_batch_negatives 10]
        [--global_negatives 0] [--optimizer sgd|adagrad] [--dim 64] [--prefetch 2] [--steps 0] [--repeats 7]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from tml.common.allocator import keep_freed_memory  # noqa: E402
from tml.common.device import setup_and_get_device, teardown  # noqa: E402
from tml.common.sharding import maybe_shard_model, quiet_torchrec_warnings  # noqa: E402
from tml.core.train_pipeline import TrainStepRunner  # noqa: E402
from tml.ml_logging.torch_logging import logging  # noqa: E402
from tml.projects.twhin.data.config import TwhinDataConfig  # noqa: E402
from tml.projects.twhin.data.edges import EdgesDataset  # noqa: E402
from tml.projects.twhin.data.schema import GraphSchema  # noqa: E402
from tml.projects.twhin.models.config import TwhinModelConfig  # noqa: E402
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss, apply_optimizers  # noqa: E402
from tml.projects.twhin.optimizer import build_optimizer  # noqa: E402
from tml.projects.twhin.scripts.package_data import write_edges  # noqa: E402

# The original's config/local.yaml graph: users and tweets, four user -> tweet relations.
USERS, TWEETS, RELATIONS = 424_241, 72_543, ("fav", "reply", "retweet", "magic_recs")
TABLE_LR, RELATION_LR, ADAGRAD_EPS = 0.01, 0.05, 1e-8
OPTIMIZERS = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}  # both take sparse gradients


def model_config(dim: int, optimizer: str = "sgd") -> TwhinModelConfig:
    settings = {"lr": TABLE_LR, **({"eps": ADAGRAD_EPS} if optimizer == "adagrad" else {})}
    return TwhinModelConfig.model_validate({
        "embeddings": {"tables": [
            {"name": name, "num_embeddings": rows, "embedding_dim": dim, "data_type": "fp32",
             "optimizer": {optimizer: settings}}
            for name, rows in (("user", USERS), ("tweet", TWEETS))
        ]},
        "relations": [{"name": name, "lhs": "user", "rhs": "tweet"} for name in RELATIONS],
        "translation_optimizer": {"sgd": {"lr": RELATION_LR}},
    })


# ------------------------------------------------------------------------ the plain-PyTorch step


class PlainTwhin(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(USERS, dim, sparse=True)
        self.tweet = nn.Embedding(TWEETS, dim, sparse=True)
        self.relations = nn.Parameter(torch.rand(len(RELATIONS), dim))


def relation_negatives(rel: torch.Tensor, count: int) -> torch.Tensor:
    """[R, count] per relation: a random permutation of its edges in the batch, repeated (-1: none)."""
    order = torch.argsort(rel + torch.rand(len(rel), dtype=torch.float64, device=rel.device))  # by relation, random within
    sizes = torch.bincount(rel, minlength=len(RELATIONS))
    positions = (sizes.cumsum(0) - sizes)[:, None] + torch.arange(count, device=rel.device) % sizes.clamp(min=1)[:, None]
    return torch.where(sizes[:, None] > 0, order[positions.clamp(max=len(rel) - 1)], -1)


def plain_step(model: PlainTwhin, optimizers: list[torch.optim.Optimizer], lhs, rel, rhs, in_batch: int, sampled: int):
    size, device = rel.shape[0], rel.device
    lhs_rows, rhs_rows, relation = model.user(lhs), model.tweet(rhs), model.relations.index_select(0, rel)
    head_query = rhs_rows + relation  # score(l, r, x) = l . (x + r): scores lhs candidates
    tail_bias = (lhs_rows * relation).sum(-1)  # ... = x . l + l . r: scores rhs candidates

    def in_batch_scores(rows, query):  # each edge against its relation's shared negatives: one GEMM
        negatives = relation_negatives(rel, in_batch)
        mine = negatives[rel]
        scores = (query @ rows[negatives.clamp(min=0).flatten()].T).gather(1, rel[:, None] * in_batch + torch.arange(in_batch, device=device))
        return scores, (mine >= 0) & (mine != torch.arange(size, device=device)[:, None])  # never the edge itself

    lhs_scores, lhs_exist = in_batch_scores(lhs_rows, head_query)
    rhs_scores, rhs_exist = in_batch_scores(rhs_rows, lhs_rows)
    logits = [(lhs_rows * head_query).sum(-1), lhs_scores, rhs_scores + tail_bias[:, None]]
    exist = [lhs_exist, rhs_exist]
    if sampled:
        logits += [(model.user(torch.randint(0, USERS, (size, sampled), device=device)) * head_query[:, None]).sum(-1),
                   (model.tweet(torch.randint(0, TWEETS, (size, sampled), device=device)) * lhs_rows[:, None]).sum(-1) + tail_bias[:, None]]
        exist += [torch.ones(size, sampled, dtype=torch.bool, device=device)] * 2
    exist = torch.cat(exist, 1).float()
    share = 1 / exist.sum(1, keepdim=True).clamp(min=1)  # an edge's negatives weigh as much as the edge
    labels = torch.cat([torch.ones(size, device=device), torch.zeros(exist.numel(), device=device)])
    weights = torch.cat([torch.ones(size, device=device), (exist * share).flatten()])
    loss = F.binary_cross_entropy_with_logits(torch.cat([logits[0], torch.cat(logits[1:], 1).flatten()]), labels, weights)
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
    return loss


# ------------------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(runner: TrainStepRunner, scheduler, batches, steps: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        runner.step(batches)
        scheduler.step()
    synchronize(device)
    return time.perf_counter() - start


class PlainTrainer:
    """Walks through the edges in order, a batch per step (the edges are already in random order)."""

    def __init__(self, dim: int, edges: dict[str, np.ndarray], batch: int, in_batch: int, sampled: int,
                 optimizer: str = "sgd", device: torch.device = torch.device("cpu")) -> None:
        self.device = device
        self.model = PlainTwhin(dim).to(device)
        tables = [self.model.user.weight, self.model.tweet.weight]
        extra = {"eps": ADAGRAD_EPS} if optimizer == "adagrad" else {}
        self.optimizers = [OPTIMIZERS[optimizer](tables, lr=TABLE_LR, **extra),
                           torch.optim.SGD([self.model.relations], lr=RELATION_LR)]
        self.edges = {name: torch.from_numpy(values).to(device) for name, values in edges.items()}
        self.batch, self.in_batch, self.sampled = batch, in_batch, sampled
        self.position = 0

    def time(self, steps: int) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            if self.position + self.batch > len(self.edges["rel"]):
                self.position = 0
            window = slice(self.position, self.position + self.batch)
            lhs, rel, rhs = (self.edges[name][window] for name in ("lhs", "rel", "rhs"))
            plain_step(self.model, self.optimizers, lhs, rel, rhs, self.in_batch, self.sampled)
            self.position += self.batch
        synchronize(self.device)
        return time.perf_counter() - start


def measure(args: argparse.Namespace, batch: int, steps: int, device: torch.device) -> tuple[list[float], list[float]]:
    """(ours, plain) edges/s of each interleaved repeat at `batch` edges per step."""
    config = model_config(args.dim, args.optimizer)
    rng = np.random.default_rng(0)
    columns = {"lhs": rng.integers(0, USERS, args.edges), "rel": rng.integers(0, len(RELATIONS), args.edges),
               "rhs": rng.integers(0, TWEETS, args.edges)}
    with tempfile.TemporaryDirectory() as data_dir:
        write_edges(os.path.join(data_dir, "edges.parquet"), columns["lhs"], columns["rel"], columns["rhs"])
        dataset = EdgesDataset(os.path.join(data_dir, "*.parquet"), GraphSchema.from_model_config(config),
                               batch, args.in_batch_negatives, args.global_negatives, prefetch=args.prefetch)
        dataset.edges()  # read once, as training does; the timed loop starts from memory
    batches = dataset.dataloader(num_epochs=None)

    torch.manual_seed(0)
    module = TwhinModel(config)
    apply_optimizers(module, config)
    ours = maybe_shard_model(TwhinModelAndLoss(module), device)
    optimizer, scheduler = build_optimizer(ours, config)
    runner = TrainStepRunner(ours, optimizer, device)
    plain = PlainTrainer(args.dim, columns, batch, args.in_batch_negatives, args.global_negatives, args.optimizer,
                         device)

    time_ours(runner, scheduler, batches, max(steps // 5, 5), device)  # warm-up: tracing, allocator, prefetch
    plain.time(max(steps // 5, 5))
    ours_rates, plain_rates = [], []
    for _ in range(args.repeats):
        ours_rates.append(steps * batch / time_ours(runner, scheduler, batches, steps, device))
        plain_rates.append(steps * batch / plain.time(steps))
    return ours_rates, plain_rates


def steps_for(batch: int, requested: int) -> int:
    """Steps per timed repeat: `requested`, or about 250k edges (0.3-0.6 s here) when 0."""
    return requested or max(20, min(500, 250_000 // batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4096, help="Edges per step of the headline figure.")
    parser.add_argument("--small_batch", type=int, default=500,
                        help="A second batch size measured in the same run (the original's config/local.yaml "
                        "uses 500); 0 = skip.")
    parser.add_argument("--in_batch_negatives", type=int, default=10)
    parser.add_argument("--global_negatives", type=int, default=0)
    parser.add_argument("--prefetch", type=int, default=TwhinDataConfig.model_fields["prefetch"].default,
                        help="Batches EdgesDataset prepares ahead in a thread (the config's default; 0 = inline).")
    parser.add_argument("--steps", type=int, default=0, help="Steps per timed repeat; 0 = about 250k edges.")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--edges", type=int, default=200_000)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd",
                        help="Of the tables (the original's config uses sgd; ours use adagrad).")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    keep_freed_memory()  # as run.py does; process-wide, so the plain step gets it too
    quiet_torchrec_warnings()
    logging.setLevel("WARNING")
    device = setup_and_get_device()

    batches = [args.batch] + ([args.small_batch] if args.small_batch else [])
    results = {}
    for batch in batches:
        results[batch] = measure(args, batch, steps_for(batch, args.steps), device)
        gc.collect()  # the finished measurement's prefetch thread stops with its iterator
    print(f"threads={torch.get_num_threads()} device={device.type} dim={args.dim} in_batch_negatives="
          f"{args.in_batch_negatives} global_negatives={args.global_negatives} optimizer={args.optimizer} "
          f"prefetch={args.prefetch} repeats={args.repeats}")
    for batch, (ours_rates, plain_rates) in results.items():
        print(f"batch {batch} ({steps_for(batch, args.steps)} steps per repeat): "
              f"ours edges/s median {statistics.median(ours_rates):.0f} (min {min(ours_rates):.0f}, max "
              f"{max(ours_rates):.0f}); plain median {statistics.median(plain_rates):.0f} (min "
              f"{min(plain_rates):.0f}, max {max(plain_rates):.0f})")

    def ratio(batch: int) -> float:
        ours_rates, plain_rates = results[batch]
        return statistics.median(ours_rates) / statistics.median(plain_rates)

    print(f"RESULT twhin_train_vs_plain_ratio={ratio(args.batch):.3f}")
    if args.small_batch:
        print(f"RESULT twhin_train_vs_plain_batch_{args.small_batch}_ratio={ratio(args.small_batch):.3f}")
    for batch in batches:
        suffix = "" if batch == args.batch else f"_batch_{batch}"
        print(f"RESULT twhin_train_edges_per_s{suffix}={statistics.median(results[batch][0]):.0f}")
        print(f"RESULT plain_twhin_train_edges_per_s{suffix}={statistics.median(results[batch][1]):.0f}")
    teardown()  # the process group; the prefetch threads are stopped at exit (common.prefetch)


if __name__ == "__main__":
    main()
