"""What every command family shares: the argument parser's ways, filters given in order,
logging, and the life of a running job (signals, status board, the end it reports)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import TetherError, UsageError
from tether.output import shown

if TYPE_CHECKING:  # logging is imported by the commands that log: a one-shot pass starts without it
    import logging

    from tether.jobs import Job
    from tether.service.status import StatusBoard


def number(low: float, high: float, *, whole: bool = False, above: bool = False) -> Callable[[str], float]:
    """An argparse type for a number flag: finite, within [low, high] (`above`: more than low),
    else the flag's error says the range (argparse names the flag and exits 2)."""

    def parse(text: str) -> float:
        try:
            v = int(text) if whole else float(text)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or v > high or v < low or (above and v == low):
            kind = "a whole number" if whole else "a number"
            span = f"more than {low:g}" if above else f"from {low:g}"
            raise argparse.ArgumentTypeError(f"must be {kind} {span} to {high:g}, not {text!r}")
        return v

    return parse


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


class FilterAction(argparse.Action):
    """Keeps --exclude and --include in the order given: the last matching rule decides."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        ns: argparse.Namespace,
        values: object,
        opt: object = None,
    ) -> None:
        rules = list(getattr(ns, "rules", None) or [])
        rules.append((self.dest == "include", str(values)))
        ns.rules = rules


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", "-n", action="store_true", help="print what would change; change nothing")
    p.add_argument("--force", action="store_true", help="allow deleting in a target tether never wrote")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("-v", "--verbose", action="store_true", help="show each rsync command")
    add_quiet_options(p)


def add_quiet_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (for cron)")
    p.add_argument("--summary", action="store_true", help="one paragraph of what the run did, and errors")


def check_quiet_options(args: argparse.Namespace) -> None:
    """--summary is --quiet plus its paragraph; a dry run and --json print other things."""
    if args.summary:
        if getattr(args, "json", False):
            raise UsageError("--summary and --json both say what the run did", "give one of them")
        if args.dry_run:
            raise UsageError("--summary tells what a run did, and a dry run does nothing", "drop one of them")
        args.quiet = True
    if args.quiet and getattr(args, "verbose", False):
        raise UsageError("--quiet and -v ask for opposite things", "give one of them")


def setup_logging() -> None:
    """Plain lines on stderr; nothing when the command set up its log first (service/joblog.py)."""
    import logging

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )


@contextmanager
def running(
    board: StatusBoard, stop: Callable[[], None], in_flight: str, asked: Callable[[], None] | None = None
) -> Iterator[logging.Logger]:
    """A job running until SIGTERM/SIGINT, for every kind: logging set up, a signal asks `stop`
    to end after the `in_flight` work, and the board says stopping, failed or stopped. `asked`
    is called (in the signal handler: it must only set a flag or wake) when `tether wait` asks."""
    import logging
    import signal

    setup_logging()
    log = logging.getLogger("tether")

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping (%s): finishing the %s in flight", signal.Signals(signum).name, in_flight)
        board.update(state="stopping", force=True)
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if asked is not None:
        from tether.service.wait import SIGNAL

        signal.signal(SIGNAL, lambda _signum, _frame: asked())
    try:
        yield log
    except TetherError as e:
        board.update(state="failed", message=str(e), force=True)
        raise
    board.update(state="stopped", force=True)
    log.info("stopped")


def describe(job: Job) -> dict[str, Any]:
    """A job in a few words: kind, where from and where to (for `check` and `jobs`)."""
    from tether.config import MirrorJob

    if isinstance(job, MirrorJob):
        targets = [shown(str(t)) for t in job.spec.targets]
        return {"kind": "mirror", "source": shown(job.spec.source.path), "targets": targets}
    return {"kind": "bisync", "source": shown(str(job.path1)), "targets": [shown(str(job.path2))]}


def check_job(file: Path, name: str) -> str:
    """Validate one job file as `tether check` does; what it syncs, in a few words."""
    from tether.jobs import load_job

    d = describe(load_job(file, name))
    arrow = "<->" if d["kind"] == "bisync" else "->"
    return f"{d['kind']} {d['source']} {arrow} {', '.join(d['targets'])}"
