"""Batches that torchrec's train pipelines can move between devices and streams.

A batch is a dataclass of tensors (and torchrec jagged tensors). torchrec's pipelines need
`to(device, non_blocking)`, `record_stream(stream)` and `pin_memory()`; tml's loops need
`batch_size` and `as_dict()`. Subclasses only declare fields.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Optional

import pyarrow as pa
import torch
from torchrec.streamable import Pipelineable


def _move(value: Any, device: torch.device, non_blocking: bool) -> Any:
    return value.to(device=device, non_blocking=non_blocking) if value is not None else None


def _device(value: Any) -> Optional[torch.device]:
    """The device of a tensor (`.device`) or a torchrec jagged tensor (`.device()`)."""
    device = getattr(value, "device", None)
    if callable(device):
        device = device()
    return device if isinstance(device, torch.device) else None


def _device_type(value: Any) -> Optional[str]:
    device = _device(value)
    return device.type if device is not None else None


def _pinning_possible() -> bool:
    """Pinned host memory needs an accelerator; torch raises on CPU-only machines when asked for it."""
    return torch.cuda.is_available()


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}:{str(value.dtype).replace('torch.', '')}"
    length_per_key = getattr(value, "length_per_key", None)
    if callable(length_per_key):
        return f"{type(value).__name__}(keys={value.keys()}, length_per_key={length_per_key()})"
    return type(value).__name__


class BatchBase(Pipelineable, abc.ABC):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # `@dataclass` writes a __repr__ printing every tensor in full unless the class already has
        # one in its own namespace, so each subclass pins the inherited (short) one before it is
        # decorated.
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = cls.__repr__

    @abc.abstractmethod
    def as_dict(self) -> dict[str, Any]:
        """Field name -> value, in declaration order."""

    def _replace(self, values: dict[str, Any]) -> "BatchBase":
        return type(self)(**values)

    def to(self, device: torch.device, non_blocking: bool = False) -> "BatchBase":
        """The batch on `device`; itself when it is there already (as `Tensor.to` does), which
        spares a CPU training step rebuilding every jagged tensor."""
        target = torch.device(device)
        values = self.as_dict()
        if all(v is None or _device(v) == target for v in values.values()):
            return self
        return self._replace({k: _move(v, device, non_blocking) for k, v in values.items()})

    def record_stream(self, stream: torch.Stream) -> None:
        """Tell the caching allocator that `stream` uses this batch's device memory.

        Host tensors are skipped: streams only order accelerator work, and torch has no
        `record_stream` for CPU tensors (it raises NotImplementedError).
        """
        for value in self.as_dict().values():
            if value is not None and _device_type(value) not in (None, "cpu"):
                value.record_stream(stream)

    def pin_memory(self) -> "BatchBase":
        """A copy in page-locked memory for fast, asynchronous copies to the accelerator.

        Without an accelerator pinning is pointless and torch raises, so the batch itself is
        returned, as torch's DataLoader does when asked to pin on a CPU-only machine.
        """
        if not _pinning_possible():
            return self
        return self._replace({k: (v.pin_memory() if v is not None else None) for k, v in self.as_dict().items()})

    @property
    def batch_size(self) -> int:
        """Rows in the batch: dim 0 of the first dense tensor, else the stride of a jagged one."""
        for value in self.as_dict().values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
        for value in self.as_dict().values():
            stride = getattr(value, "stride", None)
            if callable(stride):
                return int(stride())
        raise ValueError(f"{type(self).__name__} has no tensor to take a batch size from")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={_describe(value)}" for name, value in self.as_dict().items())
        return f"{type(self).__name__}({fields})"


@dataclasses.dataclass
class DataclassBatch(BatchBase):
    """Subclass with `@dataclasses.dataclass` and tensor fields, or build one with `from_schema`."""

    @classmethod
    def feature_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.feature_names()}

    def _replace(self, values: dict[str, Any]) -> "DataclassBatch":
        return dataclasses.replace(self, **values)

    @staticmethod
    def from_fields(name: str, fields: dict[str, Any]) -> type["DataclassBatch"]:
        """A new batch class named `name` with the given `{field: type}`; every field defaults to None."""
        spec = [(field, Optional[kind], dataclasses.field(default=None)) for field, kind in fields.items()]
        return dataclasses.make_dataclass(cls_name=name, fields=spec, bases=(DataclassBatch,))

    @staticmethod
    def from_schema(name: str, schema: pa.Schema) -> type["DataclassBatch"]:
        """A batch class with one tensor field per column of a pyarrow schema."""
        return DataclassBatch.from_fields(name, {column: torch.Tensor for column in schema.names})


class DictionaryBatch(BatchBase, dict):
    """A batch whose fields are dict keys, for data whose columns are only known at run time."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self)

    def _replace(self, values: dict[str, Any]) -> "DictionaryBatch":
        return DictionaryBatch(values)
