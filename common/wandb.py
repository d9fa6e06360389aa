"""Weights & Biases: `runtime.wandb` mirrors every TensorBoard scalar to one wandb run (rank 0).

The original defined these settings but never logged to wandb. Here a job with `runtime.wandb`
starts a run whose config is the job's whole config (plus `metadata`), and every scalar that
`tml.core.summary.SummaryLogger` writes to TensorBoard run `<run>` is logged as `<run>/<name>` at
the same step. Without an API key (`key_path` unset and no `WANDB_API_KEY`) the run is written
offline under the save_dir, to upload later with `wandb sync`.

`wandb` is an optional dependency: `pip install 'tml[wandb]'`.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pydantic

from tml.core.config.base_config import BaseConfig
from tml.core.config.errors import ConfigError

MISSING_PACKAGE = (
    "runtime.wandb is set but the 'wandb' package is not installed: pip install 'tml[wandb]' "
    "(or remove runtime.wandb)"
)


class WandbConfig(BaseConfig):
    host: Optional[str] = pydantic.Field(
        None, description="wandb server URL; None uses wandb's own default (or WANDB_BASE_URL)."
    )
    key_path: Optional[str] = pydantic.Field(
        None,
        description="File holding the wandb API key. Unset: WANDB_API_KEY, else the run is logged offline.",
    )
    name: Optional[str] = pydantic.Field(None, description="Run name shown in the wandb UI.")
    entity: Optional[str] = pydantic.Field(None, description="wandb user or team that owns the run.")
    project: Optional[str] = pydantic.Field(None, description="wandb project the run is logged to.")
    tags: List[str] = pydantic.Field(default_factory=list, description="Tags attached to the run.")
    notes: Optional[str] = pydantic.Field(None, description="Free-text description of the run.")
    metadata: Optional[Dict[str, Any]] = pydantic.Field(
        None, description="Extra key/values stored in the run's config."
    )


def _api_key(settings: WandbConfig) -> Optional[str]:
    """The key from `key_path` (which must then exist and be non-empty), else WANDB_API_KEY."""
    if settings.key_path is None:
        return os.environ.get("WANDB_API_KEY") or None
    from tml.common.filesystem import infer_fs

    filesystem = infer_fs(settings.key_path)
    if not filesystem.exists(settings.key_path):
        raise ConfigError(f"runtime.wandb.key_path: no such file: {settings.key_path}")
    with filesystem.open(settings.key_path, "r") as stream:
        key = stream.read().strip()
    if not key:
        raise ConfigError(f"runtime.wandb.key_path: {settings.key_path} is empty (expected a wandb API key)")
    return key


def _log_dir(save_dir: str) -> str:
    """wandb writes its local files next to the checkpoints, or in the working directory when the
    save_dir is remote."""
    from tml.common.filesystem import infer_fs, is_local_fs

    if is_local_fs(infer_fs(save_dir)):
        os.makedirs(save_dir, exist_ok=True)
        return save_dir
    return os.getcwd()


def import_wandb() -> Any:
    """The wandb module, or a ConfigError with the one line that says how to install it."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(MISSING_PACKAGE) from None
    return wandb


class WandbSink:
    """Receives SummaryLogger's scalars (rank 0 only): TensorBoard run `run` becomes the key prefix
    `run/`. The wandb run starts at the first scalar, when the process group (and so which rank is
    the chief) is known."""

    def __init__(self, settings: WandbConfig, run_config: Mapping[str, Any], save_dir: str) -> None:
        self.settings = settings
        self.run_config = dict(run_config)
        self.save_dir = save_dir
        self.api_key = _api_key(settings)  # a bad key_path stops the job before training
        self.run: Any = None

    def log(self, run_name: str, values: Mapping[str, float], step: int) -> None:
        if self.run is None:
            self.run = self._start()
        self.run.log({f"{run_name}/{name}": float(value) for name, value in values.items()}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def _start(self) -> Any:
        from tml.ml_logging.torch_logging import logging

        wandb = import_wandb()
        settings = self.settings
        log_dir = _log_dir(self.save_dir)
        options: dict[str, Any] = {"silent": True, "console": "off", "x_disable_stats": True}
        if settings.host is not None:
            options["base_url"] = settings.host
        if self.api_key is not None:
            options["api_key"] = self.api_key
            mode = None  # wandb's default (online), or WANDB_MODE
        else:
            mode = "offline"
            logging.info(
                f"wandb: no API key (runtime.wandb.key_path or WANDB_API_KEY): logging offline under "
                f"{os.path.join(log_dir, 'wandb')}; upload later with `wandb sync <run folder>`"
            )
        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=settings.name,
            notes=settings.notes,
            tags=list(settings.tags) or None,
            config={**self.run_config, **(settings.metadata or {})},
            dir=log_dir,
            mode=mode,
            settings=wandb.Settings(**options),
        )
        logging.info(f"wandb: run {run.name} ({mode or 'online'}) in {run.dir}")
        return run


@contextlib.contextmanager
def wandb_logging(settings: Optional[WandbConfig], job_config: BaseConfig, save_dir: str) -> Iterator[None]:
    """While active, every SummaryLogger scalar (written by rank 0 only) also goes to a wandb run.
    A no-op when `settings` is None. The package and the key file are checked on entry, on every
    rank, so a missing one stops all ranks alike before any work."""
    if settings is None:
        yield
        return
    import_wandb()
    from tml.core.summary import add_scalar_sink, remove_scalar_sink

    sink = WandbSink(settings, job_config.model_dump(mode="json"), save_dir)
    add_scalar_sink(sink)
    try:
        yield
    finally:
        remove_scalar_sink(sink)
        sink.finish()
