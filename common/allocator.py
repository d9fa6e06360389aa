"""Keep freed memory inside a training process instead of handing it back to the kernel.

glibc's malloc gives large blocks back to the kernel as soon as they are freed (blocks above its
mmap threshold, and the top of the heap above its trim threshold). A training step allocates and
frees the same large temporaries every time, so every step page-faults them in again and the
kernel zeroes them: measured on the TwHIN MovieLens config, a quarter of the run was kernel time,
and per-step activations of a few MB made elementwise ops several times slower than in isolation.
Raising both thresholds lets the heap keep and reuse those blocks (PyTorch's CPU tuning guide gets
the same effect by swapping in jemalloc or tcmalloc, which needs LD_PRELOAD).

Arrow has its own allocator (mimalloc in the pyarrow wheels), which serves Parquet decoding and the
Heavy Ranker's batch arrays: `keep_arrow_freed_memory` gives it the same policy.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from typing import Callable, Optional

from tml.ml_logging.torch_logging import logging

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

DEFAULT_MMAP_THRESHOLD = 256 << 20  # blocks up to this size come from the reusable heap
DEFAULT_TRIM_THRESHOLD = 1 << 30  # the heap keeps up to this much free memory


# glibc before 2.34 refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit systems), and
# a refused mallopt still switches off its dynamic threshold: the threshold then stays at its 128 KiB
# start value for good, the opposite of what raising it is for. So the request is capped there.
_GLIBC_UNCAPPED_SINCE = (2, 34)
_OLD_GLIBC_MAX_MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)


def _glibc_version() -> tuple[int, ...]:
    version = platform.libc_ver()[1]
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return (0,)


def _mallopt() -> Optional[Callable[[int, int], int]]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def keep_freed_memory(
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD
) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when both were applied.

    On glibc before 2.34 the mmap threshold is capped at the largest value it accepts (32 MiB on
    64-bit). A no-op returning False on other C libraries (musl, macOS, Windows). Call it once at
    start-up, before the large allocations it should affect; a refusal is logged.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    if _glibc_version() < _GLIBC_UNCAPPED_SINCE:
        mmap_threshold = min(int(mmap_threshold), _OLD_GLIBC_MAX_MMAP_THRESHOLD)
    refused = [
        name
        for name, parameter, value in (
            ("mmap", _M_MMAP_THRESHOLD, int(mmap_threshold)),
            ("trim", _M_TRIM_THRESHOLD, int(trim_threshold)),
        )
        if mallopt(parameter, value) != 1
    ]
    if refused:
        logging.warning(f"glibc refused the {' and '.join(refused)} threshold(s) of keep_freed_memory; "
                        "freed memory may be handed back to the kernel each step.")
    return not refused


# mimalloc's option: how long freed memory waits before it is given back to the kernel; -1 = never.
ARROW_PURGE_DELAY_VARIABLE = "MIMALLOC_PURGE_DELAY"


def keep_arrow_freed_memory() -> bool:
    """Have Arrow's mimalloc keep the memory it frees for its next allocations; True if it will apply.

    Measured on the Heavy Ranker loader (8192-row batches of the full segdense schema): by default
    mimalloc hands memory freed across threads back to the kernel, and each pass faulted ~30,000
    pages in again (a third of the pass in kernel time); kept, next to none (loader rows/s +30-50%).
    mimalloc reads its options once, when pyarrow loads it, so call this before anything imports
    pyarrow (importing `tml.projects.home.recap` does); later it is a no-op returning False. A
    value already set in the environment wins.
    """
    if "pyarrow" in sys.modules:
        return False
    os.environ.setdefault(ARROW_PURGE_DELAY_VARIABLE, "-1")
    return True
