"""The built-in demo: a sample tree mirrored to a local target, narrated step by step.

It runs the same code paths as `tether mirror` in a throwaway folder and needs no server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tether.dirs import Dirs
from tether.endpoints import Local
from tether.filters import Filter
from tether.mirror import Mirror, MirrorSpec
from tether.output import human_bytes, shown
from tether.ssh import SshOptions
from tether.state import KnownTargets
from tether.transport.rsync import Rsync

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


def run_demo(keep: bool = False) -> int:
    work = Path(tempfile.mkdtemp(prefix="tether-demo-"))
    src, dst = work / "source", work / "target"
    dirs = Dirs(work / "home" / "config", work / "home" / "state", work / "home" / "run")
    mirror = Mirror(Rsync(SshOptions(str(dirs.ssh_socket_dir()))), KnownTargets(dirs.state))
    spec = MirrorSpec(Local(str(src)), (Local(str(dst)),), Filter.build(exclude=["*.tmp"]))

    def step(title: str, dry_run: bool = False) -> bool:
        (o,) = mirror.run(spec, dry_run=dry_run)
        verb = "would change" if dry_run else "sent"
        print(f"\n== {title}")
        print(f"   {verb}: {o.files} files ({human_bytes(o.bytes)}), deleted {o.deleted}, in {o.seconds * 1000:.0f} ms")
        for c in o.changes:
            print(f"   {shown(c)}")
        for e in o.errors:
            print(f"   error: {shown(e)}")
        return o.ok

    try:
        _make_sample(src)
        print(f"tether demo in {work}")
        print(f"   source: {src}  (excluding *.tmp)\n   target: {dst}")
        ok = step("1. first mirror: every file is copied")
        ok &= step("2. run again with no change: nothing is sent")
        (src / "src" / "main.py").write_text("print('hello, tether')\n")
        (src / "notes.txt").write_text("new file\n")
        os.remove(src / "docs" / "guide.md")
        ok &= step("3. edit one file, add one, delete one: the dry run shows the plan", dry_run=True)
        ok &= step("4. apply it: only those changes travel")
        same = sorted(p.relative_to(src) for p in src.rglob("*") if p.suffix != ".tmp") == sorted(
            p.relative_to(dst) for p in dst.rglob("*")
        )
        print(f"\n== target matches source (ignoring *.tmp): {'yes' if same else 'NO'}")
        print(f"   no file named 'pwned' anywhere: {'yes' if not list(work.rglob('pwned')) else 'NO'}")
        return 0 if ok and same else 1
    finally:
        if keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
