"""setup.sh's refusals: checked in a scratch copy so the real .venv is never touched."""
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _scratch_copy(tmp_path: Path) -> Path:
    shutil.copy(REPO / "setup.sh", tmp_path / "setup.sh")
    shutil.copytree(REPO / "images", tmp_path / "images")
    return tmp_path


def test_too_old_python_gets_a_one_line_error_saying_what_to_do(tmp_path):
    root = _scratch_copy(tmp_path)
    fake = tmp_path / "python3.8"
    fake.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Python 3.8.18"; exit 0; fi\nexit 1\n')
    fake.chmod(0o755)
    completed = subprocess.run(["bash", str(root / "setup.sh")], env={**os.environ, "PYTHON": str(fake)},
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        "setup.sh: error: tml needs Python >= 3.10 but found Python 3.8.18. Install python3.11 "
        "(e.g. 'apt-get install python3.11-venv') or point PYTHON=/path/to/python3.11 at one, then re-run ./setup.sh."
    ]
    assert not (root / ".venv").exists()


def test_unknown_option_is_refused(tmp_path):
    root = _scratch_copy(tmp_path)
    completed = subprocess.run(["bash", str(root / "setup.sh"), "--cuda"], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert "unknown option '--cuda' (use --cpu or --gpu)" in completed.stderr
