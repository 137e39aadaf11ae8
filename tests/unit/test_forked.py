"""forked(): a fork that meets a module's first import in another thread stays quiet."""

from __future__ import annotations

import subprocess
import sys

# A fresh interpreter: concurrent.futures.thread is imported by another thread in the middle of
# the fork (from a before-fork handler, the widest window there is), as a pool's probe threads
# did beside a bisync's forked scan. Its after-fork handler then released a lock its before-fork
# handler never took, and the parent printed a traceback.
SCRIPT = """
import os, sys, threading
import tether.forked
def importer():
    import concurrent.futures.thread
def before():
    t = threading.Thread(target=importer)
    t.start()
    t.join()
os.register_at_fork(before=before)
assert tether.forked.forked(lambda: 41 + 1)() == 42
print("ok")
"""


def test_a_fork_beside_a_first_import_in_another_thread_prints_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert "Traceback" not in proc.stderr and "unlocked" not in proc.stderr, proc.stderr
