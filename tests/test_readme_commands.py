"""The READMES' code stays runnable as pasted: every `tml` name a Python example imports exists, and
every `python -m tml...` command names a module that exists and flags its parser accepts.

Cheap guards for what a fresh-clone walkthrough found broken (an example importing a function that
had been renamed); running the commands themselves is the walkthrough's job and the end-to-end tests'.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
READMES = ["README.md", "projects/home/recap/README.md", "projects/twhin/README.md"]
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]*-m tml\.[^`\n]*)`")
MODULE = re.compile(r"-m (tml(?:\.[A-Za-z_]\w*)+)(?:\s|$)")  # not prose such as `python -m tml...`
LAUNCHERS = ("tml.common.launch",)  # take torchrun's arguments, then `-m <command> ...`


def _blocks(language: str) -> list[tuple[str, str]]:
    return [
        (readme, match.group(2))
        for readme in READMES
        for match in FENCED.finditer((ROOT / readme).read_text())
        if match.group(1) == language
    ]


def _commands() -> list[tuple[str, str]]:
    """(readme, command line) for every `-m tml.` command: fenced shell lines (continuations joined,
    comments dropped) and inline code spans."""
    found = []
    for readme, block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if MODULE.search(line) and not line.startswith("#"):
                found.append((readme, line))
    for readme in READMES:
        found += [(readme, span) for span in INLINE.findall((ROOT / readme).read_text()) if MODULE.search(span)]
    return found


def _module_and_arguments(command: str) -> tuple[str, list[str]]:
    tokens = shlex.split(command.replace("$(", "(").replace("'", '"'), posix=True)
    module_index = tokens.index("-m") + 1
    while tokens[module_index] in LAUNCHERS and "-m" in tokens[module_index:]:  # else the launcher alone
        module_index = tokens.index("-m", module_index) + 1
    return tokens[module_index], tokens[module_index + 1 :]


def _options(parser) -> set[str]:
    import argparse

    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _options(sub)
    return options


@pytest.mark.parametrize(("readme", "source"), _blocks("python"), ids=lambda value: str(value)[:40])
def test_python_examples_import_names_that_exist(readme, source):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tml."):
            module = importlib.import_module(node.module)
            missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
            assert not missing, f"{readme}: `from {node.module} import {', '.join(missing)}` fails"


@pytest.mark.parametrize(("readme", "command"), _commands(), ids=lambda value: str(value)[:60])
def test_commands_name_existing_modules_and_flags(readme, command):
    module_name, arguments = _module_and_arguments(command)
    assert importlib.util.find_spec(module_name) is not None, f"{readme}: no module {module_name}"
    module = importlib.import_module(module_name)
    if not hasattr(module, "build_parser"):
        pytest.skip(f"{module_name} has no build_parser (torchrun's launcher, or not on the command skeleton yet)")
    options = _options(module.build_parser())
    flags = {token.lstrip("[").split("=", 1)[0].rstrip("]") for token in arguments if token.lstrip("[").startswith("--")}
    assert flags <= options, f"{readme}: {module_name} does not take {sorted(flags - options)}"
