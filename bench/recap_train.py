"""Training-step speed of the production Heavy Ranker (`config/local_prod.yaml`, 48 M parameters).

    .venv/bin/python bench/recap_train.py [--threads 1] [--repeats 5] [--steps 3] [--steps_large 2]

Every side trains the model that `main.py` builds (`job.build_model_and_optimizer`: the local_prod
architecture, per-tower Adam groups and LR schedules) through the training loop's step runner
(`TrainStepRunner.step` + `scheduler.step()`, what `core.custom_training_loop.train` does per step,
without its logging and checkpoints). The model starts from the same weights on every side.

Sides, at batch 128 and 512:
- `plain`: today's step before this benchmark's issue: eager fp32, torch's default Adam (on CPU a
  loop over the parameters) and torch's Linear products (`runtime.linear_kernel: torch`, MKL on
  CPU). The baseline of the speed-up ratio.
- `fused`: the new default step: eager fp32, fused Adam for the dense groups, and the default
  `runtime.linear_kernel: auto` (on non-Intel x86-64 CPUs oneDNN's products for the large Linear layers; see
  `tml.common.modules.linear_kernel`).
- `fused_torch_linear`: the new step with torch's Linear products: splits the speed-up into its two
  parts (fused Adam; the Linear kernel).
- `bf16`: the new step under `runtime.enable_amp` (bf16 autocast). Timed only where the CPU has bf16
  arithmetic (see `tml.core.precision`); elsewhere it is skipped with the reason.
- `linear_products`: the `fused` step's Linear-layer matrix products alone, in the same process: for
  every Linear of the model, the forward product and the two backward products (input and weight
  gradients), each by the kernel that layer uses in the step, on random inputs of the step's shapes
  and the model's own weights. Their FLOPs are the step's Linear FLOPs (6 x in x out per example and
  layer), so achieved GFLOP/s of a step over this side's GFLOP/s is the share of the step spent in
  useful GEMM work. `linear_products_torch`: the same products by torch (`addmm` / `mm`), the
  reference of the `plain` and `fused_torch_linear` steps.

Outside the timed region: reading and assembling the batches (a few batches made by the recap
loader from random Parquet files, kept in memory and cycled), building the models, two warm-up
steps per side and batch size. Inside: the steps (forward, loss over all towers, backward, optimizer,
scheduler). The sides run interleaved, in a rotating order, `--repeats` times; each repeat times
`--steps` steps (`--steps_large` at batch 512); reported: the median (and min) over repeats, ratios of
medians. Threads are set once, before torch loads. The same ratios are also computed from the
process's CPU time (`*_cputime_ratio`): on a shared machine other processes take the core away for
part of the wall time, which CPU time leaves out.

RESULT lines, headline first:
- `recap_train_efficiency_ratio`: the fused fp32 step at batch 128, achieved GFLOP/s (Linear
  multiply-adds) over its Linear products alone (target >= 0.8);
- `recap_step_speedup_ratio`: the fused step's examples/s over the plain step's, the smaller of the
  two batch sizes (target >= 1.25 at each); then each batch size; then, per batch size, the plain
  step's efficiency, the speed-up of fused Adam alone (`fused_torch_linear` / `plain`) and of the
  Linear kernel (products alone, and `fused` / `fused_torch_linear`); then absolute figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (set once, before torch loads)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per side and repeat at batch <= 256")
    parser.add_argument("--steps_large", type=int, default=2, help="steps per side and repeat above 256")
    return parser.parse_args()


ARGS = parse_args()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

from tml.common import device as device_lib  # noqa: E402
from tml.common.allocator import keep_freed_memory  # noqa: E402
from tml.common.modules.linear_kernel import OneDnnLinear, onednn_linear  # noqa: E402
from tml.common.sharding import quiet_torchrec_warnings  # noqa: E402
from tml.core.config import load_config_from_yaml  # noqa: E402
from tml.core.precision import cpu_bf16_support, measure_bf16_slowdown  # noqa: E402
from tml.core.train_pipeline import TrainStepRunner  # noqa: E402
from tml.ml_logging.torch_logging import logging  # noqa: E402
from tml.projects.home.recap.config import JobMode, RecapConfig  # noqa: E402
from tml.projects.home.recap.data.dataset import RecapDataset  # noqa: E402
from tml.projects.home.recap.data.generate_random_data import generate_random_data  # noqa: E402
from tml.projects.home.recap.job import build_model_and_optimizer  # noqa: E402
from tml.projects.home.recap.optimizer import optimizer as recap_optimizer  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "home", "recap", "config", "local_prod.yaml")
HEADLINE_BATCH = 128
BATCHES_IN_MEMORY = 2


class Side:
    """One way of running the step: a model, its optimizer and schedule, and the step runner."""

    def __init__(self, name: str, model: torch.nn.Module, optimizer, scheduler, enable_amp: bool, device) -> None:
        self.name = name
        self.model = model
        self.scheduler = scheduler
        self.runner = TrainStepRunner(model, optimizer, device, enable_amp=enable_amp)

    def run(self, batches, steps: int) -> None:
        for _ in range(steps):
            self.runner.step(batches)
            self.scheduler.step()


class LinearProducts:
    """The forward and backward matrix products of every Linear layer, at one batch size, each by
    the kernel its layer uses in `model` (oneDNN for an `OneDnnLinear`, else torch's)."""

    def __init__(self, model: torch.nn.Module, batch_size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.operands = []
        for layer in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
            weight = layer.weight.detach()
            bias = layer.bias.detach() if layer.bias is not None else torch.zeros(weight.shape[0])
            inputs = torch.randn(batch_size, weight.shape[1], generator=generator)
            output_gradient = torch.randn(batch_size, weight.shape[0], generator=generator)
            products = onednn_products if isinstance(layer, OneDnnLinear) else torch_products
            self.operands.append((products, weight, bias, inputs, output_gradient))

    def run(self, batches, steps: int) -> None:
        for _ in range(steps):
            for products, weight, bias, inputs, output_gradient in self.operands:
                products(weight, bias, inputs, output_gradient)


def torch_products(weight, bias, inputs, output_gradient) -> None:
    torch.addmm(bias, inputs, weight.t())  # forward, as F.linear
    output_gradient.mm(weight)  # input gradient
    output_gradient.t().mm(inputs)  # weight gradient


def onednn_products(weight, bias, inputs, output_gradient) -> None:
    onednn_linear(inputs, weight, bias)  # forward, as OneDnnLinearFunction computes it
    onednn_linear(output_gradient, weight.t(), None)  # input gradient
    onednn_linear(output_gradient.t(), inputs.t(), None)  # weight gradient


def linear_macs_per_example(model: torch.nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def cycle(batches):
    while True:
        yield from batches


def load_batches(config: RecapConfig, batch_size: int) -> tuple[list, dict]:
    data_config = config.train_data.model_copy(update={"global_batch_size": batch_size})
    dataset = RecapDataset(data_config, mode=JobMode.TRAIN, repeat=True)
    iterator = iter(dataset)
    batches = [next(iterator) for _ in range(BATCHES_IN_MEMORY)]
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
    return batches, dataset.torch_element_spec


def with_linear_kernel(config: RecapConfig, kernel: str) -> RecapConfig:
    return config.model_copy(update={"runtime": config.runtime.model_copy(update={"linear_kernel": kernel})})


def build_sides(config: RecapConfig, spec: dict, device, with_bf16: bool) -> list[Side]:
    torch.manual_seed(0)
    model, optimizer, scheduler = build_model_and_optimizer(config, spec, device)
    weights = model.state_dict()

    def same_weights_side(name: str, kernel: str, fused_adam: bool = True, enable_amp: bool = False) -> Side:
        torch.manual_seed(0)
        other, _, _ = build_model_and_optimizer(with_linear_kernel(config, kernel), spec, device)
        other.load_state_dict(weights)
        other_optimizer, other_scheduler = recap_optimizer.build_optimizer(other, config.optimizer, fused_adam=fused_adam)
        return Side(name, other, other_optimizer, other_scheduler, enable_amp, device)

    sides = [
        Side("fused", model, optimizer, scheduler, False, device),
        same_weights_side("plain", "torch", fused_adam=False),
        same_weights_side("fused_torch_linear", "torch"),
    ]
    if with_bf16:
        sides.append(same_weights_side("bf16", config.runtime.linear_kernel, enable_amp=True))
    return sides


def median_and_min(values: list[float]) -> str:
    return f"median {statistics.median(values):8.1f}  min {min(values):8.1f}  all {[round(v, 1) for v in values]}"


def main() -> None:
    keep_freed_memory()  # as every entry point does (tml.common.entry_point)
    quiet_torchrec_warnings()
    logging.setLevel("WARNING")
    support = cpu_bf16_support()
    print(f"CPU: {support.describe()}")
    print(f"threads {ARGS.threads}, torch {torch.__version__}, load average at start {os.getloadavg()}")
    with_bf16 = support.native
    if not with_bf16:
        slowdown = measure_bf16_slowdown()
        print(
            f"bf16 timing SKIPPED: this CPU has no bf16 arithmetic (a bf16 product measured {slowdown:.1f}x "
            f"slower than fp32 here), so a bf16 step would take minutes and say nothing about bf16 on "
            f"hardware that has it."
        )

    device = device_lib.setup_and_get_device()
    with tempfile.TemporaryDirectory(prefix="recap_train_bench_") as data_dir:
        config = load_config_from_yaml(RecapConfig, CONFIG, [f"train_data.inputs={data_dir}/*.parquet"])
        rows = BATCHES_IN_MEMORY * max(ARGS.batch_sizes)
        generate_random_data(config.train_data, data_dir, n_examples=rows, num_files=1)
        batches_by_size = {}
        spec = None
        for batch_size in ARGS.batch_sizes:
            batches_by_size[batch_size], spec = load_batches(config, batch_size)

    sides = build_sides(config, spec, device, with_bf16)
    macs = linear_macs_per_example(sides[0].model)
    switched = sum(isinstance(m, OneDnnLinear) for m in sides[0].model.modules())
    print(f"runtime.linear_kernel={config.runtime.linear_kernel}: {switched} Linear layers of the fused step use oneDNN's products")
    print(f"model: {sum(p.numel() for p in sides[0].model.parameters()):,} parameters, {len(list(m for m in sides[0].model.modules() if isinstance(m, torch.nn.Linear)))} Linear layers, {macs:,} Linear MACs per example (x6 FLOPs per trained example)")

    examples_per_s: dict[tuple[str, int], list[float]] = {}
    examples_per_cpu_s: dict[tuple[str, int], list[float]] = {}
    for batch_size in ARGS.batch_sizes:
        steps = ARGS.steps if batch_size <= 256 else ARGS.steps_large
        runners = {side.name: side for side in sides}
        runners["linear_products"] = LinearProducts(sides[0].model, batch_size)
        runners["linear_products_torch"] = LinearProducts(runners["fused_torch_linear"].model, batch_size)
        iterators = {name: cycle(batches_by_size[batch_size]) for name in runners}
        for name, runner in runners.items():
            runner.run(iterators[name], 2)  # warm-up: optimizer state, allocator, caches
        names = list(runners)
        for repeat in range(ARGS.repeats):
            order = names[repeat % len(names):] + names[: repeat % len(names)]
            for name in order:
                start, cpu_start = time.perf_counter(), time.process_time()
                runners[name].run(iterators[name], steps)
                elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
                examples_per_s.setdefault((name, batch_size), []).append(steps * batch_size / elapsed)
                examples_per_cpu_s.setdefault((name, batch_size), []).append(steps * batch_size / cpu_elapsed)
        print(f"\nbatch {batch_size}, {steps} step(s) per repeat, {ARGS.repeats} repeats: examples/s (wall clock | per CPU second)")
        for name in names:
            print(f"  {name:21s} {median_and_min(examples_per_s[(name, batch_size)])}")
            print(f"  {'':21s} {median_and_min(examples_per_cpu_s[(name, batch_size)])}  (CPU time)")

    def median(name: str, batch_size: int, rates: dict = examples_per_s) -> float:
        return statistics.median(rates[(name, batch_size)])

    def gflops(name: str, batch_size: int) -> float:
        return median(name, batch_size) * 6 * macs / 1e9

    headline = HEADLINE_BATCH if HEADLINE_BATCH in ARGS.batch_sizes else ARGS.batch_sizes[0]
    speedups = {b: median("fused", b) / median("plain", b) for b in ARGS.batch_sizes}
    print(f"\nload average at end {os.getloadavg()}")
    print(f"RESULT recap_train_efficiency_ratio={gflops('fused', headline) / gflops('linear_products', headline):.3f}")
    print(f"RESULT recap_step_speedup_ratio={min(speedups.values()):.3f}")
    for batch_size, speedup in speedups.items():
        print(f"RESULT recap_step_speedup_b{batch_size}_ratio={speedup:.3f}")
    for batch_size in ARGS.batch_sizes:
        if batch_size != headline:
            print(f"RESULT recap_train_efficiency_b{batch_size}_ratio={gflops('fused', batch_size) / gflops('linear_products', batch_size):.3f}")
        # The plain step and the fused step with torch's Linear kernel run torch's products.
        print(f"RESULT recap_train_efficiency_plain_b{batch_size}_ratio={gflops('plain', batch_size) / gflops('linear_products_torch', batch_size):.3f}")
        print(f"RESULT recap_train_efficiency_fused_torch_linear_b{batch_size}_ratio={gflops('fused_torch_linear', batch_size) / gflops('linear_products_torch', batch_size):.3f}")
        # The speed-up in two parts: fused Adam alone, and the Linear kernel (products alone and in the step).
        print(f"RESULT recap_step_speedup_fused_adam_only_b{batch_size}_ratio={median('fused_torch_linear', batch_size) / median('plain', batch_size):.3f}")
        print(f"RESULT recap_linear_kernel_products_b{batch_size}_ratio={median('linear_products', batch_size) / median('linear_products_torch', batch_size):.3f}")
        print(f"RESULT recap_linear_kernel_step_b{batch_size}_ratio={median('fused', batch_size) / median('fused_torch_linear', batch_size):.3f}")
        if with_bf16:
            print(f"RESULT recap_bf16_over_fp32_b{batch_size}_ratio={median('bf16', batch_size) / median('fused', batch_size):.3f}")
    # On a shared machine other processes take the core away for part of the wall time; the same
    # ratios from this process's CPU time show what the code does when it runs.
    cpu = examples_per_cpu_s
    print(f"RESULT recap_train_efficiency_cputime_ratio={median('fused', headline, cpu) / median('linear_products', headline, cpu):.3f}")
    for batch_size in ARGS.batch_sizes:
        print(f"RESULT recap_step_speedup_b{batch_size}_cputime_ratio={median('fused', batch_size, cpu) / median('plain', batch_size, cpu):.3f}")
    for batch_size in ARGS.batch_sizes:
        for name in [side.name for side in sides]:
            print(f"RESULT recap_{name}_examples_per_s_b{batch_size}={median(name, batch_size):.1f}")
        for name in [side.name for side in sides] + ["linear_products", "linear_products_torch"]:
            print(f"RESULT recap_{name}_gflops_b{batch_size}={gflops(name, batch_size):.1f}")


if __name__ == "__main__":
    main()
    device_lib.teardown()  # once main's models are gone, so that the process group is freed with them
    sys.stdout.flush()
