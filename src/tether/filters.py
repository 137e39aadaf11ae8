"""One exclude/include engine, gitignore-style, shared by the scanner, watcher and rsync.

Rules are read in order and, as in .gitignore, the last rule that matches a path decides.
`--include PAT` is the same as the line `!PAT`. A directory that is excluded is not
entered, so nothing below it can be included again (gitignore and rsync agree on that).

Pattern syntax: `*` and `?` never match `/`, `**` matches any number of directories, a
trailing `/` matches directories only, and a pattern holding a `/` (other than a trailing
one) is anchored to the tree root; otherwise it matches a name at any depth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from tether.errors import UsageError

# Never synced: tether's own metadata (trash, backups, markers) at the root of a tree.
META_DIR = ".tether"


class Rule(NamedTuple):
    pattern: str  # the text as written, without the leading '!' or trailing '/'
    include: bool
    dir_only: bool
    anchored: bool
    regex: re.Pattern[str]

    def matches(self, relpath: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(relpath) is not None

    def rsync_rules(self) -> list[str]:
        """The same rule for rsync's --filter (one or two rules)."""
        sign = "+" if self.include else "-"
        tail = "/" if self.dir_only else ""
        pat = self.pattern
        if pat.startswith("**/"):
            # any depth: rsync matches unanchored patterns at any depth already
            return [f"{sign} {pat[3:]}{tail}"]
        lead = "/" if self.anchored else ""
        out = [f"{sign} {lead}{pat}{tail}"]
        if "/**/" in pat:  # gitignore lets `a/**/b` match `a/b`; rsync needs it spelled out
            out.append(f"{sign} {lead}{pat.replace('/**/', '/')}{tail}")
        return out


def _glob_to_regex(pat: str) -> str:
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            if pat.startswith("**", i):
                before = i == 0 or pat[i - 1] == "/"
                after = i + 2 == n or pat[i + 2] == "/"
                if before and after:
                    if i + 2 == n:
                        out.append(".*")  # trailing /** : everything below
                        i += 2
                    else:
                        out.append("(?:.*/)?")  # **/ : zero or more directories
                        i += 3
                    continue
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pat.find("]", i + 2 if pat.startswith("[!", i) or pat.startswith("[^", i) else i + 1)
            if j == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = pat[i + 1 : j]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pat[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def parse_rule(line: str) -> Rule | None:
    """One gitignore line to a Rule; None for blank lines and comments."""
    text = line.rstrip("\n")
    if not text.strip() or text.startswith("#"):
        return None
    # trailing spaces are ignored unless escaped, as in gitignore
    stripped = text.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(text):
        stripped += " "
    text = stripped
    include = text.startswith("!")
    if include or text.startswith("\\!") or text.startswith("\\#"):
        text = text[1:]
    dir_only = text.endswith("/") and len(text) > 1
    text = text.rstrip("/") if dir_only else text
    anchored = "/" in text.lstrip("/") or text.startswith("/")
    text = text.lstrip("/")
    if not text:
        raise ValueError("empty pattern")
    body = _glob_to_regex(text)
    if not anchored and not text.startswith("**"):
        body = "(?:.*/)?" + body
    return Rule(text, include, dir_only, anchored, re.compile(body, re.DOTALL))


class Filter(NamedTuple):
    rules: tuple[Rule, ...] = ()

    @classmethod
    def build(
        cls,
        exclude: Sequence[str] = (),
        include: Sequence[str] = (),
        exclude_from: Iterable[Path] = (),
        ordered: Sequence[tuple[bool, str]] | None = None,
    ) -> Filter:
        """Rules from files first, then `ordered` (include?, pattern) pairs, or else
        excludes then includes (so an include re-admits what an exclude dropped)."""
        rules: list[Rule] = []
        for path in exclude_from:
            try:
                lines = Path(path).read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            except OSError as e:
                raise UsageError(
                    f"cannot read exclude file {path}: {e.strerror}",
                    "check the path given to --exclude-from",
                ) from None
            for no, line in enumerate(lines, 1):
                try:
                    r = parse_rule(line)
                except ValueError as e:
                    raise UsageError(f"{path}:{no}: bad pattern {line!r}: {e}") from None
                if r:
                    rules.append(r)
        pairs = ordered if ordered is not None else [(False, p) for p in exclude] + [(True, p) for p in include]
        for inc, pat in pairs:
            try:
                r = parse_rule(("!" if inc else "") + pat)
            except ValueError as e:
                raise UsageError(f"bad pattern {pat!r}: {e}") from None
            if r:
                rules.append(r)
        return cls(tuple(rules))

    def excluded(self, relpath: str, is_dir: bool) -> bool:
        """Whether this path, on its own (parents not considered), is excluded."""
        if relpath == META_DIR or relpath.startswith(META_DIR + "/"):
            return True
        verdict = False
        for rule in self.rules:
            if rule.matches(relpath, is_dir):
                verdict = not rule.include
        return verdict

    def path_excluded(self, relpath: str, is_dir: bool) -> bool:
        """Whether a path is out of the sync, counting its excluded parent directories."""
        parts = relpath.split("/")
        for i in range(1, len(parts)):
            if self.excluded("/".join(parts[:i]), True):
                return True
        return self.excluded(relpath, is_dir)

    def agent_rules(self) -> list[list[object]]:
        """The rules as the far-side agent applies them (it has no copy of this module): where it
        places watches, and what a folder to be replaced may hold."""
        return [[r.regex.pattern, r.include, r.dir_only] for r in self.rules]

    @property
    def anchored(self) -> bool:
        """Whether some rule is tied to the tree root (it means something else in a subtree)."""
        return any(r.anchored and not r.pattern.startswith("**/") for r in self.rules)

    def rsync_args(self, root: bool = True) -> list[str]:
        """--filter arguments for rsync; rsync takes the first match, so the order flips.
        `root=False` for a transfer rooted in a subdirectory (no root-only rules then)."""
        out = [f"--filter=- /{META_DIR}/"] if root else []
        for rule in reversed(self.rules):
            out += [f"--filter={r}" for r in rule.rsync_rules()]
        return out
