"""The locations commands' arguments, apart from their (heavier) implementation, so that
every other tether command starts without importing it."""

from __future__ import annotations

import argparse

from tether.cli.common import add_quiet_options

ACTIONS = {
    "backup": "copy PATHs from the WORKING to every accessible BACKUP (never deletes there)",
    "work": "copy PATHs from a BACKUP into a WORKING",
    "transfer": "copy PATHs from one BACKUP to another",
    "tree": "create in the WORKING the folder skeleton (no files) of a BACKUP",
}


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, text in ACTIONS.items():
        p = sub.add_parser(name, help=text, description=text + ". See `tether locations` for the sets.")
        p.add_argument("paths", metavar="PATH", nargs="+", help="file or folder inside a location")
        p.add_argument("-m", dest="overwrite", action="store_true", help="overwrite modified files without asking")
        p.add_argument("-d", dest="delete", action="store_true", help="delete what the source lacks, asking first")
        p.add_argument("-D", dest="delete_now", action="store_true", help="delete what the source lacks, no question")
        p.add_argument("-s", dest="hide_dirs", action="store_true", help="do not list changes to folders")
        p.add_argument("-v", dest="verbose", action="store_true", help="show the rsync commands and ask first")
        p.add_argument("-n", "--dry-run", action="store_true", help="list what would change; change nothing")
        p.add_argument("-y", "--yes", action="store_true", help="answer yes to every yes/no question")
        p.add_argument("--from", dest="from_", action="append", default=[], metavar="LOCATION", help="source")
        p.add_argument("--to", action="append", default=[], metavar="LOCATION", help="destination")
        add_quiet_options(p)
        p.add_argument("--json", action="store_true", help="the plans and what was done, as JSON; asks nothing")
    p = sub.add_parser("locations", help="list the location sets, which are accessible now and their free space")
    p.add_argument("--json", action="store_true")
