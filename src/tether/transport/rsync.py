"""rsync as the byte mover: argument lists only, output parsed into plain results.

rsync gets every path as a separate argument and, with `--secluded-args`, sends remote
paths to the far side outside of any shell, so names are data, never code.
"""

from __future__ import annotations

import builtins
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tether.procs import run_captured
from tether.ssh import SshOptions, explain_ssh_failure

# rsync exit codes that still mean "the target holds a complete copy of what could be read"
PARTIAL = 23  # some files could not be transferred (unreadable, ...)
VANISHED = 24  # source files vanished during the pass: normal on a live tree
MAX_DELETE_HIT = 25  # --max-delete stopped deletions
STOPPED = 20  # rsync's code for "received SIGINT/SIGTERM": stopped at a job's max_time_hard

_ITEM_PREFIX = "@@ "
# a --bwlimit value: KiB/s, or a number with a K/M/G suffix
RATE_RE = re.compile(r"\d+(\.\d+)?[KMGkmg]?")
_STAT_RE = {
    "total": re.compile(r"^Number of files: ([\d,.]+)", re.M),
    "created": re.compile(r"^Number of created files: ([\d,.]+)", re.M),
    "files": re.compile(r"^Number of regular files transferred: ([\d,.]+)", re.M),
    "deleted": re.compile(r"^Number of deleted files: ([\d,.]+)", re.M),
    "bytes": re.compile(r"^Total transferred file size: ([\d,.]+)", re.M),
    "sent": re.compile(r"^Total bytes sent: ([\d,.]+)", re.M),
}
# --info=skip2 with --ignore-existing (rsync 3.2.4+): "NAME exists (uptodate)", "(attr change)",
# "(file change)", "(type change)"; an older rsync says only "NAME exists"
_SKIP_RE = re.compile(r"^(.*) exists(?: \(([a-z ]+)\))?$")
_DELETES_HELD_RE = re.compile(r"^Deletions stopped due to --max-delete limit \(([\d,.]+) skipped\)", re.M)
_FILE_ERROR_RE = re.compile(r"^rsync: \[(?:sender|receiver|generator)\] (.*)$|^rsync: (.*\(\d+\))$", re.M)
# a sender that could not list part of the source skips every deletion of the pass (its safety:
# what it did not see would be deleted); these say which part, names escaped as \#ooo
_DELETES_SKIPPED = b"IO error encountered -- skipping file deletion"
_UNLISTED_RE = re.compile(
    rb'^rsync: (?:\[sender\] )?(?:opendir "(.*)" failed|readlink_stat\("(.*)"\) failed|link_stat "(.*)" failed'
    rb'|readdir\("(.*)"\)): ',
    re.M,
)
_ESCAPE_RE = re.compile(rb"\\#([0-7]{3})")


_PRESERVE_FLAGS = {"owner": "-o", "group": "-g", "acl": "-A", "xattr": "-X", "hardlinks": "-H"}


def preserve_args(preserve: Collection[str]) -> list[str]:
    """rsync options for a job's `preserve` (modes and mtimes are always kept). With owner or
    group, --super: a receiver that may not chown says so per file (exit 23) instead of
    skipping it silently, as rsync does for an ordinary user."""
    flags = [flag for p, flag in _PRESERVE_FLAGS.items() if p in preserve]
    return [*flags, "--super"] if {"owner", "group"} & set(preserve) else flags


@dataclass
class RsyncResult:
    argv: list[str]
    returncode: int
    seconds: float
    total: int = 0  # entries in the source's file list, the root included
    created: int = 0
    files: int = 0
    deleted: int = 0
    bytes: int = 0
    sent: int = 0
    changes: list[str] = field(default_factory=list)  # itemized lines, e.g. ">f+++++++++ a/b"
    # what --ignore-existing left alone and how it compares with the source's ("uptodate", "attr
    # change", "file change", ...; "" when rsync did not say), as --info=skip2 reports it
    kept: list[tuple[str, str]] = field(default_factory=list)
    # deletions --max-delete held back: exit 25 says so too, unless a vanished file's 24 hides it
    deletes_held: int = 0
    # the pass deleted nothing, as the source could not all be listed; `unlisted`: what not
    # (paths as rsync's sender named them)
    deletes_skipped: bool = False
    unlisted: list[builtins.bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hint: str | None = None
    stopped: bool = False  # ended at its deadline (rsync removes its temporary file on the way out)

    @property
    def ok(self) -> bool:
        return self.returncode in (0, VANISHED) and not self.stopped


def _num(text: str) -> int:
    return int(text.replace(",", "").replace(".", ""))


class RsyncEnd(Protocol):
    """An endpoint as rsync needs it (transport stays below endpoints/: it names no class there)."""

    @property
    def ssh_host(self) -> str | None: ...
    def rsync_arg(self) -> str: ...


@dataclass(frozen=True)
class Rsync:
    ssh: SshOptions
    binary: str = "rsync"

    def base_argv(self, endpoints: Sequence[RsyncEnd]) -> list[str]:
        argv = [self.binary, "--secluded-args"]
        if any(e.ssh_host for e in endpoints):
            argv += ["-e", self.ssh.rsync_rsh()]
        return argv

    def mirror_argv(
        self,
        src: RsyncEnd,
        dst: RsyncEnd,
        *,
        filter_args: Sequence[str] = (),
        delete: bool = True,
        dry_run: bool = False,
        itemize: bool = False,
        bwlimit: str | None = None,
        extra: Sequence[str] = (),
    ) -> list[str]:
        # rsync's quick check compares mtimes in whole seconds by default, so a same-size file
        # rewritten within the second it was copied looks unchanged; -1 adds the nanoseconds
        argv = [*self.base_argv([src, dst]), "-a", "--modify-window=-1", "--stats"]
        if delete:
            argv.append("--delete")
        if dry_run:
            argv.append("--dry-run")
        if itemize or dry_run:
            argv.append(f"--out-format={_ITEM_PREFIX}%i %n%L")
        if bwlimit:
            argv.append(f"--bwlimit={bwlimit}")
        argv += list(filter_args) + list(extra)
        return [*argv, "--", src.rsync_arg(), dst.rsync_arg()]

    def run(
        self,
        argv: list[str],
        host: str | None = None,
        progress: ProgressFn | None = None,
        input: bytes | None = None,
        stop_at: float | None = None,
    ) -> RsyncResult:
        """Run rsync to completion; with `progress`, report (percent, bytes, rate) as it goes;
        `input` feeds its stdin (a NUL-separated file list); at `stop_at` (monotonic time) rsync
        is asked to stop (SIGTERM: it removes its temporary file, what it finished stays)."""
        start = time.monotonic()
        if stop_at is not None and start >= stop_at:
            return RsyncResult(argv, STOPPED, 0.0, stopped=True)
        stopper = _Stopper(stop_at)
        try:
            if progress is None or input is not None:
                returncode, raw_out, raw_err = _run_plain(argv, input, stopper)
            else:
                argv_p = [*argv[:1], "--info=progress2", *argv[1:]]
                returncode, raw_out, raw_err = _run_with_progress(argv_p, progress, stopper)
        except OSError as e:
            return RsyncResult(argv, 127, 0.0, errors=[f"cannot run {argv[0]!r}: {e.strerror}"],
                               hint="install rsync, or set the job's rsync key to its path")  # fmt: skip
        finally:
            stopper.cancel()
        seconds = time.monotonic() - start
        out = raw_out.decode("utf-8", "backslashreplace")
        err = raw_err.decode("utf-8", "backslashreplace")
        res = RsyncResult(argv, returncode, seconds, stopped=stopper.fired)
        if res.stopped:
            return res
        for key, rx in _STAT_RE.items():
            m = rx.search(out)
            if m:
                setattr(res, key, _num(m.group(1)))
        res.changes = [
            ln[len(_ITEM_PREFIX) :]
            for ln in out.splitlines()
            # a directory whose only change is its mtime is a side effect, not news
            if ln.startswith(_ITEM_PREFIX) and not ln.startswith(_ITEM_PREFIX + ".d..t......")
        ]
        for ln in out.splitlines():
            m = None if ln.startswith(_ITEM_PREFIX) else _SKIP_RE.match(ln)
            if m:
                res.kept.append((m.group(1), m.group(2) or ""))
        m = _DELETES_HELD_RE.search(err)
        if m:
            res.deletes_held = _num(m.group(1))
        if _DELETES_SKIPPED in raw_out or _DELETES_SKIPPED in raw_err:  # rsync says it as info, on stdout
            res.deletes_skipped = True
            res.unlisted = [_unescape(next(g for g in m.groups() if g)) for m in _UNLISTED_RE.finditer(raw_err)]
        if returncode == MAX_DELETE_HIT:
            res.errors = [ln for ln in err.splitlines() if "max-delete" in ln][:1]
        elif returncode not in (0, VANISHED):
            res.errors, res.hint = explain_rsync_failure(returncode, err, host)
        return res


def _unescape(name: bytes) -> bytes:
    """A name as rsync printed it, with the bytes it escaped as \\#ooo put back."""
    return _ESCAPE_RE.sub(lambda m: bytes([int(m.group(1), 8)]), name)


def literal_rule(rel: bytes) -> str:
    """An anchored filter pattern matching exactly the path rel (below the transfer's root):
    rsync reads backslashes as escapes only in a pattern holding a wildcard character, so only
    such a pattern gets its wildcards and backslashes escaped."""
    if any(c in rel for c in b"*?["):
        rel = re.sub(rb"([*?[\\])", rb"\\\1", rel)
    return "/" + os.fsdecode(rel)


ProgressFn = Callable[[int, int, str], None]
_PROGRESS_RE = re.compile(rb"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)")


class _Stopper:
    """Sends SIGTERM to a running rsync at a deadline, from a timer thread."""

    def __init__(self, stop_at: float | None) -> None:
        self.stop_at, self.fired = stop_at, False
        self._timer: threading.Timer | None = None

    def watch(self, proc: subprocess.Popen[bytes]) -> None:
        if self.stop_at is None:
            return

        def stop() -> None:
            if proc.poll() is None:
                self.fired = True
                proc.terminate()

        self._timer = threading.Timer(max(0.0, self.stop_at - time.monotonic()), stop)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _run_plain(argv: list[str], input: bytes | None, stopper: _Stopper) -> tuple[int, bytes, bytes]:
    proc = run_captured(argv, input=input, started=stopper.watch)  # no pipes: see tether.procs
    return proc.returncode, proc.stdout, proc.stderr


def _run_with_progress(argv: list[str], progress: ProgressFn, stopper: _Stopper) -> tuple[int, bytes, bytes]:
    """Read rsync's progress2 lines (ended by \\r) as they come; stderr goes to a file so that
    neither pipe can fill up and stall rsync."""
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err_file, stdin=subprocess.DEVNULL)
        stopper.watch(proc)
        assert proc.stdout is not None
        kept: list[bytes] = []
        pending = b""
        while chunk := os.read(proc.stdout.fileno(), 65536):
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for line in lines:
                m = _PROGRESS_RE.match(line)
                if m:
                    progress(int(m.group(2)), int(m.group(1).replace(b",", b"")), m.group(3).decode())
                else:
                    kept.append(line)
        kept.append(pending)
        returncode = proc.wait()
        err_file.seek(0)
        return returncode, b"\n".join(kept), err_file.read()


def explain_rsync_failure(code: int, stderr: str, host: str | None) -> tuple[list[str], str | None]:
    """Turn rsync's stderr into lines a person can act on."""
    if host and code in (255, 12, 127, 14, 5, 10, 35):
        why = explain_ssh_failure(host, stderr)
        if why:
            return [why[0]], why[1]
    if "No space left on device" in stderr:
        return [
            "the target is full (no space left on device)"
        ], "free space on the target; the next run completes the copy"
    if code == PARTIAL:
        errs = [m.group(1) or m.group(2) for m in _FILE_ERROR_RE.finditer(stderr)]
        errs = [e for e in errs if e and "some files/attrs were not transferred" not in e]
        return errs or [f"some files were not transferred (rsync exit {code})"], (
            "the other files were copied; fix the files named above and run again"
        )
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("rsync error:")]
    first = lines[0] if lines else f"rsync failed with exit code {code}"
    return [first], None
