"""The original repository's config files, which tests load to check compatibility (never copied
into this repository). They are looked for in $TML_ORIGINAL_CONFIGS, else in `shared/original/`
beside the checkout (where the maintainers keep them); without them those tests are skipped."""
import os
from pathlib import Path

import pytest

ORIGINAL_DIR = Path(
    os.environ.get("TML_ORIGINAL_CONFIGS") or Path(__file__).resolve().parents[2].parent / "shared" / "original"
)


def original_file(name: str) -> Path:
    """Path of one original file; the test is skipped, saying why, when it is not on this machine."""
    path = ORIGINAL_DIR / name
    if not path.exists():
        pytest.skip(
            f"the original repository's {name} is not on this machine (a compatibility check; point "
            "TML_ORIGINAL_CONFIGS at the original's config folder to run it)"
        )
    return path
