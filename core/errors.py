"""Failures whose message alone tells the user what to fix.

Entry points print a `TmlError`'s message in a few lines and exit 1, without a traceback: the
message names the file, field, step or directory involved, and the traceback would only bury it.
"""
from __future__ import annotations


class TmlError(Exception):
    """A run stopped for a reason the message explains (bad data, diverged training, unsafe path)."""


class DataError(TmlError, ValueError):
    """Input data that cannot be trained on: the message names the file, column, row and value."""
