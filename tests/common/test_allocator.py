"""keep_freed_memory: the large temporaries of one step are reused by the next step instead of being
handed back to the kernel and page-faulted in again. Each case runs in a fresh interpreter, since
the setting is process-wide and permanent."""
import platform
import subprocess
import sys
from pathlib import Path

import pytest

FAULTS_PER_STEP = """
import resource, sys
if sys.argv[1] == "tuned":
    from tml.common.allocator import keep_freed_memory
    assert keep_freed_memory()
import torch

def step(index):  # activations of 1 to 8 MB alive together plus one of 40 MB, then all freed
    activations = [torch.ones((1 << 18) * (1 + (index + k) % 8)) for k in range(8)]
    largest = torch.ones(10 << 20)
    del activations, largest

for index in range(3):
    step(index)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for index in range(20):
    step(index)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def transparent_huge_pages_always() -> bool:
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return setting.exists() and "[always]" in setting.read_text()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")
@pytest.mark.skipif(transparent_huge_pages_always(), reason="huge pages change the fault counts")
def test_a_steps_freed_blocks_are_reused_by_the_next_step():
    default = faults_per_step("default")
    # By default glibc returns most of each step's 76 MB (measured: ~10600 faults per step here,
    # the kernel mapping a few pages per fault); tuned, next to none come back.
    assert default > 5000
    assert faults_per_step("tuned") < default / 5


def test_other_c_libraries_are_left_alone(monkeypatch):
    from tml.common import allocator

    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.keep_freed_memory() is False
