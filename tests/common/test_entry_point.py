"""The one command skeleton: shared flags, exit codes, errors without tracebacks, the Ctrl-C message."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import pytest

from tml.common import entry_point
from tml.common.entry_point import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandError,
    TrainingProgress,
    call_command,
    command_parser,
    load_command_config,
    report_training_progress,
)
from tml.core.config import BaseConfig, ConfigError


class _Training(BaseConfig):
    save_dir: str = "/default"
    num_train_steps: int = 10


class _Job(BaseConfig):
    training: _Training = _Training()


def test_both_config_spellings_set_and_run_flags():
    parser = command_parser("x", writes_run=True)
    old = parser.parse_args(["--config_yaml_path", "a.yaml", "--set", "a=1", "--set", "b=2"])
    new = parser.parse_args(["--config_path", "a.yaml", "--save_dir", "/d", "--overwrite_save_dir"])
    assert old.config_path == new.config_path == "a.yaml" and old.overrides == ["a=1", "b=2"]
    assert new.save_dir == "/d" and new.overwrite_save_dir and old.save_dir is None and not old.overwrite_save_dir
    assert not hasattr(command_parser("x").parse_args(["--config_path", "a"]), "save_dir")
    assert command_parser("x", config="optional").parse_args([]).config_path is None
    with pytest.raises(SystemExit):
        command_parser("x").parse_args([])


def test_save_dir_flag_overrides_the_config_and_set_applies(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("training:\n  save_dir: /from/yaml\n")
    args = command_parser("x", writes_run=True).parse_args(["--config_path", str(path), "--set", "training.num_train_steps=3"])
    assert load_command_config(_Job, args).training.model_dump() == {"save_dir": "/from/yaml", "num_train_steps": 3}
    args.save_dir = "/from/flag"
    assert load_command_config(_Job, args).training.save_dir == "/from/flag"


def _call(main, argv=()):
    return call_command(command_parser("x", config="none"), lambda args: main(), list(argv))


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (ConfigError("a.yaml: training.x: unknown field"), EXIT_USAGE, "error: a.yaml: training.x: unknown field"),
        (CommandError("out/ holds other files"), EXIT_FAILURE, "error: out/ holds other files"),
        (FileNotFoundError(2, "No such file or directory", "/no/file"), EXIT_FAILURE,
         "error: No such file or directory: /no/file"),
    ],
)
def test_user_errors_exit_with_their_code_and_one_line(error, code, message, capsys):
    def main():
        raise error

    assert _call(main) == code
    assert capsys.readouterr().err == message + "\n"


def test_bugs_keep_their_traceback():
    def main():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        _call(main)


def test_exit_code_of_main_is_returned():
    assert _call(lambda: None) == 0 and _call(lambda: 3) == 3


def test_ctrl_c_during_training_names_the_step_the_checkpoint_and_how_to_resume(capsys):
    def main():
        report_training_progress(lambda: TrainingProgress(37, 100, "/runs/a/30"))
        raise KeyboardInterrupt

    assert _call(main) == EXIT_INTERRUPTED
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "Interrupted at step 37 of 100; the last checkpoint is /runs/a/30.",
        "Run the same command to resume from it (add --overwrite_save_dir to start over).",
    ]


def test_ctrl_c_before_any_checkpoint_and_before_training(capsys):
    def during_training():
        report_training_progress(lambda: TrainingProgress(3, 100, None))
        raise KeyboardInterrupt

    assert _call(during_training) == EXIT_INTERRUPTED
    assert "Interrupted at step 3 of 100; no checkpoint was written yet." in capsys.readouterr().err

    def before():
        raise KeyboardInterrupt

    assert _call(before) == EXIT_INTERRUPTED  # the progress of an earlier command is forgotten
    assert capsys.readouterr().err.strip().splitlines() == [
        "Interrupted before it finished.", "Run the same command to start again."]


def test_an_error_caused_by_the_interruption_is_reported_as_the_interruption(capsys):
    def main():
        try:
            entry_point._raise_keyboard_interrupt(2, None)  # what SIGINT does
        except KeyboardInterrupt:
            raise RuntimeError("connection closed by peer") from None  # e.g. a collective whose peer stopped

    assert _call(main) == EXIT_INTERRUPTED
    assert "Traceback" not in capsys.readouterr().err


def test_sigint_in_a_real_process_prints_two_lines_and_exits_130(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text(
        "import time\n"
        "from tml.common.entry_point import command_parser, run_command, report_training_progress, TrainingProgress\n"
        "def main(args):\n"
        "    report_training_progress(lambda: TrainingProgress(5, 9, None))\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "run_command(command_parser('x', config='none'), main)\n"
    )
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(2)
    _, err = process.communicate(timeout=30)
    assert process.returncode == EXIT_INTERRUPTED
    assert err.strip().splitlines() == [
        "Interrupted at step 5 of 9; no checkpoint was written yet.", "Run the same command to start again."]


def _launch_until_both_ranks_are_ready(command: list[str], attempts: int = 2) -> subprocess.Popen:
    """Start a 2-rank launch and wait for both ranks' `ready` lines. A launch that ends before both
    are ready (CI saw one once, cause not recorded) is retried once; a second one fails the test
    with the launcher's output."""
    import os
    import signal

    for attempt in range(attempts):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        ready, seen = set(), []
        while len(ready) < 2:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("ready "):
                ready.add(line.split()[1])
        if ready == {"0", "1"}:
            return process
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, err = process.communicate(timeout=60)
        if attempt == attempts - 1:
            raise AssertionError(f"the launch ended before both ranks were ready (exit {process.returncode})\n"
                                 f"stdout: {''.join(seen)}\nstderr: {err}")
    raise AssertionError("unreachable")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "tml.common.launch"])
def test_ctrl_c_under_a_launcher(tmp_path, launcher):
    """Ctrl-C (SIGINT to the whole process group) of a 2-rank launch: the two lines once, from rank
    0. torchrun then adds its own SignalException traceback and exits 1 (documented in the README);
    tml.common.launch, torchrun's arguments, ends with the two lines and exit 130."""
    import os
    import signal

    script = tmp_path / "sleeper.py"
    script.write_text(
        "import os, time\n"
        "from tml.common.entry_point import command_parser, run_command, report_training_progress, TrainingProgress\n"
        "def main(args):\n"
        "    report_training_progress(lambda: TrainingProgress(5, 9, None))\n"
        "    print('ready', os.environ['RANK'], flush=True)\n"
        "    time.sleep(120)\n"
        "run_command(command_parser('x', config='none'), main)\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run" if launcher == "torchrun" else launcher,
               "--standalone", "--nproc_per_node", "2", str(script)]
    process = _launch_until_both_ranks_are_ready(command)
    try:
        os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert err.count("Interrupted at step 5 of 9; no checkpoint was written yet.") == 1, err
    if launcher == "torchrun":
        assert process.returncode == 1 and "SignalException: Process" in err.splitlines()[-1], err
    else:
        assert process.returncode == EXIT_INTERRUPTED and "Traceback" not in err, err


@pytest.mark.parametrize("failure", ["command_error", "killed"])
def test_a_failing_worker_under_tml_launch_ends_in_its_own_lines(tmp_path, failure):
    """Both ranks hit a user error; rank 1 is still writing its message when torchrun, seeing rank 0
    fail, sends it SIGTERM: each prints its `error:` line (no KeyboardInterrupt traceback), then one
    launcher line names the rank, exit 1 (torchrun would add a ChildFailedError traceback and a
    failure table). A worker killed by a signal: the launcher line names it, exit 128 + signal."""
    script = tmp_path / "failing.py"
    script.write_text(
        "import os, time\n"
        "from tml.common.entry_point import CommandError, command_parser, run_command\n"
        "class SlowToDescribe(CommandError):\n"
        "    def __str__(self):\n"
        "        if os.environ['RANK'] == '1':\n"
        "            time.sleep(3)  # rank 0 has failed meanwhile; torchrun stops this rank\n"
        "        return 'no edge file matches /nowhere/*.parquet'\n"
        "def main(args):\n"
        f"    if {failure!r} == 'killed' and os.environ['RANK'] == '1':\n"
        "        os.abort()\n"
        "    raise SlowToDescribe()\n"
        "run_command(command_parser('x', config='none'), main)\n"
    )
    command = [sys.executable, "-m", "tml.common.launch", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    if failure == "command_error":
        assert result.returncode == EXIT_FAILURE, result.stderr
        assert result.stderr.count("error: no edge file matches /nowhere/*.parquet") == 2, result.stderr
        assert re.fullmatch(r"error: \S*failing\.py: rank 0 exited with code 1 \(its message is above\)", last), last
    else:
        assert result.returncode == 128 + 6, result.stderr
        assert re.fullmatch(r"error: \S*failing\.py: rank 1 was killed by SIGABRT", last), result.stderr


# Every command and the shared flags it must take: (module, config flags, run flags).
COMMANDS = [
    ("tml.projects.home.recap.main", True, True),
    ("tml.projects.home.recap.data.from_table", False, False),  # makes a config, reads none
    ("tml.projects.home.recap.data.flight_reader", True, False),
    ("tml.projects.twhin.run", True, True),
    ("tml.projects.twhin.data.flight_reader", True, False),
    ("tml.projects.home.recap.score", True, False),
    ("tml.projects.home.recap.export", True, False),
    ("tml.projects.home.recap.model.feature_statistics", True, False),
    ("tml.projects.home.recap.data.generate_random_data", True, False),
    ("tml.projects.home.recap.data.parquet_schema", True, False),
    ("tml.projects.home.recap.scripts.own_table_calibration", False, False),
    ("tml.projects.twhin.data.generate_random_graph", True, False),
    ("tml.projects.twhin.embeddings", False, False),  # subcommands; `export` takes --config_path
    ("tml.projects.home.recap.data.tfrecord_import", False, False),
    ("tml.projects.home.recap.scripts.prepare_movielens", False, False),
    ("tml.projects.twhin.scripts.prepare_nations", False, False),
    ("tml.projects.twhin.scripts.prepare_movielens", False, False),
    ("tml.tools.pq", False, False),
    ("tml.tools.env_check", False, False),
    ("tml.projects.home.recap.twhin_features", False, False),
    ("tml.projects.home.recap.scripts.movielens_compare", True, False),
    ("tml.projects.home.recap.scripts.movielens_twhin_compare", False, False),  # --set for both configs it trains
    ("tml.projects.home.recap.scripts.movielens_retrieve_rank", True, False),
    ("tml.projects.home.recap.scripts.movielens_candidates", False, False),
]
# Modules runnable with `python -m` that are not on the skeleton, and why.
NOT_COMMANDS = {
    "tml.common.launch": "torchrun itself: every argument is torchrun's",
}


MAIN_BLOCK = re.compile(r'^if __name__ == "__main__":', re.MULTILINE)


def _runnable_modules() -> set[str]:
    """Every module of the package with a `__main__` block (benchmarks are scripts, not commands)."""
    import pathlib

    import tml

    root = pathlib.Path(tml.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if relative.parts[0] in ("tests", "bench", ".venv", "build") or not MAIN_BLOCK.search(path.read_text()):
            continue
        found.add(".".join(("tml", *relative.with_suffix("").parts)))
    return found


def test_every_runnable_module_is_a_listed_command():
    listed = {module for module, _, _ in COMMANDS}
    assert _runnable_modules() - listed - set(NOT_COMMANDS) == set(), "add new commands to COMMANDS"
    assert listed <= _runnable_modules()


@pytest.mark.parametrize(("module", "takes_config", "writes_run"), COMMANDS, ids=[c[0][len("tml."):] for c in COMMANDS])
def test_every_command_takes_the_common_flags(module, takes_config, writes_run):
    import importlib

    parser = importlib.import_module(module).build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    assert ({"--config_path", "--config_yaml_path", "--set"} <= flags) == takes_config, flags
    assert ({"--save_dir", "--overwrite_save_dir"} <= flags) == writes_run, flags
    if takes_config:  # one flag, two spellings
        (action,) = [action for action in parser._actions if "--config_yaml_path" in action.option_strings]
        assert action.dest == "config_path" and "--config_path" in action.option_strings


def test_generators_take_overwrite():
    from tml.projects.home.recap.data.generate_random_data import build_parser as recap_generator
    from tml.projects.twhin.data.generate_random_graph import build_parser as graph_generator

    for parser in (recap_generator(), graph_generator()):
        assert "--overwrite" in {option for action in parser._actions for option in action.option_strings}


# Commands whose `--help` still imports pyarrow (through a module-level import of their library).
HELP_IMPORTS_PYARROW = {
    "tml.projects.home.recap.scripts.own_table_calibration",
    "tml.tools.pq",
    "tml.projects.home.recap.twhin_features",
    "tml.projects.home.recap.scripts.movielens_retrieve_rank",
}


def test_every_help_answers_without_importing_torch_or_pyarrow():
    """`python -m <command> --help` for every command, in one process: usage printed, exit 0,
    torch and torchrec never imported (their import alone takes seconds), and pyarrow (a few tenths
    of a second) not imported by the commands outside HELP_IMPORTS_PYARROW, which run first so
    that each one's imports are seen on their own."""
    modules = sorted((module for module, _, _ in COMMANDS), key=lambda module: module in HELP_IMPORTS_PYARROW)
    script = "\n".join([
        "import contextlib, io, json, runpy, sys",
        "imported = {}",
        f"for module in {modules!r}:",
        "    sys.argv = [module, '--help']",
        "    out = io.StringIO()",
        "    with contextlib.redirect_stdout(out):",
        "        try:",
        "            runpy.run_module(module, run_name='__main__', alter_sys=True)",
        "        except SystemExit as done:",
        "            assert done.code in (0, None), (module, done.code)",
        "    assert out.getvalue().startswith('usage: python -m ' + module), (module, out.getvalue()[:200])",
        "    imported[module] = [name for name in ('torch', 'torchrec', 'pyarrow') if name in sys.modules]",
        "print(json.dumps(imported))",
    ])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(imported) == set(modules)
    assert {module: names for module, names in imported.items() if {"torch", "torchrec"} & set(names)} == {}
    arrow_free = [module for module in modules if module not in HELP_IMPORTS_PYARROW]
    assert [module for module in arrow_free if "pyarrow" in imported[module]] == []
    # Generous (a loaded 2-core machine): the point is no torch import, seconds by itself.
    assert time.perf_counter() - started < 60
