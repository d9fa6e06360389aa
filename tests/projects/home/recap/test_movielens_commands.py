"""The MovieLens end-to-end commands sit on the entry-point skeleton: common flags, fast --help
(no torch import), `error:` lines and exit code 1 for bad input."""
import subprocess
import sys

# Their common flags and torch-free --help are checked with every other command's in
# tests/common/test_entry_point.py (COMMANDS); here what only these commands have.


def test_the_twhin_comparison_takes_set_for_both_configs_it_trains():
    from tml.projects.home.recap.scripts.movielens_twhin_compare import build_parser

    assert "--set" in {option for action in build_parser()._actions for option in action.option_strings}


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


def test_bad_candidate_inputs_are_one_error_line_and_exit_1(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parents[4]
    for command in (
        ["tml.projects.home.recap.scripts.prepare_movielens", "--output_dir", str(tmp_path / "o"),
         "--served_candidates", str(tmp_path / "none.parquet"), "--label_start_fraction", "0.4"],
        ["tml.projects.home.recap.scripts.prepare_movielens", "--output_dir", str(tmp_path / "o"),
         "--label_start_fraction", "0.9"],
        ["tml.projects.home.recap.scripts.movielens_candidates", "--embeddings", str(tmp_path / "none"),
         "--twhin_data", str(tmp_path), "--twhin_config", "projects/twhin/config/movielens_retrieval.yaml",
         "--cut_fraction", "0.4", "--output", str(tmp_path / "c.parquet")],
    ):
        done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=120, cwd=root)
        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
