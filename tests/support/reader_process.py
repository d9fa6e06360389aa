"""Reader commands started as subprocesses by the Flight tests."""
from __future__ import annotations

import subprocess
import time


def reader_port(process: subprocess.Popen, timeout_s: float = 120) -> int:
    """The port a reader started with `--port 0` prints (`READER_PORT=N`), or an error with its last
    output lines when it ends or stays silent for `timeout_s`."""
    deadline = time.time() + timeout_s
    lines = []
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if line.startswith("READER_PORT="):
            return int(line.split("=", 1)[1])
    raise AssertionError("reader did not start:\n" + "".join(lines[-30:]))
