"""A non-editable install ships only the packages setuptools finds: every directory of Python
modules must be a package (have an __init__.py), or its modules are silently left out."""
import os

import tml

NOT_SHIPPED = {"tests", "bench", "images", "build", "dist"}


def test_every_module_directory_is_a_package():
    root = os.path.dirname(tml.__file__)
    missing = []
    for folder, subfolders, files in os.walk(root):
        relative = os.path.relpath(folder, root)
        subfolders[:] = [
            name for name in subfolders
            if not name.startswith((".", "_")) and not (relative == "." and name in NOT_SHIPPED)
            and not name.endswith(".egg-info")
        ]
        if relative != "." and any(name.endswith(".py") for name in files) and "__init__.py" not in files:
            missing.append(relative)
    assert missing == []
