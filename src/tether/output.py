"""Printing results for people and, with --json, for scripts."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.mirror import TargetOutcome


def shown(text: str) -> str:
    """A path for display and JSON: undecodable bytes become \\xNN, never an error."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def outcome_dict(o: TargetOutcome, dry_run: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "target": shown(o.target),
        "ok": o.ok,
        "files": o.files,
        "deleted": o.deleted,
        "bytes": o.bytes,
        "seconds": round(o.seconds, 3),
        "errors": [shown(e) for e in o.errors],
    }
    if o.hint:
        d["hint"] = o.hint
    if o.refused:
        d["refused"] = True
    if dry_run:
        d["changes"] = [shown(c) for c in o.changes]
    return d


def print_outcomes(
    source: str, outcomes: Sequence[TargetOutcome], *, dry_run: bool, as_json: bool, quiet: bool = False
) -> None:
    """Each target's result; `quiet` (cron) keeps only the failures, on stderr as always."""
    if as_json:
        import json

        doc = {
            "source": shown(source),
            "dry_run": dry_run,
            "ok": all(o.ok for o in outcomes),
            "targets": [outcome_dict(o, dry_run) for o in outcomes],
        }
        print(json.dumps(doc, indent=2))
        return
    for o in outcomes:
        if quiet and o.ok:
            continue
        if dry_run and o.ok:
            copies = sum(1 for c in o.changes if not c.startswith("*deleting"))
            deletes = len(o.changes) - copies
            print(f"{shown(o.target)} (dry run, nothing changed): {copies} to update, {deletes} to delete")
            for c in o.changes:
                print(f"  {shown(c)}")
            continue
        if o.ok:
            print(
                f"ok    {shown(o.target)}: {o.files} files updated ({human_bytes(o.bytes)}), "
                f"{o.deleted} deleted, {o.seconds:.2f} s"
            )
        else:
            print(
                f"FAIL  {shown(o.target)}: {shown(o.errors[0]) if o.errors else 'failed'}",
                file=sys.stderr,
            )
            for e in o.errors[1:]:
                print(f"      {shown(e)}", file=sys.stderr)
            if o.hint:
                print(f"      hint: {o.hint}", file=sys.stderr)
