"""Deterministic, deliberately nasty directory trees for sync tests.

Why: a sync tool is only trustworthy if it survives names that break shells and
argument parsers, non-UTF-8 bytes, symlinks (including dangling ones), empty dirs,
odd modes and nanosecond mtimes.  Everything is driven by a seeded ``random.Random``
so two calls with the same seed produce byte-identical trees (mtimes included), which
lets tests compare a synced copy against a freshly generated reference.

All filesystem work uses ``bytes`` paths so names that are not valid UTF-8 work.
"""

from __future__ import annotations

import os
import random
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------------------- names

_CAFE = "caf\u00e9"

HOSTILE_NAMES: list[bytes] = [
    b"-rf",
    b"--delete",
    b"-e ssh -oProxyCommand=false",
    b"with space",
    b" leading space",
    b"trailing space ",
    b"new\nline",
    b"single'quote",
    b'double"quote',
    b"$(touch pwned)",
    b"`touch pwned`",
    b"$HOME",
    b"*",
    b"?",
    b"[ab]",
    b"\\",
    b"back\\slash",
    b"semi;colon",
    b"a b\tc",
    b"amp&er|pipe>redir<",
    b"host:colon",
    b"#hash",
    b"~tilde",
    b"caf\xe9",  # latin-1, not valid UTF-8
    unicodedata.normalize("NFC", _CAFE).encode(),  # b"caf\xc3\xa9"
    unicodedata.normalize("NFD", _CAFE).encode(),  # b"cafe\xcc\x81"
    ("\u00e9" * 127 + "x").encode(),  # exactly 255 bytes (NAME_MAX), multi-byte chars
    b"\xff\xfe raw bytes",
]

assert all(len(n) <= 255 for n in HOSTILE_NAMES)
assert len(set(HOSTILE_NAMES)) == len(HOSTILE_NAMES)
assert b"pwned" not in HOSTILE_NAMES

# Where hostile things live, relative to the tree root.
HOSTILE_DIRS_PARENT = b"hostile-dirs"
EMPTY_DIRS_PARENT = b"empty"
HOSTILE_EMPTY_DIR = b"-empty dir $(touch pwned)\n"

# Deterministic timestamps: 2021-ish, with non-zero nanoseconds to catch truncation.
_BASE_NS = 1_610_000_000 * 1_000_000_000
_SPAN_NS = 300 * 24 * 3600 * 1_000_000_000

_FILE_MODES = (0o644,) * 6 + (0o600, 0o755, 0o640)
_DIR_MODES = (0o755,) * 8 + (0o750, 0o700)

_POOL_SIZE = 4 << 20  # random bytes sliced to make file contents quickly


@dataclass(frozen=True)
class TreeInfo:
    """What make_tree created (counts exclude the root directory itself)."""

    files: int
    dirs: int
    symlinks: int
    bytes: int


class _Builder:
    """Accumulates entries so metadata can be applied in the right order at the end."""

    def __init__(self, root: bytes, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.pool = memoryview(rng.randbytes(_POOL_SIZE))
        self.files: list[bytes] = []
        self.dirs: list[bytes] = []  # relative, excluding root
        self.links: list[bytes] = []
        self.nbytes = 0
        self.counter = 0

    def abs(self, rel: bytes) -> bytes:
        return os.path.join(self.root, rel) if rel else self.root

    def mkdir(self, rel: bytes) -> None:
        os.mkdir(self.abs(rel), 0o700)
        self.dirs.append(rel)

    def write_file(self, rel: bytes, size: int) -> None:
        """Write *size* deterministic bytes; a per-file header keeps contents distinct."""
        self.counter += 1
        header = b"tether-test file %d %r\n" % (self.counter, rel)
        fd = os.open(self.abs(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            head = header[:size]
            os.write(fd, head)
            left = size - len(head)
            off = self.rng.randrange(_POOL_SIZE)
            while left > 0:
                n = min(left, _POOL_SIZE - off, 1 << 20)
                written = os.write(fd, self.pool[off : off + n])
                left -= written
                off = (off + written) % _POOL_SIZE
        finally:
            os.close(fd)
        self.files.append(rel)
        self.nbytes += size

    def symlink(self, target: bytes, rel: bytes) -> None:
        os.symlink(target, self.abs(rel))
        self.links.append(rel)


def _sizes(rng: random.Random, n: int, total: int) -> list[int]:
    """Skewed (log-normal) sizes summing to about *total*; ~3% empty files."""
    if n == 0:
        return []
    weights = [0.0 if rng.random() < 0.03 else rng.lognormvariate(0.0, 1.5) for _ in range(n)]
    s = sum(weights) or 1.0
    return [int(w / s * total) for w in weights]


def make_tree(
    root: Path,
    n_files: int,
    *,
    seed: int = 0,
    total_bytes: int | None = None,
    depth: int = 4,
    hostile: bool = True,
    symlinks: bool = True,
    empty_dirs: bool = True,
) -> TreeInfo:
    """Create a deterministic tree under *root* (created if missing, must be empty).

    *n_files* ordinary files (about *total_bytes* in total, default 4 KiB each on
    average) are spread over ~n_files/20..50 nested directories at most *depth* deep.
    With *hostile*, each name in HOSTILE_NAMES additionally appears as a file at the
    root and as a directory (holding a file of the same name) under ``hostile-dirs``.
    """
    rng = random.Random(seed)
    if total_bytes is None:
        total_bytes = n_files * 4096
    root_b = os.fsencode(root)
    os.makedirs(root_b, exist_ok=True)
    if os.listdir(root_b):
        raise ValueError(f"make_tree target {root!r} is not empty")
    b = _Builder(root_b, rng)

    # Directory skeleton: each new dir hangs under a random existing dir with room left.
    n_dirs = max(1, n_files // rng.randint(20, 50)) if n_files else 0
    levels: dict[bytes, int] = {b"": 0}
    parents = [b""]
    for i in range(n_dirs):
        parent = rng.choice(parents)
        rel = os.path.join(parent, b"d%04d" % i) if parent else b"d%04d" % i
        b.mkdir(rel)
        levels[rel] = levels[parent] + 1
        if levels[rel] < depth:
            parents.append(rel)
    file_dirs = list(levels)

    for i, size in enumerate(_sizes(rng, n_files, total_bytes)):
        d = rng.choice(file_dirs)
        name = b"f%05d%s" % (i, rng.choice((b".txt", b".bin", b".dat", b"", b".tar.gz")))
        b.write_file(os.path.join(d, name) if d else name, size)

    if hostile:
        b.mkdir(HOSTILE_DIRS_PARENT)
        for name in HOSTILE_NAMES:
            b.write_file(name, rng.randrange(0, 3000))
            sub = os.path.join(HOSTILE_DIRS_PARENT, name)
            b.mkdir(sub)
            b.write_file(os.path.join(sub, name), rng.randrange(0, 3000))

    if empty_dirs:
        b.mkdir(EMPTY_DIRS_PARENT)
        for i in range(3):
            b.mkdir(os.path.join(EMPTY_DIRS_PARENT, b"e%d" % i))
        b.mkdir(os.path.join(EMPTY_DIRS_PARENT, b"e0", b"nested-empty"))
        if hostile:
            b.mkdir(os.path.join(EMPTY_DIRS_PARENT, HOSTILE_EMPTY_DIR))

    if symlinks:
        _add_symlinks(b, rng, hostile, plain=b.files[:n_files], n=max(1, n_files // 500))

    _apply_metadata(b, rng)
    return TreeInfo(files=len(b.files), dirs=len(b.dirs), symlinks=len(b.links), bytes=b.nbytes)


def _add_symlinks(b: _Builder, rng: random.Random, hostile: bool, *, plain: list[bytes], n: int) -> None:
    """Relative links to a file, to a dir, a dangling one, plus *n* scattered file links."""
    b.mkdir(b"links")
    if b.files:
        target = b.files[0]
        b.symlink(os.path.join(b"..", target), b"links/to-file")
    real_dirs = [d for d in b.dirs if d.startswith(b"d")]
    if real_dirs:
        b.symlink(os.path.join(b"..", real_dirs[0]), b"links/to-dir")
    b.symlink(b"../does/not/exist", b"links/dangling")
    b.symlink(b".", b"links/self-dir")  # a loop if anything follows links
    if hostile:
        b.symlink(b"../-rf", b"links/to -rf")
        b.symlink(b"$(touch pwned)", b"links/dangling $(touch pwned)")
    # Scattered same-directory links so links appear deep in the tree too.
    for i in range(min(n, len(plain))):
        f = rng.choice(plain)
        d, name = os.path.split(f)
        link = os.path.join(d, b"link%03d" % i)
        if not os.path.lexists(b.abs(link)):
            b.symlink(name, link)


def _rand_ns(rng: random.Random) -> int:
    return _BASE_NS + rng.randrange(_SPAN_NS)


def _apply_metadata(b: _Builder, rng: random.Random) -> None:
    """Modes then mtimes: files, symlinks, then directories deepest first (writes bump them)."""
    for f in b.files:
        os.chmod(b.abs(f), rng.choice(_FILE_MODES))
        t = _rand_ns(rng)
        os.utime(b.abs(f), ns=(t, t))
    for link in b.links:
        t = _rand_ns(rng)
        os.utime(b.abs(link), ns=(t, t), follow_symlinks=False)
    all_dirs = [*b.dirs, b""]
    for d in all_dirs:
        os.chmod(b.abs(d), rng.choice(_DIR_MODES) if d else 0o755)
    for d in sorted(all_dirs, key=lambda p: p.count(b"/") + (1 if p else 0), reverse=True):
        t = _rand_ns(rng)
        os.utime(b.abs(d), ns=(t, t))


def _walk_files(root: bytes) -> list[bytes]:
    """All regular files under *root*, sorted, relative, never following symlinks."""
    out: list[bytes] = []
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                child = os.path.join(rel, e.name) if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append(child)
                elif e.is_file(follow_symlinks=False):
                    out.append(child)
    out.sort()
    return out


def touch_files(root: Path, count: int, seed: int) -> list[Path]:
    """Modify *count* existing regular files deterministically (append + later mtime).

    Why: "narrow change" tests need a known, small set of changed files whose parent
    directory mtimes stay untouched (appending does not change the directory).
    """
    rng = random.Random(seed)
    root_b = os.fsencode(root)
    files = _walk_files(root_b)
    chosen = rng.sample(files, min(count, len(files)))
    out: list[Path] = []
    for rel in sorted(chosen):
        p = os.path.join(root_b, rel)
        st = os.lstat(p)
        mode = stat.S_IMODE(st.st_mode)
        if not mode & stat.S_IWUSR:
            os.chmod(p, mode | stat.S_IWUSR)
        extra = rng.randbytes(rng.randrange(1, 64)).hex().encode()
        with open(p, "ab") as fh:
            fh.write(b"touched seed=%d %s\n" % (seed, extra))
        if not mode & stat.S_IWUSR:
            os.chmod(p, mode)
        t = max(st.st_mtime_ns, _BASE_NS + _SPAN_NS) + rng.randrange(1, 10**9) + 10**9
        os.utime(p, ns=(t, t))
        out.append(Path(os.fsdecode(p)))
    return out
