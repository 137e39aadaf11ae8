"""Shared bench helpers: a scratch dir (tmpfs when root, so disk writeback noise stays out of
the timings), timing of whole commands, and a ratio table."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The console script, as users run it (`python -m` would add runpy's imports to every timing).
_SCRIPT = Path(sys.executable).parent / "tether"
TETHER: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tether"]
# Another build to time beside this one in the same run (rounds interleaved, so a busy machine
# weighs on both alike): TETHER_BENCH_BASE=/path/to/checkout whose .venv has tether installed.
_BASE = os.environ.get("TETHER_BENCH_BASE")
BASE: list[str] | None = [str(Path(_BASE) / ".venv" / "bin" / "tether")] if _BASE else None
Arg = str | os.PathLike[str]

# An installed tether has its bytecode compiled (pip does it on install). A checkout edited in a
# shell with PYTHONDONTWRITEBYTECODE=1 would compile every changed module again on each run and
# time that: compile both builds once, and let the timed commands write what is missing.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
for _src in [ROOT / "src", *([Path(_BASE) / "src"] if _BASE else [])]:
    if _src.is_dir():
        import compileall

        compileall.compile_dir(_src, quiet=1)


@contextlib.contextmanager
def scratch(size_mb: int) -> Iterator[Path]:
    """A temporary work dir, on its own tmpfs when we may mount one."""
    work = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    mounted = False
    if os.geteuid() == 0:
        # nr_inodes=0: no inode limit (a million-file tree and its copy pass the default's half of RAM pages)
        opts = f"size={size_mb}m,nr_inodes=0"
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(work)]).returncode == 0
    print(f"scratch: {work} ({'tmpfs' if mounted else 'disk'})")
    try:
        yield work
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def timed(argv: Sequence[Arg], env: dict[str, str] | None = None) -> float:
    """Wall time of one command; a failing command stops the bench."""
    start = time.perf_counter()
    proc = subprocess.run([os.fspath(a) for a in argv], env=env, capture_output=True, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: {argv[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return took


def target_status(env: dict[str, str], name: str) -> dict[str, object]:
    """A running job's first target row from `tether status --json` ({} before it has one)."""
    import json

    proc = subprocess.run([*TETHER, "status", name, "--json"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {}
    rows = json.loads(proc.stdout)["jobs"][0].get("targets") or [{}]
    return dict(rows[0])


def first_pass_done(env: dict[str, str], name: str) -> bool:
    row = target_status(env, name)
    return bool(row.get("full_passes")) and row.get("state") == "idle"


def median(xs: Sequence[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def table(rows: Sequence[tuple[str, float, float, float | None]], left: str, right: str) -> str:
    """Rows of (case, tether seconds, other seconds, limit on the ratio or None)."""
    out = [f"{'case':<36} {left:>10} {right:>12} {'ratio':>7}  limit"]
    for name, a, b, limit in rows:
        verdict = "" if limit is None else (f"<= {limit:.2f} ok" if a / b <= limit else f"<= {limit:.2f} NOT MET")
        out.append(f"{name:<36} {a * 1000:>8.0f}ms {b * 1000:>10.0f}ms {a / b:>7.2f}  {verdict}")
    return "\n".join(out)
