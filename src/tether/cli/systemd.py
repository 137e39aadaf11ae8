"""`tether service install|uninstall NAME [--user|--system]`: a job as a systemd service.

The unit runs `tether run NAME` in the foreground (systemd keeps it, restarts it after a failure,
and stops it with SIGTERM, which lets the transfer in flight end); its environment carries where
tether found the job (TETHER_HOME or the XDG folders), so the service reads the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tether.dirs import Dirs
from tether.errors import EXIT_OK, UsageError
from tether.output import shown

PASSED_ENV = ("TETHER_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")


def add_parser(sub: Any) -> None:
    s = sub.add_parser("service", help="install or remove a job as a systemd service")
    ss = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("install", "write the job's unit and say how to enable it"),
                         ("uninstall", "remove the job's unit (stop and disable it first)")):  # fmt: skip
        a = ss.add_parser(action, help=text)
        a.add_argument("name")
        where = a.add_mutually_exclusive_group()
        where.add_argument(
            "--user", action="store_true", help="a unit of your user's systemd (the default unless root)"
        )
        where.add_argument("--system", action="store_true", help="a unit of the system's systemd (the default as root)")
        if action == "install":
            a.add_argument("--print", action="store_true", help="print the unit instead of writing it")
        a.add_argument("--json", action="store_true", help="what was done, as JSON")


def _quote(arg: str) -> str:
    """One argument as systemd's ExecStart reads it: double-quoted, with \\, " and the
    specifier and variable signs (%, $) escaped."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def program() -> list[str]:
    """How this tether is started: the venv's console script beside this python, else `python -m tether`."""
    script = Path(sys.executable).parent / "tether"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tether"]


def unit_text(name: str, system: bool, env: dict[str, str]) -> str:
    lines = [
        "[Unit]",
        f"Description=tether job {name}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_quote(a) for a in [*program(), "run", name]),
        *(f"Environment={_quote(f'{k}={env[k]}')}" for k in PASSED_ENV if env.get(k)),
        "Restart=on-failure",
        "RestartSec=10",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=90",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
        "",
    ]
    return "\n".join(lines)


def unit_dir(system: bool, env: dict[str, str]) -> Path:
    if system:
        return Path("/etc/systemd/system")
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"


def cmd_service(args: argparse.Namespace, dirs: Dirs) -> int:
    from tether.jobs import load_named

    system = args.system or (not args.user and os.geteuid() == 0)
    env = dict(os.environ)
    unit = f"tether-{args.name}.service"
    path = unit_dir(system, env) / unit
    ctl = "systemctl" if system else "systemctl --user"
    if args.action == "uninstall":
        if not path.exists():
            raise UsageError(f"no unit {path} to remove", f"see `{ctl} list-unit-files 'tether-*'`")
        path.unlink()
        if args.json:
            print(json.dumps({"unit": unit, "path": str(path), "removed": True, "then": f"{ctl} daemon-reload"}))
        else:
            print(f"removed {shown(str(path))}; then: {ctl} daemon-reload")
        return EXIT_OK
    load_named(dirs, args.name)  # a job that does not load is refused here, with its file:line
    text = unit_text(args.name, system, env)
    if args.print:
        print(json.dumps({"unit": unit, "text": text}) if args.json else text, end="\n" if args.json else "")
        return EXIT_OK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        hint = "run as root, or install with --user" if system else "check the folder's permissions"
        raise UsageError(f"cannot write {path}: {e.strerror}", hint) from None
    enable = f"{ctl} daemon-reload && {ctl} enable --now {unit}"
    if args.json:
        print(json.dumps({"unit": unit, "path": str(path), "written": True, "then": enable, "system": system}))
        return EXIT_OK
    print(f"wrote {shown(str(path))}")
    print(f"enable and start it: {enable}")
    if not system:
        print("to keep it running after you log out: loginctl enable-linger $USER")
    return EXIT_OK


__all__ = ["add_parser", "cmd_service", "unit_text"]
