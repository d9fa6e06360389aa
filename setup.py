"""Maps the repository root onto the import name `tml`.

pyproject.toml carries the metadata; this file only exists because the package list must be
computed: the root directory *is* the package, so every sub-package is `tml.<dir>`.
"""
from setuptools import find_packages, setup

_EXCLUDED = ["tests", "tests.*", "bench", "bench.*", "images", "images.*", "build", "build.*"]
_SUBPACKAGES = find_packages(where=".", exclude=_EXCLUDED)

setup(
    package_dir={"tml": "."},
    packages=["tml"] + [f"tml.{name}" for name in _SUBPACKAGES],
    package_data={"tml": ["projects/**/*.yaml", "projects/**/*.json", "projects/**/*.sh", "projects/**/*.md"]},
    include_package_data=False,
)
