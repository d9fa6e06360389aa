"""Output folders of data generators: never mix a new data set with an old one, never delete what
tml did not write.

A generator claims its folder before writing: `claim_output_dir` looks at the folder, then records
the names of the files about to be written in a manifest (`.tml-generated.json`), so even an
interrupted run's files are known as the generator's own. What it finds in the folder decides:

- empty or absent: fine;
- only files of the manifest (an earlier run of a generator): refused unless `replace=True`, and
  then exactly those files are deleted, so a smaller new data set cannot leave old files behind for
  a config's glob to pick up;
- anything else (files the manifest does not list, sub-folders): refused, whatever `replace` says.

The check runs before any file is written, so a refusal changes nothing.
"""
from __future__ import annotations

import json
import posixpath
from typing import Iterable

from tml.common.entry_point import CommandError
from tml.common.filesystem.util import infer_fs

MANIFEST_NAME = ".tml-generated.json"


class OutputDirNotEmpty(CommandError):
    """The output folder holds files that must not be mixed with the new ones (message says what to do)."""


def _base(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def _read_manifest(fs, out_dir: str) -> list[str]:
    path = posixpath.join(out_dir, MANIFEST_NAME)
    if not fs.exists(path):
        return []
    try:
        with fs.open(path, "r") as stream:
            names = json.load(stream).get("files", [])
    except (ValueError, AttributeError):
        return []  # unreadable: nothing counts as ours
    return [name for name in names if isinstance(name, str) and "/" not in name]


def _listing(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def claim_output_dir(
    out_dir: str, file_names: Iterable[str], command: str, replace: bool, replace_flag: str = "--overwrite"
) -> None:
    """Make `out_dir` ready for a generator's new files `file_names` (see the module docstring)."""
    fs = infer_fs(out_dir)
    if not fs.exists(out_dir):
        fs.makedirs(out_dir, exist_ok=True)
    else:
        _remove_earlier_output(fs, out_dir, replace, replace_flag)
    names = sorted({_base(name) for name in file_names})
    with fs.open(posixpath.join(out_dir, MANIFEST_NAME), "w") as stream:
        json.dump({"command": command, "files": names}, stream, indent=1)


def _remove_earlier_output(fs, out_dir: str, replace: bool, replace_flag: str) -> None:
    if not fs.isdir(out_dir):
        raise OutputDirNotEmpty(f"{out_dir} is a file, not a folder; choose a folder for the output")
    present = {_base(entry["name"]): entry["type"] for entry in fs.ls(out_dir, detail=True)}
    present.pop(MANIFEST_NAME, None)
    ours = set(_read_manifest(fs, out_dir))
    foreign = {name for name, kind in present.items() if name not in ours or kind != "file"}
    if foreign:
        raise OutputDirNotEmpty(
            f"{out_dir} holds {len(foreign)} entries that tml did not generate there ({_listing(foreign)}); "
            "new files next to them would be read together with them. Choose an empty folder, or move them away."
        )
    earlier = [name for name in present if name in ours]
    if earlier and not replace:
        raise OutputDirNotEmpty(
            f"{out_dir} already holds {len(earlier)} generated files ({_listing(earlier)}); pass {replace_flag} "
            "to replace them (only those files are deleted), or choose another folder."
        )
    for name in earlier:
        fs.rm(posixpath.join(out_dir, name))
    if fs.exists(posixpath.join(out_dir, MANIFEST_NAME)):
        fs.rm(posixpath.join(out_dir, MANIFEST_NAME))
