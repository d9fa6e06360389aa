"""`pip install` of tml outside the checkout: a wheel built from the repository installs into a clean
environment, whose commands and job modules import from the installed copy, with the configs they
need; building leaves no build/ or *.egg-info in the checkout. (~20 s: a wheel build and a few
imports; the clean environment reuses this one's installed packages instead of downloading them.)"""
from __future__ import annotations

import glob
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TML_BASE")}
    done = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.mark.slow
def test_a_wheel_installs_into_a_clean_environment_and_its_commands_run(tmp_path):
    before = {path.name for path in REPO_ROOT.iterdir()}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO_ROOT),
          "-w", str(tmp_path / "wheels")], cwd=tmp_path)
    (wheel,) = glob.glob(str(tmp_path / "wheels" / "tml-*.whl"))
    assert {path.name for path in REPO_ROOT.iterdir()} == before  # no build/ nor tml.egg-info left behind

    # A clean environment (no tml: not the editable install of this checkout) that finds the
    # dependencies (torch, torchrec, fbgemm, pyarrow, ...) where this one has them.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    (venv_site,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
    dependencies = [path for path in site.getsitepackages() if os.path.isdir(path)]
    Path(venv_site, "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", venv_site, wheel], cwd=tmp_path)

    where = _run([str(python), "-c", "import tml, os; print(os.path.dirname(tml.__file__))"], cwd=tmp_path)
    assert where.stdout.strip() == os.path.join(venv_site, "tml")
    for module in ("tml.projects.home.recap.main", "tml.projects.twhin.run", "tml.projects.home.recap.scripts.prepare_movielens"):
        assert "--help" in _run([str(python), "-m", module, "--help"], cwd=tmp_path).stdout
    _run([str(python), "-c", "import tml.projects.home.recap.job, tml.projects.twhin.job, tml.projects.home.recap.score"],
         cwd=tmp_path)
    for config in ("projects/home/recap/config/local.yaml", "projects/twhin/config/local.yaml"):
        assert Path(venv_site, "tml", config).is_file(), config
