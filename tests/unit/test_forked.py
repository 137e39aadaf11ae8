"""forked(): a fork that meets a module's first import in another thread stays quiet."""

from __future__ import annotations

import subprocess
import sys

# A fresh interpreter: another thread, already running (as a pool's probe threads were beside a
# bisync's forked scan), makes the first import of concurrent.futures.thread in the middle of the
# fork (from a before-fork handler, the widest window there is). Its after-fork handler then
# released a lock its before-fork handler never took, and the parent printed a traceback.
SCRIPT = """
import os, sys, threading
import tether.forked
go = threading.Event()
def importer():
    go.wait()
    import concurrent.futures.thread
t = threading.Thread(target=importer)
t.start()
def before():
    go.set()
    t.join()
os.register_at_fork(before=before)
assert tether.forked.forked(lambda: 41 + 1)() == 42
print("ok")
"""


def test_a_fork_beside_a_first_import_in_another_thread_prints_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert "Traceback" not in proc.stderr and "unlocked" not in proc.stderr, proc.stderr


def test_a_fork_from_the_only_thread_imports_nothing_for_the_race() -> None:
    """Alone, nothing can import beside the fork: a local bisync pass does not load logging and
    concurrent.futures (10 ms of its start) for it."""
    script = (
        "import sys, tether.forked\n"
        "assert tether.forked.forked(lambda: 1)() == 1\n"
        "print(sorted(m for m in ('logging', 'concurrent.futures') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
