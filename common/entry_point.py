"""The one skeleton of every `python -m tml...` command (plain python or under torchrun).

What it gives each command, so that all of them behave alike:

- one command line: `--config_path FILE` (the original's `--config_yaml_path` is the same flag),
  `--set key=value` (repeatable), and for commands that write a run `--save_dir DIR` (overrides
  `training.save_dir`) and `--overwrite_save_dir` (start over instead of resuming);
- arguments parsed before anything heavy is imported: a command module imports only argparse and
  this module at its top and imports torch, torchrec and its project inside its `main(args)`, so
  `--help` and argument mistakes answer at once;
- the config loaded with the overrides applied (`load_command_config`), and one runtime set-up for
  training jobs (`training_session`: process group, device, TF32, W&B, clearing `save_dir` when asked);
- exit codes: 0 done, 1 a failure the user can fix (missing file, refused output folder, bad
  data), 2 a bad command line or config, 130 interrupted (Ctrl-C);
- errors the user can fix printed as `error: <message>` without a traceback (any other exception is
  a bug and keeps its traceback; TML_TRACEBACK=1 shows one for every error);
- Ctrl-C answered by two lines saying where training stopped, the last checkpoint and how to resume,
  on every rank's behalf (rank 0 prints; no rank prints a traceback).

A command module:

    def build_parser() -> argparse.ArgumentParser:
        parser = command_parser("What the command does.", writes_run=True)
        parser.add_argument("--debug_loop", action="store_true")
        return parser

    def main(args: argparse.Namespace) -> int:
        from tml.projects.x import job          # the heavy imports
        config = load_command_config(job.XConfig, args)
        with training_session(config, args.overwrite_save_dir) as device:
            job.run(config, device)
        return 0

    if __name__ == "__main__":
        run_command(build_parser(), main)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, Optional, Sequence, TypeVar

if TYPE_CHECKING:  # imported for real only where used: they cost seconds
    import torch

    from tml.core.config.training import RuntimeConfig

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C

TRACEBACK_VARIABLE = "TML_TRACEBACK"

ConfigT = TypeVar("ConfigT")


class CommandError(Exception):
    """A failure the user can fix, reported as `error: <message>` (exit 1) without a traceback.

    Raise it (or a subclass) for refused output folders, missing inputs, bad data: anything whose
    message says what to change. Config mistakes raise `tml.core.config.ConfigError` (exit 2).
    """


@dataclasses.dataclass(frozen=True)
class TrainingProgress:
    """Where a training loop is: what Ctrl-C reports."""

    step: int
    train_steps: int
    last_checkpoint: Optional[str]


_training_progress: Optional[Callable[[], TrainingProgress]] = None


def report_training_progress(progress: Optional[Callable[[], TrainingProgress]]) -> None:
    """Called by a training loop before its first step: `progress()` tells the interrupt message
    where training stopped. Called on interruption only, so it may do a little I/O."""
    global _training_progress
    _training_progress = progress


# --------------------------------------------------------------------------------------------------
# The command line


def add_config_flags(parser: argparse.ArgumentParser, required: bool = True) -> argparse.ArgumentParser:
    """`--config_path FILE` (alias `--config_yaml_path`) and `--set KEY=VALUE ...`."""
    parser.add_argument(
        "--config_path",
        "--config_yaml_path",
        dest="config_path",
        required=required,
        metavar="FILE",
        help="YAML config file, local path or fsspec URL ($VAR and ${VAR} are expanded from the "
        "environment). --config_yaml_path, the original's spelling, is the same flag.",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override one config value after loading, e.g. --set training.num_train_steps=100 "
        "(dotted path, list indices as numbers, value parsed as YAML; repeatable).",
    )
    return parser


def add_run_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--save_dir DIR` and `--overwrite_save_dir`, for commands that write a training run."""
    parser.add_argument(
        "--save_dir",
        metavar="DIR",
        help="Checkpoint and TensorBoard folder of the run; overrides training.save_dir. A run "
        "resumes from the newest checkpoint there.",
    )
    parser.add_argument(
        "--overwrite_save_dir",
        action="store_true",
        help="Start over: delete the run in save_dir first instead of resuming from it.",
    )
    return parser


def _program_name() -> Optional[str]:
    """`python -m tml.x.y` in usage lines, instead of argparse's `y.py`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return f"python -m {name}" if name and name.startswith("tml.") else None


JOB_MODES = ("train", "evaluate", "train_and_evaluate")


def add_mode_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--mode {train,evaluate,train_and_evaluate}` for training jobs (the original's trainer and
    evaluator roles)."""
    parser.add_argument(
        "--mode",
        choices=JOB_MODES,
        default=None,
        help="train: train only (a separate evaluator follows the checkpoints); evaluate: be that "
        "evaluator: evaluate each new checkpoint in save_dir once, until the last one or "
        "training.eval_timeout_in_s without a new one; train_and_evaluate: train and evaluate "
        "inline. Default: train_and_evaluate when the config has validation data, else train.",
    )
    return parser


def command_parser(
    description: Optional[str],
    *,
    config: str = "required",
    writes_run: bool = False,
    epilog: Optional[str] = None,
) -> argparse.ArgumentParser:
    """The parser every command starts from.

    `config`: "required", "optional" (the command also works without a config) or "none".
    `writes_run`: add `--save_dir` and `--overwrite_save_dir`.
    """
    if config not in ("required", "optional", "none"):
        raise ValueError(f"config must be 'required', 'optional' or 'none', not {config!r}")
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if config != "none":
        add_config_flags(parser, required=config == "required")
    if writes_run:
        add_run_flags(parser)
    return parser


def load_command_config(config_cls: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """The config named by `--config_path`, with `--set` applied and `--save_dir` (if given) as
    `training.save_dir`."""
    from tml.core.config import load_config_from_yaml

    config = load_config_from_yaml(config_cls, args.config_path, args.overrides)
    save_dir = getattr(args, "save_dir", None)
    if save_dir:
        training = config.training.model_copy(update={"save_dir": save_dir})  # type: ignore[attr-defined]
        config = config.model_copy(update={"training": training})  # type: ignore[attr-defined]
    return config


# --------------------------------------------------------------------------------------------------
# Runtime set-up of training jobs


def configure_runtime(runtime: "RuntimeConfig", device: "torch.device") -> None:
    """Apply `runtime` to this process: TF32 for matmuls and convolutions on CUDA; a warning when
    bf16 autocast would be slow on this CPU."""
    import torch

    from tml.core.precision import warn_if_bf16_is_slow

    if runtime.enable_tensorfloat32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    warn_if_bf16_is_slow(device, runtime.enable_amp)


def clear_save_dir(save_dir: str) -> None:
    """`--overwrite_save_dir`: delete the earlier run's checkpoints and logs, only in a directory tml
    made and holding nothing else, and never under a live run (its lock is taken meanwhile); every
    rank calls it. See common.checkpointing.save_dir."""
    from tml.common.checkpointing.save_dir import open_save_dir

    open_save_dir(save_dir, overwrite=True).release()


@contextlib.contextmanager
def training_session(config: Any, overwrite_save_dir: bool = False) -> Iterator["torch.device"]:
    """What a training job runs inside: the process group and device, `config.runtime` applied,
    `config.training.save_dir` cleared first when asked, scalars also sent to Weights & Biases when
    `runtime.wandb` is set; the process group is destroyed on the way out."""
    from tml.common import device as device_lib
    from tml.common.wandb import wandb_logging

    device = device_lib.setup_and_get_device()
    try:
        configure_runtime(config.runtime, device)
        save_dir = config.training.save_dir
        if overwrite_save_dir:
            clear_save_dir(save_dir)
        with wandb_logging(config.runtime.wandb, config, save_dir):
            yield device
    finally:
        device_lib.teardown()


# --------------------------------------------------------------------------------------------------
# Running a command


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors whose message is the whole story: no traceback. Imported lazily (pydantic is slow)."""
    from tml.core.config import ConfigError
    from tml.core.errors import TmlError

    return (
        ConfigError, CommandError, TmlError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError
    )


def _exit_code_of(error: BaseException) -> int:
    from tml.core.config import ConfigError

    return EXIT_USAGE if isinstance(error, ConfigError) else EXIT_FAILURE


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return str(error) or type(error).__name__


def _is_chief_process() -> bool:
    """Rank 0, or a process outside torchrun; works before and after the process group exists."""
    return os.environ.get("RANK", "0") == "0"


def interrupt_message() -> str:
    """The two lines printed after Ctrl-C."""
    progress = _training_progress() if _training_progress is not None else None
    if progress is not None:
        where = f"Interrupted at step {progress.step} of {progress.train_steps}"
        if progress.last_checkpoint:
            return (
                f"{where}; the last checkpoint is {progress.last_checkpoint}.\n"
                "Run the same command to resume from it (add --overwrite_save_dir to start over)."
            )
        return f"{where}; no checkpoint was written yet.\nRun the same command to start again."
    return "Interrupted before it finished.\nRun the same command to start again."


_interrupted = False


def _remember_interrupt(signum: int, frame: Any) -> None:
    """While an error is being reported: a launcher stopping this rank (torchrun sends SIGTERM to the
    others when one rank fails) must not cut the report into a traceback."""
    del signum, frame
    global _interrupted
    _interrupted = True


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM: remembered, so an error that the stop causes (a peer rank gone in the
    middle of a collective) is reported as the interruption it is, not as a crash."""
    _remember_interrupt(signum, frame)
    raise KeyboardInterrupt


def _print_error(prefix: str, error: BaseException) -> None:
    if os.environ.get(TRACEBACK_VARIABLE, "").strip() not in ("", "0"):
        traceback.print_exception(error)
    print(f"{prefix}{_describe(error)}", file=sys.stderr)


def library_attributes(library: str) -> Callable[[str], Any]:
    """A module `__getattr__` serving the names of `library`, imported on first use.

    A command whose module is also a library's public name (`from tml.projects.home.recap.score
    import score_candidates`) keeps its code in `library` and sets `__getattr__ =
    library_attributes(...)`: `--help` then needs none of the library's torch imports.
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):  # probes for __path__, __wrapped__, ...: not the library's
            raise AttributeError(name)
        import importlib

        return getattr(importlib.import_module(library), name)

    return __getattr__


def run_command(
    parser: argparse.ArgumentParser,
    main: Callable[[argparse.Namespace], Optional[int]],
    argv: Optional[Sequence[str]] = None,
) -> NoReturn:
    """Parse the command line, run `main(args)` and exit with its code (see the module docstring)."""
    sys.exit(call_command(parser, main, argv))


def call_command(
    parser: argparse.ArgumentParser,
    main: Callable[[argparse.Namespace], Optional[int]],
    argv: Optional[Sequence[str]] = None,
) -> int:
    """`run_command` without the exit: the exit code (tests call commands in-process with it).

    A `--help` or a bad argument exits from argparse, as usual (SystemExit 0 or 2).
    """
    args = parser.parse_args(argv)
    from tml.common.allocator import keep_arrow_freed_memory, keep_freed_memory
    from tml.common.quiet_warnings import quiet_torchrec_warnings

    quiet_torchrec_warnings()  # torch, torchrec and DCP notices that need no action
    keep_freed_memory()  # each step's large temporaries are reused instead of page-faulted in again
    keep_arrow_freed_memory()  # before the command imports pyarrow
    global _interrupted, _training_progress
    _interrupted, _training_progress = False, None
    # torchrun stops its workers with SIGTERM (after Ctrl-C reached them too): end the same clean way.
    previous = {sig: signal.signal(sig, _raise_keyboard_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        exit_code = main(args)
    except KeyboardInterrupt:
        if _is_chief_process():
            print("\n" + interrupt_message(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - sorted into the user's errors and bugs below
        for sig in previous:
            signal.signal(sig, _remember_interrupt)
        if _interrupted:  # a consequence of the interruption (e.g. a collective whose peer stopped)
            if _is_chief_process():
                print("\n" + interrupt_message(), file=sys.stderr)
            return EXIT_INTERRUPTED
        if not isinstance(error, _user_error_types()):
            raise
        _print_error("error: ", error)
        return _exit_code_of(error)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout.flush()
        sys.stderr.flush()
    return EXIT_OK if exit_code is None else int(exit_code)
