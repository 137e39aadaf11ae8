"""One catalogue of hostile input: each entry is a thing a user's tree can hold, how to make it,
and what tether must do with it on each endpoint kind, written beside it.

Why one list: hostile names used to be spread over several tests, each trying a few; a sync tool
is trusted with every tree, so every job kind and every endpoint kind meet the same list
(tests/integration/test_hostile.py). Entries are data: the test builds ONE source tree holding
all of them, runs a job once, and derives each entry's verdict from that run's output and target.

Verdicts: EXACT (the target holds it as the source does: type, bytes, link target), or
Skipped(reason) (absent from the target, and the run's output names it with that reason text).
Two race entries are changed while the run is going (see Race); their verdicts are WHOLE (the
target holds a content the source held at some instant, never a torn one) and GONE_OR_WHOLE.

Endpoint kinds: "local" (a directory), "ssh" (host:path over the rig's sshd), "rclone" (a remote).
"""

from __future__ import annotations

import os
import socket
import stat
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("local", "ssh", "rclone")


@dataclass(frozen=True)
class Skipped:
    """Left out on purpose; `reason` is text tether prints beside the path (`named` False: rclone's
    own message, which does not name the file)."""

    reason: str
    named: bool = True


EXACT = "exact"
WHOLE = "whole"  # the growing file: a prefix the source held (never torn), or left out with a word
GONE_OR_WHOLE = "gone-or-whole"  # the vanishing file: absent, or whole if it was there to send
Verdict = str | Skipped

# What rclone_mirror and the rclone agent print for what a remote cannot hold.
RCLONE_LINK = Skipped("a symlink (rclone remotes hold no symlinks)")
RCLONE_SPECIAL = Skipped("not a regular file or directory (rclone remotes hold neither devices, FIFOs nor sockets)")
RCLONE_CONTROL = Skipped("a control character")
RCLONE_NOT_UTF8 = Skipped("not valid UTF-8")
RCLONE_TWIN = Skipped("once Unicode-normalised (rclone takes them for one)")
# bisync to an rclone remote: the rclone agent's words for the same refusals
BISYNC_RCLONE = {
    "newline": Skipped("control characters in names do not survive rclone"),
    "non-utf8": Skipped("not valid UTF-8; rclone remotes keep UTF-8 names"),
    "link": Skipped("symlinks cannot be stored on"),
    # rclone's sftp server keeps one of two twins; bisync makes the NFD one first (byte order)
    "twin": Skipped("the same name once Unicode-normalised; left out there"),
}


@dataclass(frozen=True)
class Entry:
    """One hostile thing: `path` (relative, bytes) is what is checked in the target."""

    key: str
    path: bytes
    make: Callable[[bytes], None]  # takes the tree root (bytes)
    expect: Mapping[str, Verdict]  # endpoint kind -> verdict
    why: str = ""  # when the verdict is a deliberate choice, the reason
    unreadable: bool = False  # needs tether without root's read-anything capabilities
    race: str = ""  # "grow" or "vanish": changed while the run goes (see Race)
    # job kinds whose verdict differs from `expect`: job kind -> endpoint kind -> verdict
    per_job: Mapping[str, Mapping[str, Verdict]] = field(default_factory=dict)
    # one backend of a kind that differs from the others: (job kind, endpoint label) -> verdict
    per_label: Mapping[tuple[str, str], Verdict] = field(default_factory=dict)

    def verdict(self, job: str, kind: str, label: str = "") -> Verdict:
        if (job, label) in self.per_label:
            return self.per_label[job, label]
        return self.per_job.get(job, {}).get(kind, self.expect[kind])


def _all(v: Verdict, **over: Verdict) -> dict[str, Verdict]:
    return {k: over.get(k, v) for k in KINDS}


def _file(rel: bytes, data: bytes | None = None) -> Callable[[bytes], None]:
    def make(root: bytes) -> None:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data if data is not None else b"hostile " + rel + b"\n")

    return make


def _deep(root: bytes) -> None:
    p = os.path.join(root, DEEP)
    os.makedirs(os.path.dirname(p))
    _file(DEEP)(root)


def _fifo(root: bytes) -> None:
    os.mkfifo(os.path.join(root, b"special/fifo"))


def _device(root: bytes) -> None:
    os.mknod(os.path.join(root, b"special/null-dev"), 0o644 | stat.S_IFCHR, os.makedev(1, 3))


def _socket(root: bytes) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(os.path.join(root, b"special/sock"))
    finally:
        s.close()  # the socket file stays


def _hardlinks(root: bytes) -> None:
    _file(b"hard/one")(root)
    os.link(os.path.join(root, b"hard/one"), os.path.join(root, b"hard/two"))


def _loop(root: bytes) -> None:
    os.makedirs(os.path.join(root, b"loop"))
    os.symlink(b"b", os.path.join(root, b"loop/a"))
    os.symlink(b"a", os.path.join(root, b"loop/b"))


def _outside(root: bytes) -> None:
    os.makedirs(os.path.join(root, b"out"), exist_ok=True)
    os.symlink(b"../../sentinel-src/keep.txt", os.path.join(root, b"out/escape"))


def _unreadable_file(root: bytes) -> None:
    _file(b"perm/no-read")(root)
    os.chmod(os.path.join(root, b"perm/no-read"), 0)


def _no_exec_dir(root: bytes) -> None:
    d = os.path.join(root, b"noexec")
    _file(b"noexec/inside")(root)
    os.chmod(d, 0o644)


def _grow(root: bytes) -> None:
    _file(GROW, b"g" * (1 << 20))(root)


_CAFE = "caf\u00e9"
NFC = unicodedata.normalize("NFC", _CAFE).encode()
NFD = unicodedata.normalize("NFD", _CAFE).encode()
DEEP = b"/".join([b"d" * 200] * 19) + b"/" + b"f" * 180  # 3,999 bytes below the root
GROW = b"race/growing.bin"
VANISH = b"race/vanishing.txt"
NAME_255 = ("\u00e9" * 127 + "x").encode()
SPECIAL = Skipped("not a regular file, directory or symlink")
_SPECIAL_WHY = (
    "deliberate: a mirror run as root is rsync -a, which recreates devices, FIFOs and sockets on a "
    "local or ssh target; bisync and locations take files, directories and symlinks only and say so; "
    "an rclone remote holds none of them"
)

# the continuous mirror is judged after `tether wait` once the races ended: the target is exact
_SETTLED = {"continuous": _all(EXACT)}

CATALOGUE: tuple[Entry, ...] = (
    Entry("leading-dash", b"-rf --delete", _file(b"-rf --delete"), _all(EXACT)),
    Entry("newline", b"new\nline", _file(b"new\nline"), _all(EXACT, rclone=RCLONE_CONTROL),
          per_job={"bisync": {"rclone": BISYNC_RCLONE["newline"]}},
          why="deliberate on rclone: no backend keeps a newline (its encodings change the name)"),
    Entry("quotes", b"it's \"q\"", _file(b"it's \"q\""), _all(EXACT)),
    Entry("subst", b"$(touch pwned)`touch pwned`", _file(b"$(touch pwned)`touch pwned`"), _all(EXACT)),
    Entry("backslash", b"back\\slash\\", _file(b"back\\slash\\"), _all(EXACT)),
    Entry("non-utf8", b"caf\xe9 \xff", _file(b"caf\xe9 \xff"), _all(EXACT, rclone=RCLONE_NOT_UTF8),
          per_job={"bisync": {"rclone": BISYNC_RCLONE["non-utf8"]}},
          why="deliberate on rclone: remotes take UTF-8 names only"),
    Entry("nfc-twin", b"twins/" + NFC, _file(b"twins/" + NFC, b"nfc\n"), _all(EXACT),
          per_label={("bisync", "rclone-sftp"): BISYNC_RCLONE["twin"]},
          why="deliberate for bisync where a backend keeps one of two twins (rclone's sftp server): the "
              "second is refused, named with its twin, every pass; where the backend keeps both, both go"),
    Entry("nfd-twin", b"twins/" + NFD, _file(b"twins/" + NFD, b"nfd\n"), _all(EXACT, rclone=RCLONE_TWIN),
          per_job={"bisync": _all(EXACT)},
          why="deliberate for the rclone mirror: rclone compares names NFC-normalised, so one twin would "
              "overwrite the other; bisync's rclone agent keeps both where the backend does (see nfc-twin)"),
    Entry("name-255", NAME_255, _file(NAME_255), _all(EXACT)),
    Entry("path-4000", DEEP, _deep, _all(EXACT)),
    Entry("fifo", b"special/fifo", _fifo, _all(EXACT, rclone=RCLONE_SPECIAL), why=_SPECIAL_WHY,
          per_job={"bisync": _all(SPECIAL)}),
    Entry("device", b"special/null-dev", _device, _all(EXACT, rclone=RCLONE_SPECIAL), why=_SPECIAL_WHY,
          per_job={"bisync": _all(SPECIAL)}),
    Entry("socket", b"special/sock", _socket, _all(EXACT, rclone=RCLONE_SPECIAL), why=_SPECIAL_WHY,
          per_job={"bisync": _all(SPECIAL)}),
    Entry("hardlinks", b"hard/two", _hardlinks, _all(EXACT),
          why="deliberate: each name arrives with its bytes; the link between them is not kept"),
    Entry("symlink-loop", b"loop/a", _loop, _all(EXACT, rclone=RCLONE_LINK),
          per_job={"bisync": {"rclone": BISYNC_RCLONE["link"]}},
          why="a symlink is copied as a link, never followed, so a loop is harmless"),
    Entry("symlink-out", b"out/escape", _outside, _all(EXACT, rclone=RCLONE_LINK),
          per_job={"bisync": {"rclone": BISYNC_RCLONE["link"]}},
          why="copied as a link (its target text), never followed out of the tree"),
    Entry("no-read-file", b"perm/no-read", _unreadable_file, _all(Skipped("Permission denied")), unreadable=True),
    Entry("no-exec-dir", b"noexec/inside", _no_exec_dir, _all(Skipped("Permission denied")), unreadable=True,
          per_job={"bisync": _all(Skipped("could not be read"))}),
    Entry("grows", GROW, _grow, _all(WHOLE), race="grow", per_job=_SETTLED,
          why="deliberate: a copy is whole or left for the next pass with a word (bisync: 'changed during "
              "the pass'; rclone refuses a file whose size changes while it reads, and tether names it: "
              "'changed while it was sent')"),
    Entry("vanishes", VANISH, _file(VANISH), _all(GONE_OR_WHOLE), race="vanish", per_job=_SETTLED),
)  # fmt: skip


# Findings not fixed on this branch, (entry, job kind, endpoint label) -> what happens: the test
# reports them as K in the table instead of failing, so they stay in sight.
KNOWN: Mapping[tuple[str, str, str], str] = {}


def build(root: Path) -> bytes:
    """One source tree holding every entry, plus the dirs they hang in; returns root as bytes."""
    r = os.fsencode(root)
    for d in (b"special", b"perm", b"race"):
        os.makedirs(os.path.join(r, d), exist_ok=True)
    for e in CATALOGUE:
        e.make(r)
    return r


_LETTER = {"exact": "E", "skipped": "S", "failed": "F", "known": "K"}


def scorecard(cases: list[tuple[str, dict[str, dict[str, str]]]]) -> list[str]:
    """The table the session prints: an entry per row, a job kind/endpoint per column, each cell
    E (exact), S (skipped with its reason), F (failed) or K (a known finding, see KNOWN), then the
    counts of each column."""
    cols = [(job, label) for job, table in cases for label in table]
    by_col = {(job, label): row for job, table in cases for label, row in table.items()}
    heads = [f"{job}/{label}" for job, label in cols]
    width = max(len(e.key) for e in CATALOGUE)
    lines = [" " * width + "  " + "  ".join(heads)]
    for e in CATALOGUE:
        cells = []
        for col, head in zip(cols, heads, strict=True):
            got = by_col[col].get(e.key, "-")
            cells.append(_LETTER.get(got.split(":")[0], "-").center(len(head)))
        lines.append(e.key.ljust(width) + "  " + "  ".join(cells))
    counts = []
    for col, head in zip(cols, heads, strict=True):
        vals = list(by_col[col].values())
        n = [sum(v.split(":")[0] == kind for v in vals) for kind in _LETTER]
        counts.append("/".join(map(str, n)).center(len(head)))
    lines.append("E/S/F/K".ljust(width) + "  " + "  ".join(counts))
    return lines
