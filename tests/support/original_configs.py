"""The original's config files: `../shared/original/` beside the repository (never copied into it)."""
from pathlib import Path

import pytest

ORIGINAL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "original"


def original_file(name: str) -> Path:
    """Path of one original file; the test is skipped, saying why, when shared/ is not beside the repo."""
    path = ORIGINAL_DIR / name
    if not path.exists():
        pytest.skip(f"{path} not found: the original configs live in shared/ beside the repository")
    return path
