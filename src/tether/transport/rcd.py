"""Starting the `rclone rcd` behind an RcloneAgent, and starting one early.

rclone takes 60-90 ms from exec to serving (a large Go binary initialising every backend).  A
one-shot mirror to a remote knows it needs one as soon as its targets are parsed, long before
the mirror machinery is loaded: `prestart` launches rcd then, and the agent's connect takes it.
rcd serves every remote through the same process (the remote is named in each call), so a
prestarted one suits any target; it touches no remote until called.  One never taken is ended
by `drop_prestarted`.  Kept light (no http, no json): it is imported before everything else.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading

# Inherited settings that would change what an operation does (dry runs, skips, filters that
# hide files from a scan, prompts) or where rcd logs its address: not passed on to rcd.
_DROP_ENV = re.compile(
    r"RCLONE_(RC_|LOG_|VERBOSE|QUIET|SYSLOG|USE_JSON_LOG|DRY_RUN|INTERACTIVE|I$|IGNORE_|UPDATE|SIZE_ONLY"
    r"|CHECKSUM|IMMUTABLE|NO_UPDATE_MODTIME|NO_CHECK_DEST|BACKUP_DIR|SUFFIX|COMPARE_DEST|COPY_DEST|MAX_TRANSFER"
    r"|MAX_DURATION|CUTOFF_MODE|EXCLUDE|INCLUDE|FILTER|FILES_FROM|MIN_SIZE|MAX_SIZE|MIN_AGE|MAX_AGE|MAX_DEPTH"
    r"|DELETE_EXCLUDED|USE_SERVER_MODTIME|METADATA)"
)


class Rcd:
    """A started `rclone rcd` on a port the kernel picks (it logs its address on stderr), and
    the random credentials its rc answers to."""

    def __init__(self, rclone: str, proc: subprocess.Popen[bytes], user: str, password: str) -> None:
        self.rclone = rclone
        self.proc = proc
        self.user = user
        self.password = password


def child_env() -> dict[str, str]:
    """This process's environment without the RCLONE_ settings that would change what rclone does."""
    return {k: v for k, v in os.environ.items() if not _DROP_ENV.match(k)}


def spawn(rclone: str) -> Rcd:
    """Start rcd; OSError when the program cannot be run."""
    user, password = os.urandom(16).hex(), os.urandom(32).hex()  # as secrets.token_hex, lighter to import
    env = child_env()
    # credentials by environment: a command line is visible to every user in ps
    env["RCLONE_RC_USER"], env["RCLONE_RC_PASS"] = user, password
    argv = [rclone, "rcd", "--rc-addr", "127.0.0.1:0", "--log-level", "NOTICE"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return Rcd(rclone, proc, user, password)


_SPARES: list[Rcd] = []
_SPARE_LOCK = threading.Lock()


def prestart(rclone: str, count: int = 1) -> None:
    """Have `count` rcds of this program started for connects to come: those started already
    count (a program that cannot run is left for the connect to report in full)."""
    with _SPARE_LOCK:
        count -= sum(1 for rcd in _SPARES if rcd.rclone == rclone)
    for _ in range(count):
        try:
            rcd = spawn(rclone)
        except OSError:
            return
        with _SPARE_LOCK:
            _SPARES.append(rcd)


def take(rclone: str) -> Rcd | None:
    """A prestarted rcd of this program, still running, if there is one."""
    with _SPARE_LOCK:
        for i, rcd in enumerate(_SPARES):
            if rcd.rclone == rclone and rcd.proc.poll() is None:
                return _SPARES.pop(i)
    return None


def drop_prestarted() -> None:
    """End the prestarted rcds nobody took."""
    with _SPARE_LOCK:
        spares = _SPARES[:]
        _SPARES.clear()
    for rcd in spares:
        rcd.proc.terminate()
    for rcd in spares:
        try:
            rcd.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            rcd.proc.kill()
            rcd.proc.wait()
        if rcd.proc.stderr is not None:
            rcd.proc.stderr.close()
