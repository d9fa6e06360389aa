"""`torchrun`, with Ctrl-C ending in the workers' two-line message instead of a launcher traceback.

    python -m tml.common.launch --standalone --nproc_per_node 2 -m tml.projects.home.recap.main ...

Every argument is torchrun's. On Ctrl-C the workers say where training stopped and how to resume
(see tml.common.entry_point); torchrun itself would then add a traceback of the signal it received.
"""
from __future__ import annotations

import sys


def main() -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun()
    except SignalException as stopped:  # the workers got the signal too and have reported
        return 128 + int(stopped.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
