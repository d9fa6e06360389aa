"""The MovieLens end-to-end commands sit on the entry-point skeleton: common flags, fast --help
(no torch import), `error:` lines and exit code 1 for bad input."""
import subprocess
import sys

MODULES = {  # module -> (takes --config_path, takes --set)
    "tml.projects.home.recap.twhin_features": (False, False),
    "tml.projects.home.recap.scripts.movielens_compare": (True, True),
    "tml.projects.home.recap.scripts.movielens_twhin_compare": (False, True),  # --set for both configs it trains
    "tml.projects.home.recap.scripts.movielens_retrieve_rank": (True, True),
}


def test_parsers_take_the_common_flags_without_importing_torch():
    script = "\n".join(
        ["import importlib, sys", "flags = {}"]
        + [f"p = importlib.import_module({m!r}).build_parser(); "
           f"flags[{m!r}] = sorted(o for a in p._actions for o in a.option_strings)" for m in MODULES]
        + ["print('torch' in sys.modules or 'torchrec' in sys.modules)", "print(flags)"]
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert lines and lines[0] == "False", done.stdout + done.stderr
    flags = eval(lines[1])  # noqa: S307 - our own printed dict
    for module, (takes_config, takes_set) in MODULES.items():
        assert ("--set" in flags[module]) == takes_set, module
        assert ({"--config_path", "--config_yaml_path"} <= set(flags[module])) == takes_config, module


def test_a_missing_export_is_one_error_line_and_exit_1(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tml.projects.home.recap.scripts.movielens_retrieve_rank",
         "--config_path", "projects/home/recap/config/movielens.yaml", "--embeddings", str(tmp_path / "none"),
         "--twhin_data", str(tmp_path), "--data_dir", str(tmp_path), "--checkpoint", str(tmp_path),
         "--output", str(tmp_path / "o.parquet")],
        capture_output=True, text=True, timeout=120,
        cwd=__import__("pathlib").Path(__file__).resolve().parents[4],
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "prepare_movielens" in done.stderr  # names what to run
