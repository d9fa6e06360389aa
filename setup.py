"""Maps the repository root onto the import name `tml`.

pyproject.toml carries the metadata; this file only exists because the package list must be
computed: the root directory *is* the package, so every sub-package is `tml.<dir>`.
"""
import os
import tempfile

from setuptools import find_packages, setup

_EXCLUDED = ["tests", "tests.*", "bench", "bench.*", "images", "images.*", "build", "build.*"]
_SUBPACKAGES = find_packages(where=".", exclude=_EXCLUDED)

# setuptools' scratch folders (build/, tml.egg-info/) go to a temporary folder, not into the checkout.
_SCRATCH = tempfile.mkdtemp(prefix="tml-build-")

setup(
    options={"build": {"build_base": os.path.join(_SCRATCH, "build")}, "egg_info": {"egg_base": _SCRATCH}},
    package_dir={"tml": "."},
    packages=["tml"] + [f"tml.{name}" for name in _SUBPACKAGES],
    package_data={"tml": ["projects/**/*.yaml", "projects/**/*.json", "projects/**/*.sh", "projects/**/*.md"]},
    include_package_data=False,
)
