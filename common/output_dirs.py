"""Where tml writes when nobody says otherwise: one base folder for every command's default output.

Data the generators and prepare scripts make, and the runs of the repository's configs, all go under
`$TML_OUTPUT` (default `~/tmp/tml`): one place to look, one variable to move it, and nothing in a
`/tmp` folder that other users of the machine share. Configs use it as `${TML_OUTPUT}/...`; it is
expanded like any environment variable, with this default when the environment does not set it.
"""
from __future__ import annotations

import os

OUTPUT_ROOT_VARIABLE = "TML_OUTPUT"


def output_root() -> str:
    """`$TML_OUTPUT`, or `~/tmp/tml` when it is unset or empty."""
    configured = os.environ.get(OUTPUT_ROOT_VARIABLE, "").strip()
    if configured:
        return os.path.expanduser(configured)
    return os.path.join(os.path.expanduser("~"), "tmp", "tml")


def default_output_dir(*parts: str) -> str:
    """A folder under `output_root()`, e.g. `default_output_dir("twhin", "nations")`."""
    return os.path.join(output_root(), *parts)
