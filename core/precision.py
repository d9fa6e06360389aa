"""Whether bf16 autocast pays on this machine, and a start-up warning where it does not.

bf16 halves the bytes of every activation and, on hardware with bf16 arithmetic (GPUs, CPUs with
AVX512-BF16 or AMX), runs matrix products 2-3x faster than fp32. CPUs without it emulate bf16
products: on an AVX2-only AMD EPYC one ran at 0.75 GFLOP/s against 76 for fp32, and the Heavy
Ranker's training step became 24x slower. `runtime.enable_amp` gives no hint of that by itself.
"""
from __future__ import annotations

import dataclasses
import platform
import time
from typing import Optional

import torch

from tml.ml_logging.torch_logging import logging

# x86 flags, then the Arm feature (Graviton 3, Neoverse V1 and later), as /proc/cpuinfo spells them.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# A measured bf16/fp32 time ratio above this is worth a warning even when the flags are unknown.
SLOWDOWN_WORTH_A_WARNING = 1.5


@dataclasses.dataclass(frozen=True)
class CpuBf16Support:
    model: str
    flags: tuple[str, ...]  # the CPU_BF16_FLAGS that /proc/cpuinfo lists
    torch_capability: str  # the vector ISA torch's kernels were dispatched to
    torch_avx512_bf16: bool
    torch_amx: bool

    @property
    def native(self) -> bool:
        return bool(self.flags) or self.torch_avx512_bf16 or self.torch_amx

    def describe(self) -> str:
        flags = ", ".join(self.flags) if self.flags else f"none of {', '.join(CPU_BF16_FLAGS)}"
        verdict = "native bf16" if self.native else "NO native bf16 (bf16 products are emulated)"
        return (
            f"CPU {self.model}: {verdict}; cpuinfo bf16 flags: {flags}; torch capability "
            f"{self.torch_capability}, avx512_bf16={self.torch_avx512_bf16}, amx={self.torch_amx}"
        )


_FLAG_KEYS = ("flags", "Features")  # x86, Arm


def cpuinfo_fields(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo (key -> value); {} where it cannot be read."""
    fields: dict[str, str] = {}
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key:
                    fields[key] = value.strip()
                elif any(fields.get(flag_key) for flag_key in _FLAG_KEYS):
                    break  # the first processor's entry is enough
    except OSError:
        pass
    return fields


def cpu_model_and_flags(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU's model name and feature flags (x86 `flags` or Arm `Features`), as /proc/cpuinfo lists them."""
    fields = cpuinfo_fields(path)
    model = fields.get("model name", platform.processor() or "unknown")
    flags = next((set(fields[key].split()) for key in _FLAG_KEYS if key in fields), set())
    return model, flags


def _torch_cpu_check(name: str) -> bool:
    check = getattr(torch.cpu, name, None)  # private helpers; absent in some torch builds
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def cpu_bf16_support(cpuinfo_path: str = "/proc/cpuinfo") -> CpuBf16Support:
    model, flags = cpu_model_and_flags(cpuinfo_path)
    return CpuBf16Support(
        model=model,
        flags=tuple(flag for flag in CPU_BF16_FLAGS if flag in flags),
        torch_capability=torch.backends.cpu.get_cpu_capability(),
        torch_avx512_bf16=_torch_cpu_check("_is_avx512_bf16_supported"),
        torch_amx=_torch_cpu_check("_is_amx_tile_supported"),
    )


def measure_bf16_slowdown(size: int = 256, repeats: int = 3) -> float:
    """Time of a bf16 [size x size] matrix product over the same product in fp32 (best of
    `repeats`). About 50 ms on a CPU that emulates bf16, under 1 ms where it is native."""
    left = torch.randn(size, size)
    right = torch.randn(size, size)

    def best_time(a: torch.Tensor, b: torch.Tensor) -> float:
        torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        return min(times)

    fp32 = best_time(left, right)
    bf16 = best_time(left.bfloat16(), right.bfloat16())
    return bf16 / max(fp32, 1e-9)


def warn_if_bf16_is_slow(device: torch.device, enable_amp: bool) -> Optional[str]:
    """Log (and return) a warning when bf16 autocast is on for a CPU without bf16 arithmetic.

    The flags decide first; where they do not show bf16 (or cannot be read, e.g. on macOS) a short
    measurement does, so a CPU whose flags are unknown but whose bf16 is fast is not warned about.
    """
    if not enable_amp or device.type != "cpu":
        return None
    support = cpu_bf16_support()
    if support.native:
        return None
    slowdown = measure_bf16_slowdown()
    if slowdown < SLOWDOWN_WORTH_A_WARNING:
        logging.info(f"bf16 autocast: no bf16 flag found, but a bf16 product ran {slowdown:.1f}x the fp32 time")
        return None
    message = (
        f"runtime.enable_amp is set, but this CPU ({support.model}) has no native bf16 (no "
        f"{' / '.join(CPU_BF16_FLAGS)} flag): a bf16 matrix product just measured {slowdown:.0f}x slower than "
        f"fp32 here, and training will be many times slower (the Heavy Ranker's step was 24x slower on "
        f"such a CPU). Set runtime.enable_amp=false to train in fp32, or use a GPU or a CPU with "
        f"AVX512-BF16 or AMX, where bf16 pays."
    )
    logging.warning(message)
    return message
