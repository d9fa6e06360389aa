"""keep_freed_memory / keep_arrow_freed_memory: the large temporaries of one step (or batch) are reused
by the next instead of being handed back to the kernel and page-faulted in again. Each case runs in a
fresh interpreter, since the settings are process-wide and permanent."""
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from tml.common.allocator import ARROW_PURGE_DELAY_VARIABLE

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


LOADER_FAULTS_PER_PASS = """
import json, os, resource, sys
workdir = sys.argv[1]
from tml.common.allocator import keep_arrow_freed_memory
keep_arrow_freed_memory()  # as the entry points do, before pyarrow loads
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.data.generate_random_data import generate_random_data
from tml.ml_logging.torch_logging import logging
logging.setLevel("WARNING")
schema_path = os.path.join(workdir, "segdense.json")
features = [("cont", "float_list", 2000), ("bin", "int64_list", 64), ("disc", "int64_list", 8),
            ("task.a", "int64_list", 1), ("task.b", "int64_list", 1)]
if not os.path.exists(schema_path):
    with open(schema_path, "w") as stream:
        json.dump({"schema": [{"feature_name": n, "dtype": d, "length": l} for n, d, l in features]}, stream)
renames = {"continuous": "cont", "binary": "bin", "discrete": "disc"}
config = RecapDataConfig.model_validate({
    "global_batch_size": 1024, "inputs": workdir + "/data/*.parquet", "tasks": {"task.a": {}, "task.b": {}},
    "seg_dense_schema": {"schema_path": schema_path, "renamed_features": renames}})
if not os.path.exists(workdir + "/data"):
    generate_random_data(config, workdir + "/data", 4096, num_files=4, rows_per_row_group=512)

def one_pass():
    return sum(batch.batch_size for batch in RecapDataset(config, world_size=1, rank=0))

one_pass(); one_pass()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    one_pass()
print(os.environ.get("MIMALLOC_PURGE_DELAY"), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def loader_faults_per_pass(workdir: Path, purge_delay: Optional[str]) -> tuple[str, float]:
    env = {key: value for key, value in os.environ.items() if key != ARROW_PURGE_DELAY_VARIABLE}
    if purge_delay is not None:
        env[ARROW_PURGE_DELAY_VARIABLE] = purge_delay
    result = subprocess.run([sys.executable, "-c", LOADER_FAULTS_PER_PASS, str(workdir)],
                            capture_output=True, text=True, check=True, env=env, timeout=120)
    setting, faults = result.stdout.strip().splitlines()[-1].split()
    return setting, float(faults)


def arrow_pool_backend() -> str:
    import pyarrow

    return pyarrow.default_memory_pool().backend_name


@pytest.mark.slow
@pytest.mark.skipif(transparent_huge_pages_always(), reason="huge pages change the fault counts")
@pytest.mark.skipif(arrow_pool_backend() != "mimalloc", reason="the setting tunes Arrow's mimalloc pool")
def test_recap_loader_passes_reuse_arrows_freed_memory(tmp_path):
    # 4 batches of 1024 rows x 2000 floats per pass. mimalloc's default (10 ms) was measured at
    # ~10,900 faults per pass here; kept, ~190.
    setting, kept = loader_faults_per_pass(tmp_path, None)
    assert setting == "-1"
    setting, default = loader_faults_per_pass(tmp_path, "10")
    assert setting == "10"  # a value set in the environment wins
    assert default > 3000 and kept < default / 5


KEEP_ARROW_MEMORY = """
import os, sys
if sys.argv[1] == "pyarrow_first":
    import pyarrow
from tml.common.allocator import keep_arrow_freed_memory
print(keep_arrow_freed_memory(), os.environ.get("MIMALLOC_PURGE_DELAY"))
"""


@pytest.mark.parametrize("order, expected", [("tml_first", "True -1"), ("pyarrow_first", "False None")])
def test_the_arrow_setting_applies_only_before_pyarrow_loads(order, expected):
    env = {key: value for key, value in os.environ.items() if key != ARROW_PURGE_DELAY_VARIABLE}
    result = subprocess.run([sys.executable, "-c", KEEP_ARROW_MEMORY, order], capture_output=True, text=True,
                            check=True, env=env, timeout=60)
    assert result.stdout.strip() == expected


class _FakeMallopt:
    """glibc's mallopt as old versions behave: an mmap threshold above 32 MiB is refused."""

    def __init__(self, max_mmap_threshold: int) -> None:
        self.max_mmap_threshold = max_mmap_threshold
        self.calls: list[tuple[int, int]] = []

    def __call__(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return 0 if parameter == -3 and value > self.max_mmap_threshold else 1


@pytest.mark.parametrize(
    "version, applied_mmap_threshold", [("2.31", 32 << 20), ("2.36", 256 << 20)], ids=["glibc<2.34", "glibc>=2.34"]
)
def test_the_mmap_threshold_is_capped_where_old_glibc_would_refuse_it(monkeypatch, version, applied_mmap_threshold):
    # A refused request would leave old glibc's threshold frozen at 128 KiB: the cap keeps the intent.
    from tml.common import allocator

    fake = _FakeMallopt(max_mmap_threshold=32 << 20 if version == "2.31" else 1 << 40)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", version))
    monkeypatch.setattr(allocator, "_mallopt", lambda: fake)
    assert allocator.keep_freed_memory(mmap_threshold=256 << 20) is True
    assert fake.calls == [(-3, applied_mmap_threshold), (-1, allocator.DEFAULT_TRIM_THRESHOLD)]


def test_a_refused_threshold_is_reported(monkeypatch, warnings_seen):
    from tml.common import allocator

    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator, "_mallopt", lambda: _FakeMallopt(max_mmap_threshold=1 << 20))
    assert allocator.keep_freed_memory(mmap_threshold=256 << 20) is False
    assert any("refused the mmap threshold" in message for message in warnings_seen)


def test_importing_the_recap_package_leaves_the_environment_alone():
    env = {key: value for key, value in os.environ.items() if key != ARROW_PURGE_DELAY_VARIABLE}
    script = "import os, tml.projects.home.recap.data.dataset; print(os.environ.get('MIMALLOC_PURGE_DELAY'))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "None"
