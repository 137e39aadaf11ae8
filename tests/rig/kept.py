"""What tether kept under a replica or target root, read the way `tether versions` reads it, so a
test asserts what was kept, not where the layout puts it."""

from __future__ import annotations

import os
from pathlib import Path

from tether.versions import scan_local


def kept(root: Path, path: str | None = None, origin: str | None = None) -> list[Path]:
    """The stored copies of every version kept under root (of `path`, for `origin`), oldest first."""
    want = None if path is None else os.fsencode(path)
    return [
        root / os.fsdecode(v.stored)
        for v in scan_local(str(root))
        if (want is None or v.path == want) and (origin is None or v.origin == origin)
    ]


def kept_bytes(root: Path, path: str | None = None, origin: str | None = None) -> list[bytes]:
    return [p.read_bytes() for p in kept(root, path, origin)]


__all__ = ["kept", "kept_bytes"]
