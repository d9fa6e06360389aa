"""Read back what an offline wandb run recorded (its `run-*.wandb` transaction log).

The log is a sequence of 32 KiB blocks of records (LevelDB's log format: 4-byte checksum, 2-byte
length, 1-byte type; FULL or FIRST/MIDDLE/LAST fragments) after a 7-byte header; each record is a
wandb `Record` protobuf. Only what the tests compare is decoded: the run's config and its history.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes) -> list[bytes]:
    records, pending, position = [], b"", _HEADER
    while position + _HEADER <= len(data):
        left_in_block = _BLOCK - position % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            position += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + _HEADER])
        position += _HEADER
        if kind == 0 and length == 0:
            position += _BLOCK - position % _BLOCK if position % _BLOCK else 0
            continue
        pending += data[position : position + length]
        position += length
        if kind in (_FULL, _LAST):
            records.append(pending)
            pending = b""
    return records


def read_offline_run(run_folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, history rows) of the one offline run in `run_folder`."""
    from wandb.proto import wandb_internal_pb2

    (log_file,) = run_folder.glob("run-*.wandb")
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for raw in _records(log_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return config, history
