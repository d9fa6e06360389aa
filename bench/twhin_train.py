"""Edges/s of tml's TwHIN training step against a plain-PyTorch step of the same model: a fair fight.

Graph (PyTorch-BigGraph's comparison in issue 11): 2 M edges among 150 k entities of one type, Zipf
popularity on both ends, 4 relations, translation operator, d=64, Adagrad on the tables (SGD on the
relation vectors), logistic loss (the original's weighted BCE). Generated once and cached under
/tmp (`--graph_dir`), never in the repo.

Settings, each with its own ratio:
- headline: batch 1000, 100 negatives per edge and side = 50 in-batch + 50 uniform, chunks of 50
  sharing them (PBG's defaults);
- local: the original's config/local.yaml setting, batch 500 and 10 in-batch negatives;
- rowwise: the headline with row-wise Adagrad on the tables (one accumulator per row, fed the mean
  squared gradient: PyTorch-BigGraph's embedding optimizer) on both sides. It shows what the
  headline's exact Adagrad costs ours: fbgemm's CPU kernel for exact Adagrad is a serial loop that a
  second thread cannot share, its row-wise kernel is parallel. The plain side's row-wise Adagrad is a
  small sparse optimizer written here (coalesce, index_add_ of the rows' mean squared gradient,
  index_add_ of the scaled rows).

Both sides read the SAME batch stream: one `EdgesDataset.dataloader` (shuffle, chunking, uniform
draws, KJT layout) with `--prefetch` batches prepared ahead by its background thread, as training
does; each timed repeat of either side pulls its next batches from it, so data preparation
overlaps both sides alike. Inside the timed region, both sides do forward, loss, backward and the
optimizer updates of one batch per step:
- ours: `TwhinModelAndLoss` under DistributedModelParallel (world size 1; fused TBE Adagrad in
  backward) driven by `TrainStepRunner` (what the training loop runs) plus the LR scheduler;
- plain: what a competent engineer writes in plain PyTorch for the same layout: one
  `nn.Embedding(sparse=True)` lookup per table of the batch's ids, the chunks' [C, D] x [D, C + G]
  products with `torch.bmm`, the same masks and loss, `torch.optim.Adagrad` on the sparse
  gradients (SGD on the relation vectors).
Same dims, learning rates, threads; warm-up first; repeats interleaved (ours, plain, ours, ...);
ratios are of medians.

Cores: the headline runs in a child process pinned to 2 cores with 2 torch threads, and again pinned
to 1 core with 1 thread (the prefetch thread shares the pinned cores), so the 2-vs-1 figure is a
real use of the second core. Thread counts are set once per process.

    .venv/bin/python bench/twhin_train.py [--repeats 7] [--edges_per_repeat 60000] [--prefetch 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ENTITIES, RELATIONS, DIM = 150_000, 4, 64
GRAPH_EDGES = 2_000_000
ZIPF_EXPONENT = 1.0
TABLE_LR, RELATION_LR, ADAGRAD_EPS = 0.05, 0.01, 1e-8
SETTINGS = {  # name: (batch, in-batch negatives, uniform negatives, chunk size, table optimizer)
    "headline": (1000, 50, 50, 50, "adagrad"),
    "local": (500, 10, 0, None, "adagrad"),
    # The headline with row-wise Adagrad (one accumulator per row: PyTorch-BigGraph's embedding
    # optimizer) on both sides: fbgemm's CPU kernel for it is parallel, its exact Adagrad is not.
    "rowwise": (1000, 50, 50, 50, "rowwise_adagrad"),
}


def cpu_description() -> str:
    from tml.core.precision import cpu_model_and_flags

    model, flags = cpu_model_and_flags()
    wanted = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return f"{model} flags={','.join(wanted) or 'none'} cpus={os.cpu_count()}"


def graph_file(graph_dir: str) -> str:
    """The cached Zipf graph (written on first use)."""
    path = os.path.join(graph_dir, f"zipf_{GRAPH_EDGES}_{ENTITIES}_{RELATIONS}.parquet")
    if not os.path.exists(path):
        from tml.projects.twhin.scripts.package_data import write_edges

        rng = np.random.default_rng(0)
        popularity = 1.0 / np.arange(1, ENTITIES + 1) ** ZIPF_EXPONENT
        popularity /= popularity.sum()
        ids = rng.permutation(ENTITIES)  # popular entities spread over the table
        lhs = ids[rng.choice(ENTITIES, GRAPH_EDGES, p=popularity)]
        rhs = ids[rng.choice(ENTITIES, GRAPH_EDGES, p=popularity)]
        rel = rng.integers(0, RELATIONS, GRAPH_EDGES)
        write_edges(path + ".tmp", lhs, rel, rhs)
        os.replace(path + ".tmp", path)
    return path


# ------------------------------------------------------------------------ one measuring process


def model_config(table_optimizer: str = "adagrad"):
    from tml.projects.twhin.models.config import TwhinModelConfig

    return TwhinModelConfig.model_validate({
        "embeddings": {"tables": [{
            "name": "entity", "num_embeddings": ENTITIES, "embedding_dim": DIM, "data_type": "fp32",
            "optimizer": {table_optimizer: {"lr": TABLE_LR, "eps": ADAGRAD_EPS}},
        }]},
        "relations": [{"name": f"r{i}", "lhs": "entity", "rhs": "entity"} for i in range(RELATIONS)],
        "translation_optimizer": {"sgd": {"lr": RELATION_LR}},
    })


def make_plain(torch, nn, F):
    """The plain-PyTorch model and step (see the module doc)."""

    class PlainTwhin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.entity = nn.Embedding(ENTITIES, DIM, sparse=True)
            nn.init.uniform_(self.entity.weight, -0.01, 0.01)
            self.relations = nn.Parameter(torch.rand(RELATIONS, DIM))

    def step(model, optimizers, batch) -> None:
        layout = batch.layout
        chunks, size, block = layout.num_chunks, layout.chunk_size, layout.block_size
        rows = model.entity(batch.nodes["entity"].values())  # one lookup: both sides' blocks
        lhs_block = rows[: layout.side_lookups].view(chunks, block, DIM)
        rhs_block = rows[layout.side_lookups :].view(chunks, block, DIM)
        lhs, rhs = lhs_block[:, :size], rhs_block[:, :size]
        relation = model.relations[batch.rels].view(chunks, size, DIM)
        head_query = rhs + relation  # score(l, r, x) = l . (x + r) = x . l + l . r
        tail_bias = (lhs * relation).sum(-1)
        positive = (lhs * head_query).sum(-1)
        negative = (F.softplus(torch.bmm(head_query, lhs_block.transpose(1, 2)))
                    + F.softplus(torch.bmm(lhs, rhs_block.transpose(1, 2)) + tail_bias.unsqueeze(-1)))
        weights = batch.weights.view(chunks, size)
        share = (weights / (2 * layout.negatives_per_edge)).unsqueeze(-1) * layout.negative_mask
        pairs = weights.numel() + 2 * chunks * layout.negatives_per_edge.sum()
        loss = ((weights * F.softplus(-positive)).sum() + (share * negative).sum()) / pairs
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()

    class RowWiseAdagrad(torch.optim.Optimizer):
        """Sparse row-wise Adagrad as PyTorch-BigGraph writes it: one accumulator per row, fed the
        mean of the row's squared gradient (the same update as fbgemm's)."""

        def __init__(self, params, lr: float, eps: float) -> None:
            super().__init__(params, {"lr": lr, "eps": eps})

        @torch.no_grad()
        def step(self) -> None:
            for group in self.param_groups:
                for weight in group["params"]:
                    if weight.grad is None:
                        continue
                    state = self.state[weight]
                    if not state:
                        state["sum"] = weight.new_zeros(weight.shape[0])
                    grad = weight.grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                    sums = state["sum"].index_add_(0, rows, values.square().mean(1))[rows]
                    weight.index_add_(0, rows, values * (-group["lr"] / (sums.sqrt() + group["eps"])).unsqueeze(1))

    return PlainTwhin, step, RowWiseAdagrad


def measure_setting(args, name: str, cores: int) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tml.common.device import setup_and_get_device
    from tml.common.sharding import maybe_shard_model
    from tml.core.train_pipeline import TrainStepRunner
    from tml.projects.twhin.data.edges import EdgesDataset
    from tml.projects.twhin.data.schema import GraphSchema
    from tml.core.optimizers import apply_embedding_optimizers
    from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
    from tml.projects.twhin.optimizer import build_optimizer

    batch, in_batch, uniform, chunk, table_optimizer = SETTINGS[name]
    config = model_config(table_optimizer)
    dataset = EdgesDataset(graph_file(args.graph_dir), GraphSchema.from_model_config(config), batch, in_batch,
                           uniform, prefetch=args.prefetch, chunk_size=chunk)
    dataset.edges()  # read once, as training does; the timed loop starts from memory
    batches = dataset.dataloader(num_epochs=None)
    device = setup_and_get_device()

    torch.manual_seed(0)
    module = TwhinModel(config)
    fused_params = apply_embedding_optimizers(module, config.embeddings.table_optimizers())
    ours = maybe_shard_model(TwhinModelAndLoss(module), device, fused_params=fused_params)
    optimizer, scheduler = build_optimizer(ours, config)
    runner = TrainStepRunner(ours, optimizer, device)

    PlainTwhin, plain_step, RowWiseAdagrad = make_plain(torch, nn, F)
    plain = PlainTwhin()
    table_class = torch.optim.Adagrad if table_optimizer == "adagrad" else RowWiseAdagrad
    plain_optimizers = [table_class([plain.entity.weight], lr=TABLE_LR, eps=ADAGRAD_EPS),
                        torch.optim.SGD([plain.relations], lr=RELATION_LR)]

    def time_ours(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            runner.step(batches)
            scheduler.step()
        return time.perf_counter() - start

    def time_plain(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            plain_step(plain, plain_optimizers, next(batches))
        return time.perf_counter() - start

    edges_per_step = dataset.batch_size
    steps = max(10, args.edges_per_repeat // edges_per_step)
    time_ours(max(5, steps // 4))  # warm-up: allocator, kernels, prefetch buffer
    time_plain(max(5, steps // 4))
    ours_rates, plain_rates = [], []
    for _ in range(args.repeats):
        ours_rates.append(steps * edges_per_step / time_ours(steps))
        plain_rates.append(steps * edges_per_step / time_plain(steps))
    del batches  # stops the prefetch thread
    return {"ours": ours_rates, "plain": plain_rates, "steps": steps, "edges_per_step": edges_per_step}


def worker(args) -> None:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    import torch

    torch.set_num_threads(args.cores)
    from tml.common.allocator import keep_freed_memory
    from tml.common.sharding import quiet_torchrec_warnings
    from tml.ml_logging.torch_logging import logging

    keep_freed_memory()  # as run.py does; process-wide, so the plain step gets it too
    quiet_torchrec_warnings()
    logging.setLevel("WARNING")
    from tml.common.device import teardown

    results = {name: measure_setting(args, name, args.cores) for name in args.settings.split(",")}
    print("JSON " + json.dumps(results), flush=True)
    teardown()  # the process group; the prefetch threads are stopped at exit (common.prefetch)


def run_worker(args, cores: int, settings: str) -> dict:
    command = [sys.executable, __file__, "--worker", "--cores", str(cores), "--settings", settings,
               "--repeats", str(args.repeats), "--edges_per_repeat", str(args.edges_per_repeat),
               "--prefetch", str(args.prefetch), "--graph_dir", args.graph_dir]
    env = {**os.environ, "OMP_NUM_THREADS": str(cores)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("JSON ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"measuring process ({cores} cores) failed with exit code {done.returncode}")
    return json.loads(lines[-1][5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--edges_per_repeat", type=int, default=60_000)
    parser.add_argument("--prefetch", type=int, default=2, help="Batches prepared ahead by the data thread.")
    parser.add_argument("--graph_dir", default="/tmp/tml_bench_twhin")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="headline,local", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    os.makedirs(args.graph_dir, exist_ok=True)
    graph_file(args.graph_dir)
    two = run_worker(args, 2, "headline,local,rowwise")
    one = run_worker(args, 1, "headline")
    median = statistics.median
    print(f"cpu: {cpu_description()}")
    print(f"graph: {GRAPH_EDGES} edges, {ENTITIES} entities (Zipf {ZIPF_EXPONENT}), {RELATIONS} relations, d={DIM}, "
          f"translation, logistic loss, Adagrad lr {TABLE_LR}; prefetch={args.prefetch} repeats={args.repeats}")
    for label, result in (("2 cores", two), ("1 core", one)):
        for name, figures in result.items():
            batch, in_batch, uniform, chunk, table_optimizer = SETTINGS[name]
            ours, plain = figures["ours"], figures["plain"]
            print(f"{label}, {name} (batch {batch}, {in_batch} in-batch + {uniform} uniform negatives per side, "
                  f"chunks of {chunk or 'default'}, {table_optimizer}; {figures['steps']} steps per repeat): "
                  f"ours edges/s median "
                  f"{median(ours):.0f} (min {min(ours):.0f}, max {max(ours):.0f}); plain median {median(plain):.0f} "
                  f"(min {min(plain):.0f}, max {max(plain):.0f})")

    def ratio(result: dict, name: str) -> float:
        return median(result[name]["ours"]) / median(result[name]["plain"])

    print(f"RESULT twhin_train_vs_plain_ratio={ratio(two, 'headline'):.3f}")
    print(f"RESULT twhin_train_edges_per_s={median(two['headline']['ours']):.0f}")
    print(f"RESULT twhin_train_vs_plain_batch_500_ratio={ratio(two, 'local'):.3f}")
    print(f"RESULT twhin_train_2_vs_1_core_ratio={median(two['headline']['ours']) / median(one['headline']['ours']):.3f}")
    print(f"RESULT plain_twhin_train_edges_per_s={median(two['headline']['plain']):.0f}")
    print(f"RESULT twhin_train_edges_per_s_batch_500={median(two['local']['ours']):.0f}")
    print(f"RESULT plain_twhin_train_edges_per_s_batch_500={median(two['local']['plain']):.0f}")
    print(f"RESULT twhin_train_edges_per_s_1_core={median(one['headline']['ours']):.0f}")
    print(f"RESULT plain_twhin_train_edges_per_s_1_core={median(one['headline']['plain']):.0f}")
    print(f"RESULT twhin_train_vs_plain_1_core_ratio={ratio(one, 'headline'):.3f}")
    print(f"RESULT twhin_train_vs_plain_rowwise_adagrad_ratio={ratio(two, 'rowwise'):.3f}")
    print(f"RESULT twhin_train_edges_per_s_rowwise_adagrad={median(two['rowwise']['ours']):.0f}")
    print(f"RESULT plain_twhin_train_edges_per_s_rowwise_adagrad={median(two['rowwise']['plain']):.0f}")


if __name__ == "__main__":
    main()
