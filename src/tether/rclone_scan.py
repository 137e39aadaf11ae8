"""The source side of a pass to an rclone remote: the walk, and what a remote cannot hold.

Apart from the pass (rclone_mirror.py) so that it is light: `tether mirror SRC REMOTE:PATH` starts
the walk in a forked child from its first look at the arguments (tether/launch.py), before the
parser and the mirror machinery load, and the pass takes it (`prescan`, `take`).
"""

from __future__ import annotations

import os
import stat
import unicodedata

from tether.filters import META_DIR, Filter
from tether.forked import Forked, forked
from tether.transport.rclone_bin import CONTROL

Entry = tuple[str, int, int]  # (type "f" or "d", size, mtime_ns)
UNREAD: Entry = ("?", 0, 0)  # a source path that could not be read: the target's copy is left alone


def scan_source(root: str, flt: Filter, top: str = "") -> tuple[dict[str, Entry], list[str]]:
    """Every included entry below root (or below its subdirectory top, whose own path the caller
    checked), paths relative to root; what a remote cannot hold (symlinks, special files, some
    names) is left out, and what cannot be read is marked UNREAD: both listed in the second
    value with why, so nothing is dropped without a word.  Each name is checked on its own (its
    parents were, on the way down); the costly checks run only where they can say something."""
    entries: dict[str, Entry] = {}
    skipped: list[str] = []
    rules = bool(flt.rules)
    euid = os.geteuid()
    stack = [top]
    while stack:
        top = stack.pop()
        prefix = f"{top}/" if top else ""
        try:
            with os.scandir(os.path.join(root, top) if top else root) as it:
                listing = list(it)
        except FileNotFoundError:
            continue
        except OSError as err:
            entries[top] = UNREAD
            skipped.append(f"skipped {_shown(top)}: {_unread(err)}")
            continue
        names = [e.name for e in listing]
        twins = {} if "".join(names).isascii() else _twins(names)  # ASCII has one normal form
        for e in listing:
            name = e.name
            rel = prefix + name
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as err:
                entries[rel] = UNREAD
                skipped.append(f"skipped {_shown(rel)}: {_unread(err)}")
                continue
            mode = st.st_mode
            is_dir = stat.S_ISDIR(mode)
            if flt.excluded(rel, is_dir) if rules else (not top and name == META_DIR):
                continue
            why = (None if name.isprintable() else _unstorable(name)) if name.isascii() else _unstorable(name)
            why = why or twins.get(name) or _untyped(mode)
            if why is None and not is_dir and not _readable(e, st, euid):
                entries[rel] = UNREAD
                why = _unread(PermissionError(13, os.strerror(13)))
            if why is not None:
                skipped.append(f"skipped {_shown(rel)}: {why}")
            elif is_dir:
                entries[rel] = ("d", 0, 0)
                stack.append(rel)
            else:
                entries[rel] = ("f", st.st_size, st.st_mtime_ns)
    return entries, skipped


def _readable(e: os.DirEntry[str], st: os.stat_result, euid: int) -> bool:
    """Whether this process can read a regular file: root can, an owner by the owner's bits (an
    ACL never overrides them), anyone else as the kernel says (ACLs may grant or deny)."""
    if euid == 0:
        return True
    if st.st_uid == euid:
        return bool(st.st_mode & stat.S_IRUSR)
    return os.access(e.path, os.R_OK)


def _shown(rel: str) -> str:
    """A path on one line: bytes that are not UTF-8 and control characters escaped."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _unread(err: OSError) -> str:
    return f"cannot be read ({err.strerror}); what the target holds there is left alone"


def _untyped(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "a symlink (rclone remotes hold no symlinks)"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file or directory (rclone remotes hold neither devices, FIFOs nor sockets)"
    return None


def _twins(names: list[str]) -> dict[str, str]:
    """Names of one folder that equal another once Unicode-normalised: rclone takes them for one
    name, so one would overwrite the other; the NFC spelling goes, the others are left out."""
    by_key: dict[str, list[str]] = {}
    for n in names:
        by_key.setdefault(unicodedata.normalize("NFC", n), []).append(n)
    out: dict[str, str] = {}
    for key, group in by_key.items():
        if len(group) > 1:
            kept = key if key in group else min(group)
            for n in group:
                if n != kept:
                    out[n] = f"the same name as {_shown(kept)} once Unicode-normalised (rclone takes them for one)"
    return out


def _unstorable(rel: str) -> str | None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 (rclone remotes keep UTF-8 names)"
    if CONTROL.search(rel):
        return "a control character in the name (rclone's encodings do not keep it)"
    return None


_STARTED: dict[str, Forked] = {}


def prescan(root: str) -> None:
    """Start walking root (with no filter rules) in a forked child, for the pass to take."""
    if root not in _STARTED:
        _STARTED[root] = forked(lambda: scan_source(root, Filter.build(exclude_from=[], ordered=[])))


def take(root: str, flt: Filter) -> Forked:
    """The walk of root started earlier when it was made with this filter (none), else one started now."""
    early = _STARTED.pop(root, None)
    if early is not None and not flt.rules:
        return early
    if early is not None:
        early.cancel()
    return forked(lambda: scan_source(root, flt))


def drop() -> None:
    """End the walks nobody took."""
    while _STARTED:
        _STARTED.popitem()[1].cancel()
