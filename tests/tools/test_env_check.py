import subprocess
import sys


def test_env_check_reports_versions_and_a_working_sharded_forward(tmp_path):
    # From another directory: the installed package, not the working directory, must be found.
    completed = subprocess.run([sys.executable, "-m", "tml.tools.env_check"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = {line.split()[0]: line for line in completed.stdout.splitlines() if line.strip()}
    assert {"tml", "torch", "torchrec", "device", "sharded"} <= set(lines)
    assert "ok (sharded EmbeddingBagCollection forward on cpu)" in lines["sharded"]
    # The process group is freed with the sharded module (gloo's threads joined): no exit-abort risk.
    assert "gloo thread" not in completed.stdout + completed.stderr, completed.stdout
