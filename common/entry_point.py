"""What every `python -m ...` / torchrun entry point of tml does around its `main()`."""
from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

from tml.common.allocator import keep_freed_memory
from tml.core.config import ConfigError


def run_entry_point(main: Callable[[], int]) -> NoReturn:
    """Run `main` and exit with its code; a bad config exits 2 with its message and no traceback."""
    keep_freed_memory()  # each step's large temporaries are reused instead of page-faulted in again
    try:
        exit_code = main()
    except ConfigError as error:  # the message names the file, the field and the reason
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    # A rare abort in a C++ destructor at interpreter exit, after the job has finished and torn
    # down its process group, would turn a success into a failure (seen under torchrun). Everything
    # is written and closed by now, so leave without running those destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
