"""The built-in demo: a sample folder mirrored continuously to a local target, narrated.

It uses the real commands (`tether start`, `status`, `stop`) in a throwaway TETHER_HOME, so
what it shows is what a user gets; it needs no server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SAMPLE = {
    "README.txt": "A sample project mirrored by tether.\n",
    "src/main.py": "print('hello')\n" * 20,
    "src/util/strings.py": "def shout(s):\n    return s.upper()\n",
    "docs/guide.md": "# Guide\n" + "Lorem ipsum dolor sit amet.\n" * 200,
    "data/numbers.csv": "".join(f"{i},{i * i}\n" for i in range(5000)),
    "odd names/-leading dash.txt": "a name that looks like an option\n",
    "odd names/$(touch pwned).txt": "a name that looks like shell code\n",
    "build/cache.tmp": "excluded by the demo's filter\n",
}


def _make_sample(root: Path) -> None:
    for rel, text in SAMPLE.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (root / "empty dir").mkdir()
    (root / "src" / "latest").symlink_to("main.py")


def _tether(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tether", *args], env=env, text=True, capture_output=True)


def _wait(cond: Callable[[], bool], deadline: float = 10.0) -> float | None:
    """Seconds until cond() holds, polled every millisecond; None if it never does."""
    start = time.perf_counter()
    while time.perf_counter() - start < deadline:
        if cond():
            return time.perf_counter() - start
        time.sleep(0.001)
    return None


def _same(a: Path, b: Path) -> bool:
    def listing(root: Path) -> list[tuple[str, bytes]]:
        out = []
        for p in sorted(root.rglob("*")):
            rel = str(p.relative_to(root))
            if rel.startswith(".tether") or p.suffix == ".tmp":
                continue
            out.append((rel, p.read_bytes() if p.is_file() and not p.is_symlink() else b""))
        return out

    return listing(a) == listing(b)


def run_demo(keep: bool = False) -> int:
    work = Path(tempfile.mkdtemp(prefix="tether-demo-"))
    src, dst, home = work / "source", work / "target", work / "home"
    env = dict(os.environ, TETHER_HOME=str(home))
    (home / "config" / "jobs").mkdir(parents=True)
    job = home / "config" / "jobs" / "demo.toml"
    job.write_text(f'source = "{src}"\ntargets = ["{dst}"]\nexclude = ["*.tmp"]\ninterval = 0\n')
    ok = True
    try:
        _make_sample(src)
        print(f"tether demo in {work}\n  job file {job}:")
        print("".join(f"    {ln}\n" for ln in job.read_text().splitlines()))
        started = time.perf_counter()
        r = _tether(env, "start", "demo")
        print(f"$ tether start demo\n  {r.stdout.strip() or r.stderr.strip()}")
        if r.returncode:
            return 1
        matched = _wait(lambda: _same(src, dst), 30) is not None
        print(f"  first full pass: target matches the source {time.perf_counter() - started:.2f} s after start"
              if matched else "  full pass FAILED")  # fmt: skip
        ok &= matched

        def show(title: str, change: Callable[[], object], arrived: Callable[[], bool]) -> None:
            nonlocal ok
            change()
            took = _wait(arrived)
            ok &= took is not None
            print(
                f"  {title:<44} {'on the target after ' + format(took * 1000, '.1f') + ' ms' if took else 'NOT SEEN'}"
            )

        print("\nchanges in the source, and when each was complete on the target:")
        show("new file notes.txt", lambda: (src / "notes.txt").write_text("new file\n"),
             lambda: (dst / "notes.txt").exists() and (dst / "notes.txt").read_text() == "new file\n")  # fmt: skip
        show("edit src/main.py", lambda: (src / "src" / "main.py").write_text("print('hello, tether')\n"),
             lambda: (dst / "src" / "main.py").read_text() == "print('hello, tether')\n")  # fmt: skip
        show("rename docs/ -> manual/ (moved, not re-sent)", lambda: (src / "docs").rename(src / "manual"),
             lambda: (dst / "manual" / "guide.md").exists() and not (dst / "docs").exists())  # fmt: skip
        show("delete data/numbers.csv", lambda: (src / "data" / "numbers.csv").unlink(),
             lambda: not (dst / "data" / "numbers.csv").exists())  # fmt: skip
        same = _wait(lambda: _same(src, dst)) is not None
        print(f"\ntarget matches source (ignoring *.tmp): {'yes' if same else 'NO'}")
        print(f"no file named 'pwned' anywhere: {'yes' if not list(work.rglob('pwned')) else 'NO'}")
        ok &= same
        print("\n$ tether status demo\n" + _tether(env, "status", "demo").stdout.rstrip())
    finally:
        r = _tether(env, "stop", "demo")
        print(f"\n$ tether stop demo\n  {r.stdout.strip() or r.stderr.strip()}")
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1
