"""`torchrun`, ending in the workers' own few lines instead of a launcher traceback.

    python -m tml.common.launch --standalone --nproc_per_node 2 -m tml.projects.home.recap.main ...

Every argument is torchrun's. On Ctrl-C the workers say where training stopped and how to resume
(see tml.common.entry_point); torchrun itself would then add a traceback of the signal it received.
When a worker fails (a config error, a missing file: its message is already printed), torchrun
would add a traceback and a failure table; here one line names the rank that ended first and how,
and the launch exits with that rank's code (128 + the signal for a killed worker).
"""
from __future__ import annotations

import sys


def main() -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun()
    except SignalException as stopped:  # the workers got the signal too and have reported
        return 128 + int(stopped.sigval)
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        if failure.exitcode < 0:  # killed: it could not say anything itself
            how, code = f"was killed by {failure.signal_name()}", 128 - failure.exitcode
        else:
            how, code = f"exited with code {failure.exitcode} (its message is above)", failure.exitcode
        print(f"error: {failed.name}: rank {rank} {how}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
