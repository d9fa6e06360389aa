import importlib
import logging as std_logging
import re

import pytest

from tml.common.testing_utils import run_on_ranks
from tml.ml_logging import torch_logging
from tml.ml_logging.torch_logging import LEVEL_ENV_VARIABLE, configure_tml_logger, level_from_environment, logging

from rank_fns_logging import log_to_various_ranks

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[(?P<where>[\w.]+:\d+)\] (?P<level>[A-Z]+) (?P<msg>.*)$")


@pytest.fixture(autouse=True)
def fresh_logger(monkeypatch):
    monkeypatch.delenv(LEVEL_ENV_VARIABLE, raising=False)
    configure_tml_logger()
    logging.reset_warning_repeats()
    yield
    monkeypatch.delenv(LEVEL_ENV_VARIABLE, raising=False)
    configure_tml_logger()
    logging.reset_warning_repeats()


def printed_messages(capsys) -> list[tuple[str, str]]:
    """(LEVEL, message) per log line printed to stdout; every line must match the format."""
    lines = capsys.readouterr().out.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    return [(match["level"], match["msg"]) for match in parsed]


def test_line_format_names_the_calling_module_function_and_line(capsys):
    def emit_here():
        logging.info("value is %d", 3)
        return emit_here.__code__.co_firstlineno + 1

    line_number = emit_here()
    (line,) = capsys.readouterr().out.splitlines()
    match = LINE.match(line)
    assert match, line
    assert match["where"] == f"test_torch_logging.emit_here:{line_number}"
    assert (match["level"], match["msg"]) == ("INFO", "value is 3")


def test_no_process_group_logs_every_call_without_prefix(capsys):
    logging.info("zero")
    logging.info("one", rank=1)
    logging.warning("all", rank=-1)
    assert printed_messages(capsys) == [("INFO", "zero"), ("INFO", "one"), ("WARNING", "all")]


def test_single_rank_group_filters_other_ranks_and_prefixes_all_ranks(process_group, capsys):
    logging.info("mine")
    logging.info("not mine", rank=1)
    logging.error("everyone %s", "here", rank=-1)
    logging.debug("below the level")
    assert printed_messages(capsys) == [("INFO", "mine"), ("ERROR", "Rank 0: everyone here")]


@pytest.mark.slow
def test_two_ranks_print_only_what_is_addressed_to_them():
    rank0, rank1 = run_on_ranks(log_to_various_ranks, 2, timeout_s=60)
    strip = lambda lines: [LINE.match(line)["msg"] for line in lines]  # noqa: E731
    assert strip(rank0) == ["default goes to rank 0", "Rank 0: everyone, value 7", "rank zero error"]
    assert strip(rank1) == ["addressed to rank 1", "Rank 1: everyone, value 7"]


def test_repeated_warning_is_shown_once_until_a_different_warning(capsys):
    for _ in range(3):
        logging.warning("disk almost full: %d%%", 95)
    logging.info("an info does not reset the streak")
    logging.warning("disk almost full: %d%%", 95)
    logging.warning("disk almost full: %d%%", 96)
    logging.warning("disk almost full: %d%%", 95)
    logging.warning("disk almost full: %d%%", 95)
    assert printed_messages(capsys) == [
        ("WARNING", "disk almost full: 95%"),
        ("INFO", "an info does not reset the streak"),
        ("WARNING", "disk almost full: 96%"),
        ("WARNING", "disk almost full: 95%"),
    ]


def test_repeated_errors_and_infos_are_not_suppressed(capsys):
    logging.error("again")
    logging.error("again")
    logging.info("again")
    logging.info("again")
    assert printed_messages(capsys) == [("ERROR", "again")] * 2 + [("INFO", "again")] * 2


def test_exception_includes_the_traceback(capsys):
    try:
        raise KeyError("missing-key")
    except KeyError:
        logging.exception("lookup failed")
    out = capsys.readouterr().out
    assert "ERROR lookup failed" in out
    assert "Traceback (most recent call last)" in out and "KeyError: 'missing-key'" in out


def test_fatal_is_critical_and_does_not_exit(capsys):
    logging.fatal("cannot continue")
    assert printed_messages(capsys) == [("CRITICAL", "cannot continue")]


@pytest.mark.parametrize(
    "value, level",
    [("", std_logging.INFO), ("debug", std_logging.DEBUG), ("Warn", std_logging.WARNING), ("40", 40)],
)
def test_level_from_environment(monkeypatch, value, level):
    monkeypatch.setenv(LEVEL_ENV_VARIABLE, value)
    assert level_from_environment() == level


def test_bad_level_in_environment_is_named(monkeypatch):
    monkeypatch.setenv(LEVEL_ENV_VARIABLE, "loud")
    with pytest.raises(ValueError, match=r"TML_LOG_LEVEL='loud' is not a log level; expected one of DEBUG, INFO"):
        level_from_environment()


def test_environment_level_controls_what_is_printed(monkeypatch, capsys):
    logging.debug("hidden at INFO")
    monkeypatch.setenv(LEVEL_ENV_VARIABLE, "DEBUG")
    configure_tml_logger()
    logging.debug("shown at DEBUG")
    monkeypatch.setenv(LEVEL_ENV_VARIABLE, "ERROR")
    configure_tml_logger()
    logging.warning("hidden at ERROR")
    logging.error("shown at ERROR")
    assert printed_messages(capsys) == [("DEBUG", "shown at DEBUG"), ("ERROR", "shown at ERROR")]


def test_configuring_again_or_reloading_adds_no_handler_and_leaves_root_alone():
    root = std_logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    configure_tml_logger()
    configure_tml_logger()
    importlib.reload(torch_logging)
    tml_logger = std_logging.getLogger("tml")
    assert sum(getattr(h, "is_tml_handler", False) for h in tml_logger.handlers) == 1
    assert tml_logger.level == std_logging.INFO and tml_logger.propagate is False
    assert root.handlers == root_handlers and root.level == root_level
