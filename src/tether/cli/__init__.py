"""The `tether` command line, one module per command family (see cli/main.py for the map)."""

from tether.cli.main import entry, main

__all__ = ["entry", "main"]
