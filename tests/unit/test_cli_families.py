"""The command table in cli/main.py says which family adds each command, so that a command line
builds and imports only its own family's parser: held here to what each family's parser adds."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from tether.cli.common import Parser
from tether.cli.main import COMMANDS, FAMILIES, OWN, build_parser


def commands_of(p: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_each_family_adds_exactly_the_commands_the_table_gives_it() -> None:
    for module, adds, commands, handler in FAMILIES:
        p = Parser(prog="tether")
        sub = p.add_subparsers(dest="command", parser_class=Parser)
        getattr(importlib.import_module(module), adds)(sub)
        assert sorted(sub.choices) == sorted(commands), module
        for command in commands:  # each is run by its family's handle, or by its own handler
            assert (handler is not None and hasattr(importlib.import_module(handler), "handle")) or command in COMMANDS


def test_a_command_line_builds_its_own_family_and_no_other() -> None:
    for _module, _adds, commands, _handler in FAMILIES:
        for command in commands:
            assert commands_of(build_parser(command)) == {*OWN, *commands}, command


def test_the_help_and_a_typo_see_every_command() -> None:
    every = {*OWN, *(c for f in FAMILIES for c in f.commands)}
    for command in (None, "bisnyc", "--help"):
        assert commands_of(build_parser(command)) == every, command
    said = subprocess.run([sys.executable, "-m", "tether", "bisnyc"], capture_output=True, text=True)
    assert said.returncode == 2 and "bisync" in said.stderr, said.stderr


def test_a_bisync_command_line_loads_no_other_family() -> None:
    code = "import sys; from tether.cli.main import build_parser; build_parser('bisync'); print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for module in ("tether.cli.service", "tether.locations.parsers", "tether.cli.pools", "tether.cli.doctor"):
        assert f"'{module}'" not in loaded, module
