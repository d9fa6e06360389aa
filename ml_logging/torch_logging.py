"""A rank-aware logger: `from tml.ml_logging.torch_logging import logging`.

Under torchrun every rank runs the same code, so a plain `logging.info` prints N copies of each
line. Here each call takes `rank=` (default 0): the message is printed only on that rank, or on
every rank with a `Rank N: ` prefix when `rank < 0`. Without a process group every call prints.

Standard `logging` does the work, through a logger named "tml" that owns one stdout handler and
does not propagate, so the root logger (the application's business) is never touched and no line
is printed twice. The level is INFO unless the environment variable TML_LOG_LEVEL names another.
"""
from __future__ import annotations

import logging as std_logging
import os
import sys
import threading
from typing import Any, Optional

LOGGER_NAME = "tml"
LEVEL_ENV_VARIABLE = "TML_LOG_LEVEL"
LOG_FORMAT = "%(asctime)s [%(module)s.%(funcName)s:%(lineno)d] %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

_LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _CurrentStdoutHandler(std_logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at emit time, so redirections (and pytest's capsys) see it."""

    is_tml_handler = True

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        # StreamHandler assigns its stream in __init__ and setStream; the live sys.stdout always wins.
        pass


def level_from_environment(default: int = std_logging.INFO) -> int:
    """The level named by TML_LOG_LEVEL (a name such as `debug`, or a number), else `default`."""
    raw = os.environ.get(LEVEL_ENV_VARIABLE, "").strip()
    if not raw:
        return default
    if raw.lstrip("-").isdigit():
        return int(raw)
    name = raw.upper()
    if name == "WARN":
        name = "WARNING"
    if name == "FATAL":
        name = "CRITICAL"
    if name not in _LEVEL_NAMES:
        raise ValueError(
            f"{LEVEL_ENV_VARIABLE}={raw!r} is not a log level; expected one of "
            f"{', '.join(_LEVEL_NAMES)} (any case) or a number"
        )
    return std_logging.getLevelName(name)


def configure_tml_logger() -> std_logging.Logger:
    """Give the "tml" logger its stdout handler and level; safe to call any number of times."""
    logger = std_logging.getLogger(LOGGER_NAME)
    if not any(getattr(handler, "is_tml_handler", False) for handler in logger.handlers):
        handler = _CurrentStdoutHandler()
        handler.setFormatter(std_logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level_from_environment())
    logger.propagate = False
    return logger


def _this_rank() -> Optional[int]:
    """This process's rank in the default group, or None when there is no group.

    torch is not imported for this: a process that has not imported torch.distributed has no
    group, and commands that log before (or without) torch stay quick to start."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return None


def _render(msg: Any, args: tuple[Any, ...]) -> str:
    """The text a record would show; used to recognise a repeated warning."""
    text = str(msg)
    if not args:
        return text
    try:
        return text % args
    except (TypeError, ValueError, KeyError):
        return f"{text} {args!r}"


class RankAwareLogger:
    """Logging methods that take `rank=`: 0 by default, a rank number, or negative for all ranks.

    A warning identical to the previous warning this rank printed is dropped, so a warning raised
    inside a training loop shows once per streak instead of once per step.
    """

    def __init__(self, logger: std_logging.Logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._last_warning: Optional[str] = None

    @property
    def logger(self) -> std_logging.Logger:
        """The underlying standard logger (for handlers, levels, filters)."""
        return self._logger

    def setLevel(self, level: int | str) -> None:  # noqa: N802 - mirrors logging.Logger
        self._logger.setLevel(level)

    def getEffectiveLevel(self) -> int:  # noqa: N802 - mirrors logging.Logger
        return self._logger.getEffectiveLevel()

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - mirrors logging.Logger
        return self._logger.isEnabledFor(level)

    def reset_warning_repeats(self) -> None:
        """Forget the last warning, so an identical one is printed again."""
        with self._lock:
            self._last_warning = None

    def _emit(self, level: int, msg: Any, args: tuple[Any, ...], rank: int, kwargs: dict[str, Any]) -> None:
        this_rank = _this_rank()
        if this_rank is not None:
            if rank < 0:
                msg = f"Rank {this_rank}: {msg}"
            elif rank != this_rank:
                return
        if not self._logger.isEnabledFor(level):
            return
        if level == std_logging.WARNING:
            text = _render(msg, args)
            with self._lock:
                if text == self._last_warning:
                    return
                self._last_warning = text
        # Point %(module)s/%(funcName)s/%(lineno)d at the caller: past _emit and the public method.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
        self._logger.log(level, msg, *args, **kwargs)

    def log(self, level: int, msg: Any, *args: Any, rank: int = 0, **kwargs: Any) -> None:
        self._emit(level, msg, args, rank, kwargs)

    def debug(self, msg: Any, *args: Any, rank: int = 0, **kwargs: Any) -> None:
        self._emit(std_logging.DEBUG, msg, args, rank, kwargs)

    def info(self, msg: Any, *args: Any, rank: int = 0, **kwargs: Any) -> None:
        self._emit(std_logging.INFO, msg, args, rank, kwargs)

    def warning(self, msg: Any, *args: Any, rank: int = 0, **kwargs: Any) -> None:
        self._emit(std_logging.WARNING, msg, args, rank, kwargs)

    def error(self, msg: Any, *args: Any, rank: int = 0, **kwargs: Any) -> None:
        self._emit(std_logging.ERROR, msg, args, rank, kwargs)

    def exception(self, msg: Any, *args: Any, rank: int = 0, exc_info: Any = True, **kwargs: Any) -> None:
        """An ERROR with the traceback of the exception being handled."""
        kwargs["exc_info"] = exc_info
        self._emit(std_logging.ERROR, msg, args, rank, kwargs)

    def fatal(self, msg: Any, *args: Any, rank: int = 0, **kwargs: Any) -> None:
        """A CRITICAL message. Unlike absl's fatal it does not end the process: raise for that."""
        self._emit(std_logging.CRITICAL, msg, args, rank, kwargs)

    critical = fatal


logging = RankAwareLogger(configure_tml_logger())

__all__ = ["logging", "RankAwareLogger", "configure_tml_logger", "level_from_environment", "LOGGER_NAME"]
