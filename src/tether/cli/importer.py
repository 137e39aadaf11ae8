"""`tether import-config FILE`: another tool's config -> tether job files (or locations.toml).

Each written file is validated as `tether check` validates it before it takes its name, so an
import either leaves files that run or leaves nothing; an existing job is replaced only with
--force. What has no equivalent is listed with why and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from tether.dirs import Dirs
from tether.errors import EXIT_ERRORS, EXIT_OK, ConfigError, UsageError
from tether.output import shown


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import-config",
        help="turn a MiMi, osync, micsync, inosync or unison config into tether jobs",
        description="Read another sync tool's config (recognised by its content) and write the "
        "equivalent tether job(s), or locations.toml for micsync. Settings with no equivalent are "
        "listed and make the exit code 1.",
    )
    p.add_argument("file", metavar="FILE", type=Path, help="the other tool's config file")
    p.add_argument("--name", help="job name (default: the file's name up to its first dot)")
    p.add_argument("-n", "--dry-run", action="store_true", help="print the result; write nothing")
    p.add_argument("--force", action="store_true", help="replace an existing job (or locations.toml)")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")


def default_name(path: Path) -> str:
    """`devops.conf` -> devops (MiMi's job is its file's name too), `.unison/x.prf` -> x."""
    stem = path.name.lstrip(".").split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip("-_.")[:64] or "imported"


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{file} does not exist", "give the path of the config file to import") from None
    except UnicodeDecodeError:
        raise UsageError(f"{file} is not UTF-8 text", "give the config file itself") from None
    except OSError as e:
        raise UsageError(f"cannot read {file}: {e.strerror}") from None


def _validate(outputs: dict[Path, str], jobs: dict[Path, str]) -> dict[Path, str]:
    """Each output checked under its own file name in a scratch dir; {final path: what it does}."""
    from tether.cli.common import check_job
    from tether.locations.config import parse as parse_locations

    seen: dict[Path, str] = {}
    import tempfile  # not for every command's start

    with tempfile.TemporaryDirectory(prefix="tether-import-") as tmp:
        for final, text in outputs.items():
            scratch = Path(tmp) / final.name
            scratch.write_text(text, encoding="utf-8")
            try:
                if final in jobs:
                    seen[final] = check_job(scratch, jobs[final])
                else:
                    sets = parse_locations(scratch, text).sets
                    seen[final] = "location sets " + ", ".join(s.name for s in sets)
            except UsageError as e:
                raise ConfigError(
                    "as imported, " + e.message.replace(str(scratch), str(final)),
                    (e.hint + "; " if e.hint else "") + "nothing was written",
                ) from None
            scratch.unlink()
    return seen


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a temporary name in the same directory, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.import-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_import(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.importers import DISPLAY, detect
    from tether.jobs import job_file
    from tether.locations.config import config_file

    source = args.file.absolute()
    text = _read(source)
    fmt = detect(text, source)
    name = args.name or default_name(source)
    job_file(dirs, name)  # a bad --name is refused before anything is read further
    imp = fmt.convert(text, source, name)
    jobs = {job_file(dirs, n): n for n in imp.jobs}
    outputs = {path: imp.jobs[n] for path, n in jobs.items()}
    if imp.locations is not None:
        outputs[config_file(dirs)] = imp.locations
    taken = [p for p in outputs if p.exists()]
    if taken and not args.force:
        what = ", ".join(f"job {jobs[p]!r} ({p})" if p in jobs else str(p) for p in taken)
        raise UsageError(f"{what} exists already; nothing was written", "add --force to replace it")
    summary = _validate(outputs, jobs)
    if not args.dry_run:
        for path, body in outputs.items():
            _write(path, body)
    label = DISPLAY.get(fmt.NAME, fmt.NAME)
    if args.json:
        doc = {
            "file": shown(str(source)),
            "format": fmt.NAME,
            "dry_run": args.dry_run,
            "written": not args.dry_run,
            "outputs": [
                {"file": shown(str(p)), "job": jobs.get(p), "checked": summary[p], "toml": body}
                for p, body in outputs.items()
            ],
            "notes": [{"key": k, "how": how} for k, how in imp.notes],
            "dropped": [{"key": k, "why": why} for k, why in imp.dropped],
        }
        print(json.dumps(doc, indent=2))
    else:
        _print_human(label, source, outputs, summary, imp.notes, imp.dropped, args.dry_run)
        if not args.dry_run and imp.jobs:
            first = next(iter(imp.jobs))
            print(f"next: `tether sync {first}` runs one pass, `tether start {first}` keeps it running")
    if imp.dropped:
        where = "in the JSON" if args.json else "listed above"
        print(f"tether: {len(imp.dropped)} setting(s) have no equivalent in tether ({where})", file=sys.stderr)
        return EXIT_ERRORS
    return EXIT_OK


def _print_human(
    label: str,
    source: Path,
    outputs: dict[Path, str],
    summary: dict[Path, str],
    notes: list[tuple[str, str]],
    dropped: list[tuple[str, str]],
    dry_run: bool,
) -> None:
    print(f"{label} config {shown(str(source))}:")
    for path, body in outputs.items():
        if dry_run:
            print(f"  would write {shown(str(path))} ({summary[path]}):")
            print("".join(f"    {line}\n" for line in body.splitlines()), end="")
        else:
            print(f"  wrote {shown(str(path))} ({summary[path]})")
    width = max((len(k) for k, _ in notes + dropped), default=0)
    if notes:
        print(f"translated ({len(notes)}):")
        for key, how in notes:
            print(f"  {key:<{width}}  {how}")
    if dropped:
        print(f"dropped, no equivalent in tether ({len(dropped)}):")
        for key, why in dropped:
            print(f"  {key:<{width}}  {why}")
