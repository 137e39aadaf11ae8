"""Run `tether ARGS` with timestamps at its phase boundaries, for bench.bisync_phases.

Run as a script (`python bench/phases_hook.py bisync A B`), so no runpy import is added to the
start-up being measured.  TETHER_T0 is the launch time (time.time() in the parent just before
it started this process); marks are written as JSON lines to TETHER_PHASES_OUT, in ms since
then.  It wraps functions by name and skips any that do not exist, so it keeps working while
the engine changes; only the timestamps are added, nothing else changes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

T0 = float(os.environ.get("TETHER_T0") or time.time())
OUT = os.environ.get("TETHER_PHASES_OUT")
_marks: list[tuple[float, str, str]] = []


def mark(what: str) -> None:
    _marks.append(((time.time() - T0) * 1000, threading.current_thread().name, what))


mark("python up")
if sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # the bench dir is not part of tether's import path
import tether.cli  # noqa: E402

mark("tether.cli imported")


def _wrap(obj: object, name: str, label: str) -> None:
    """Marks "> label" and "< label" around obj.name, when it exists."""
    fn = getattr(obj, name, None)
    if fn is None:
        return

    def wrapped(*a: object, **k: object) -> object:
        mark(f"> {label}")
        try:
            return fn(*a, **k)
        finally:
            mark(f"< {label}")

    setattr(obj, name, wrapped)


HOOKS: dict[str, list[tuple[str | None, str, str]]] = {
    "tether.transport.agent": [
        (None, "_payload", "agent program packed"),
        ("_SshAgent", "spawn", "ssh spawn + agent sent"),
        ("_SshAgent", "_hello", "hello (far side start-up)"),
        ("_SshAgent", "_handshake", "hello (far side start-up)"),  # before prestart: agent sent + hello
        ("_SshAgent", "start", "agent connect"),
        ("_SshAgent", "close", "agent close"),
        ("_SshAgent", "close_soon", "agent close"),
    ],
    "tether.bisync.state": [
        ("State", "__init__", "state open"),
        ("State", "load", "state load"),
        ("State", "put", "state write"),
        ("State", "close", "state close"),
    ],
    "tether.bisync.replica": [
        ("Replica", "_connect", "agent connect (+ early lock and scan)"),
        ("Replica", "lock", "lock round trip"),
        ("Replica", "unlock", "unlock"),
    ],
    "tether.bisync.engine": [
        ("Pass", "_scan_both", "lock + scan both sides"),
        ("Pass", "_execute", "actions"),
        (None, "reconcile", "plan"),
    ],
    "tether.bisync.runner": [(None, "one_pass", "one pass")],
    "tether.cli.bisync": [(None, "run_once", "run")],
}


def _patch(name: str, module: object) -> None:
    for owner, attr, label in HOOKS.get(name, []):
        _wrap(module if owner is None else getattr(module, owner, None), attr, label)
    if name == "tether.bisync.replica":
        forked = module.forked  # type: ignore[attr-defined]

        def timed_fork(fn):
            wait = forked(fn)

            def timed_wait():
                mark("> local scan (wait)")
                try:
                    return wait()
                finally:
                    mark("< local scan (wait)")

            return timed_wait

        module.forked = timed_fork  # type: ignore[attr-defined]


class _AfterImport:
    """A meta path finder that patches the modules above as they finish importing, so that
    the hook changes no import order (the prestart must stay where it is)."""

    def find_spec(self, name: str, path: object, target: object = None) -> object:
        if name not in HOOKS:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: object) -> None:
            run(module)  # type: ignore[arg-type]
            _patch(name, module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _AfterImport())  # type: ignore[arg-type]
for _name, _mod in list(sys.modules.items()):  # already imported with tether.cli
    if _name in HOOKS:
        _patch(_name, _mod)
code = tether.cli.main(sys.argv[1:])
mark("exit")
if OUT:
    with open(OUT, "a") as f:
        f.write(json.dumps(_marks) + "\n")
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
