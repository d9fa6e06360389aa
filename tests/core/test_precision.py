"""bf16 capability detection and the start-up warning for bf16 autocast on CPUs without bf16."""
from __future__ import annotations

import logging

import pytest
import torch

from tml.core import precision
from tml.core.precision import CpuBf16Support, cpu_bf16_support, measure_bf16_slowdown, warn_if_bf16_is_slow

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma avx512_bf16
"""
SAPPHIRE_RAPIDS = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n"


def support(native: bool) -> CpuBf16Support:
    return CpuBf16Support("Test CPU", ("avx512_bf16",) if native else (), "AVX2", False, False)


@pytest.mark.parametrize(
    "cpuinfo, model, flags",
    [
        (ZEN3, "AMD EPYC 7B13", ()),  # only the first processor's entry is read
        (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8481C", ("avx512_bf16", "amx_bf16")),
        (GRAVITON3, None, ("bf16",)),
    ],
    ids=["zen3", "sapphire_rapids", "graviton3"],
)
def test_flags_are_read_from_cpuinfo(tmp_path, cpuinfo, model, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    found = cpu_bf16_support(str(path))
    assert found.flags == flags
    if model is not None:
        assert found.model == model
    assert found.native == (bool(flags) or found.torch_avx512_bf16 or found.torch_amx)
    assert ("NO native bf16" in found.describe()) != found.native


def test_a_cpu_without_bf16_warns_at_start_up_with_the_measured_slowdown(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: support(native=False))
    monkeypatch.setattr(precision, "measure_bf16_slowdown", lambda: 93.4)
    with caplog.at_level(logging.WARNING):
        message = warn_if_bf16_is_slow(torch.device("cpu"), enable_amp=True)
    assert message is not None and message in caplog.text
    assert "Test CPU" in message and "93x slower than fp32" in message
    assert "runtime.enable_amp=false" in message and "AVX512-BF16 or AMX" in message


def test_no_warning_where_bf16_pays_or_is_off(monkeypatch):
    def no_measurement():
        raise AssertionError("nothing to measure")

    monkeypatch.setattr(precision, "measure_bf16_slowdown", no_measurement)
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: support(native=True))
    assert warn_if_bf16_is_slow(torch.device("cpu"), enable_amp=True) is None
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: support(native=False))
    assert warn_if_bf16_is_slow(torch.device("cpu"), enable_amp=False) is None
    assert warn_if_bf16_is_slow(torch.device("cuda"), enable_amp=True) is None


def test_unknown_flags_but_fast_bf16_does_not_warn(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: support(native=False))
    monkeypatch.setattr(precision, "measure_bf16_slowdown", lambda: 0.6)
    assert warn_if_bf16_is_slow(torch.device("cpu"), enable_amp=True) is None


def test_the_measurement_is_a_positive_ratio():
    assert measure_bf16_slowdown(size=64, repeats=2) > 0
