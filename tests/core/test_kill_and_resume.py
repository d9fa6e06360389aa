"""`kill -9` a training run, start the same command again: the final weights equal an uninterrupted run's."""
import os
import signal
import subprocess
import sys
import time

import torch

from tml.common.checkpointing import get_checkpoints, step_from_checkpoint

JOB = os.path.join(os.path.dirname(__file__), "..", "support", "loop_job.py")
STEPS = 30


def _command(save_dir, out, seconds_per_batch):
    return [sys.executable, JOB, str(save_dir), str(out), str(STEPS), str(seconds_per_batch)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_kill_minus_nine_then_resume_gives_the_uninterrupted_weights(tmp_path):
    subprocess.run(_command(tmp_path / "a", tmp_path / "a.pt", 0.0), check=True, env=_env(), timeout=240,
                   stdout=subprocess.DEVNULL)

    victim = subprocess.Popen(_command(tmp_path / "b", tmp_path / "b.pt", 0.1), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and victim.poll() is None:
        if any(step_from_checkpoint(c) >= 10 for c in get_checkpoints(str(tmp_path / "b"))):
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    steps_before_kill = [step_from_checkpoint(c) for c in get_checkpoints(str(tmp_path / "b"))]
    assert 10 <= max(steps_before_kill) < STEPS

    subprocess.run(_command(tmp_path / "b", tmp_path / "b.pt", 0.0), check=True, env=_env(), timeout=240,
                   stdout=subprocess.DEVNULL)
    uninterrupted, resumed = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert uninterrupted["params"].keys() == resumed["params"].keys()
    for name, value in uninterrupted["params"].items():
        torch.testing.assert_close(resumed["params"][name], value, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(resumed["probabilities"], uninterrupted["probabilities"], rtol=0, atol=0)
