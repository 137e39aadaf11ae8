"""rsync exclude/include patterns (osync, inosync) as tether's gitignore-style ones.

The two syntaxes agree on `*`, `?`, `**`, `[...]`, a leading `/` (anchored) and a trailing `/`
(directories only). They differ in one place that matters: rsync matches a pattern holding a
`/` against the end of the path, at any depth, where gitignore anchors it at the root; such a
pattern is written with a leading `**/`. rsync's `dir/***` (the directory and all below it)
is gitignore's `dir/`, since an excluded directory is not entered.
"""

from __future__ import annotations

from collections.abc import Iterable


def from_rsync(pattern: str) -> str:
    """One rsync pattern in tether's syntax (the same meaning)."""
    p, tail = pattern, ""
    if p.endswith("/***"):
        p, tail = p[:-4], "/"
    elif p.endswith("/") and p.strip("/"):
        p, tail = p.rstrip("/"), "/"
    anchored = p.startswith("/")
    body = p.lstrip("/")
    if anchored:
        body = "/" + body
    elif ("/" in body or "**" in body) and not body.startswith("**"):
        body = "**/" + body
    if body.startswith(("#", "!")):
        body = "\\" + body  # a literal first character, not a comment or a negation
    return body + tail


def translate(patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """(tether patterns, 'old -> new' for each one whose spelling had to change)."""
    out: list[str] = []
    changed: list[str] = []
    for p in patterns:
        if not p.strip():
            continue
        q = from_rsync(p)
        out.append(q)
        if q != p:
            changed.append(f"{p!r} -> {q!r}")
    return out, changed


def explain(changed: list[str]) -> str:
    return (
        "rsync patterns, written gitignore-style with the same meaning (a pattern holding '/' "
        "matches at any depth in rsync): " + ", ".join(changed)
    )
