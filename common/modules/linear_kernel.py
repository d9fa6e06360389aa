"""Which library computes the fp32 matrix products of a model's `nn.Linear` layers on CPU.

torch's `F.linear` hands fp32 products on CPU to MKL's sgemm. MKL picks its code path by CPU vendor:
on an AMD EPYC Zen 4 (AVX-512; 1 and 2 threads) oneDNN, which torch also ships and which dispatches
on the instruction set, ran the Heavy Ranker's products 1.15-1.3x faster. That step is about 85%
such products, so where they come from sets its speed.

`use_linear_kernel(model, "auto")` (the `runtime.linear_kernel` field) therefore switches the large
`nn.Linear` layers of a model to `OneDnnLinear` on x86 CPUs not made by Intel (on Intel's own, MKL
runs its best code and is reported on par with oneDNN, so torch's products stay): the same layer,
the same parameters and state dict keys, whose forward and backward products are oneDNN's
(`torch.ops.mkldnn._linear_pointwise`, the op torch's own compiler emits for CPU linears). The
result is the same math in fp32, rounded differently: outputs agree with `F.linear` to about 1e-6
relative. Small layers stay with torch: below about 2^18 weights oneDNN's per-call cost outweighs
its faster kernel. `"torch"` leaves the model untouched, which keeps the products bit-identical to
the original's code.

A switched layer falls back to `F.linear` whenever the fast path does not apply: bf16 autocast
(autocast owns the dtype there, and oneDNN already computes bf16 products), non-fp32 tensors,
non-CPU devices, tracing (FX, TorchScript, `torch.export`, `torch.compile`), and empty batches.
"""
from __future__ import annotations

import functools
import platform
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from tml.core.config.errors import ConfigError
from tml.core.config.training import LinearKernel
from tml.core.precision import cpuinfo_fields
from tml.ml_logging.torch_logging import logging

# Below this many weights (in x out) oneDNN's per-call overhead outweighs its faster kernel: measured
# slower at 256 x 128 and 128 x 1, faster from 2048 x 256 up.
MIN_ONEDNN_WEIGHTS = 1 << 18

_X86_MACHINES = {"x86_64", "amd64"}
# MKL runs its own best code on Intel processors, where oneDNN's fp32 products are reported on par with
# it; elsewhere it takes slower paths. So "auto" keeps torch's (MKL's) products on these vendors.
_MKL_NATIVE_VENDORS = {"GenuineIntel"}


def onednn_linear(inputs: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """inputs [B, in] x weight [out, in]^T (+ bias), by oneDNN; either operand may be a strided view."""
    return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], "")


class OneDnnLinearFunction(torch.autograd.Function):
    """y = x W^T + b with oneDNN's products forward and backward (2-D x)."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(inputs, weight, bias)

    @staticmethod
    def backward(ctx, output_gradient: torch.Tensor):
        inputs, weight = ctx.saved_tensors
        input_gradient = weight_gradient = bias_gradient = None
        if ctx.needs_input_grad[0]:
            input_gradient = onednn_linear(output_gradient, weight.t(), None)  # [B, out] x [out, in]
        if ctx.needs_input_grad[1]:
            weight_gradient = onednn_linear(output_gradient.t(), inputs.t(), None)  # [out, B] x [B, in]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            bias_gradient = output_gradient.sum(0)
        return input_gradient, weight_gradient, bias_gradient


def _is_tracing(inputs: torch.Tensor) -> bool:
    """Traced or compiled: the graph should hold plain `F.linear` (FX proxies, e.g. torchrec's train
    pipeline looking for the sharded modules' inputs; TorchScript; `torch.export` / `torch.compile`)."""
    return (
        isinstance(inputs, torch.fx.Proxy)
        or torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
    )


class OneDnnLinear(nn.Linear):
    """An `nn.Linear` whose fp32 CPU products are oneDNN's; elsewhere exactly `nn.Linear`."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self._fast_path_applies(inputs):
            return F.linear(inputs, self.weight, self.bias)
        flat = inputs.reshape(-1, inputs.shape[-1]) if inputs.dim() != 2 else inputs
        output = OneDnnLinearFunction.apply(flat, self.weight, self.bias)
        return output.reshape(*inputs.shape[:-1], self.out_features) if inputs.dim() != 2 else output

    def _fast_path_applies(self, inputs: torch.Tensor) -> bool:
        return (
            not _is_tracing(inputs)
            and inputs.device.type == "cpu"
            and inputs.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and inputs.dim() >= 1
            and inputs.numel() > 0
            and not torch.is_autocast_enabled("cpu")
        )


@functools.lru_cache(maxsize=None)
def onednn_linear_works() -> bool:
    """oneDNN's linear op exists in this torch build and agrees with `F.linear`, forward and backward."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 7, generator=generator, requires_grad=True)
    weight = torch.randn(3, 7, generator=generator, requires_grad=True)
    bias = torch.randn(3, generator=generator, requires_grad=True)
    try:
        fast = OneDnnLinearFunction.apply(inputs, weight, bias)
        fast_gradients = torch.autograd.grad(fast.square().sum(), (inputs, weight, bias))
    except RuntimeError:
        return False
    reference = F.linear(inputs, weight, bias)
    reference_gradients = torch.autograd.grad(reference.square().sum(), (inputs, weight, bias))
    return all(
        torch.allclose(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip((fast, *fast_gradients), (reference, *reference_gradients))
    )


def cpu_vendor(cpuinfo_path: str = "/proc/cpuinfo") -> Optional[str]:
    """The x86 vendor string /proc/cpuinfo gives (e.g. "AuthenticAMD"); None where it cannot be read."""
    return cpuinfo_fields(cpuinfo_path).get("vendor_id")


def resolve_linear_kernel(kernel: LinearKernel, device: torch.device) -> Literal["torch", "onednn"]:
    """What `kernel` means on `device` in this process.

    "auto" picks oneDNN on x86-64 CPUs of a known vendor other than Intel (where MKL's vendor dispatch
    makes torch's products slower) when oneDNN works there; torch's products everywhere else.
    """
    if kernel == "torch" or device.type != "cpu":
        return "torch"
    if kernel == "onednn":
        if not onednn_linear_works():
            raise ConfigError(
                "runtime.linear_kernel is 'onednn' but this torch build has no working oneDNN linear "
                "(torch.ops.mkldnn._linear_pointwise); use 'auto' or 'torch'."
            )
        return "onednn"
    on_x86 = platform.machine().lower() in _X86_MACHINES
    vendor = cpu_vendor() if on_x86 else None
    mkl_is_slow_here = vendor is not None and vendor not in _MKL_NATIVE_VENDORS
    return "onednn" if mkl_is_slow_here and onednn_linear_works() else "torch"


def use_linear_kernel(model: nn.Module, kernel: LinearKernel, device: torch.device) -> int:
    """Switch `model`'s large `nn.Linear` layers to `kernel`'s products in place; returns how many.

    Only layers whose class is exactly `nn.Linear` and that hold at least `MIN_ONEDNN_WEIGHTS` weights
    change, and only their class: parameters, hooks and state dict keys stay (the way
    `torch.nn.utils.parametrize` retypes a module), so optimizers and wrappers built before or after see
    the same parameters.
    """
    if resolve_linear_kernel(kernel, device) == "torch":
        return 0
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.in_features * module.out_features >= MIN_ONEDNN_WEIGHTS:
            module.__class__ = OneDnnLinear
            switched += 1
    if switched:
        logging.info(f"runtime.linear_kernel={kernel}: {switched} large Linear layers compute with oneDNN's products")
    return switched
