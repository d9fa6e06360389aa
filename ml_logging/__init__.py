"""Logging for tml: use `from tml.ml_logging.torch_logging import logging` (rank-aware)."""
