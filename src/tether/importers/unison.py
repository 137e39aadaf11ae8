"""unison profiles (`~/.unison/NAME.prf`): the two roots and their preferences become a bisync job.

Semantics follow unison's own code where its manual is vague: a profile is `key = value` lines,
`#` comments and `include`/`source` directives (a line with no `=` is an error), list preferences
accumulate, the last value of any other preference wins. Patterns follow `src/pred.ml` and the
globbing of `src/ubase/rx.ml`: `Name` matches the last component, `Path` the whole path from the
root, and a `*`, `?` or `[..]` at the start of a component never matches a leading dot; braces
are alternatives. Every preference ends up translated (with a note when the meaning moved) or in
`dropped` with the reason, never lost quietly.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from tether.errors import ConfigError, UsageError
from tether.filters import Filter
from tether.importers import Imported
from tether.importers import _toml_text as toml

NAME = "unison"
HINT = "unison profile lines are `key = value`, `# comment`, `include NAME` or `source FILE`"


def _words(text: str) -> list[str]:
    return text.split()


# Every preference unison 2.53 knows (from its sources), to tell a profile from other key=value files.
KNOWN = set(
    _words(
        """acl addprefsto addversionno allHostsAreRunningWindows atomic auto backup backupcurr backupcurrent
    backupcurrentnot backupcurrnot backupdir backuploc backuplocation backupnot backupprefix backups
    backupsuffix backupversions batch clientHostName color confirmbigdel confirmbigdeletes confirmmerge
    contactquietly copymax copyonconflict copyprog copyprogrest copythreshold debug debugtimes diff dontchmod
    dumbtty dumparchives expert fastcheck fastercheckUNSAFE fat follow force forcepartial group halfduplex
    height ignore ignorearchives ignorecase ignoreinodenumbers ignorelocks ignorenot immutable immutablenot
    key killserver label links log logfile maxbackups maxerrors maxsizethreshold maxthreads merge mirror
    mirrornot mirrorversions mountpoint moves-experimental nocreation nocreationpartial nodeletion
    nodeletionpartial noupdate noupdatepartial numericids owner path perms prefer preferpartial pretendwin
    repeat retry root rootalias rsrc rsync servercmd showarchive showprev silent sortbysize sortfirst sortlast
    sortnewfirst sshargs sshcmd stream terse testserver timers times ui unicode watch xattrignore
    xattrignorenot xattrs xferbycopying"""
    )
)

_UI = "unison's user interface only; tether has no interactive sync screen (`tether sync NAME -n` shows the plan)"
_TRANSFER = "how unison moves data; tether moves big files with rsync (deltas) and small ones inside its agent"
DROPPED = {
    **dict.fromkeys(
        _words(
            "color dumbtty height key silent terse timers debug debugtimes showarchive showprev sortbysize "
            "sortfirst sortlast sortnewfirst expert contactquietly ui addprefsto dumparchives"
        ),
        _UI,
    ),
    "label": "a description for unison's profile menu; a tether job has none (its name is the label)",
    "diff": "tether runs no diff program; `tether sync NAME -n` lists what would change",
    "merge": "tether runs no merge program: with conflict = keep-both both versions stay, for you to merge",
    "confirmmerge": "tether runs no merge program",
    **dict.fromkeys(
        _words(
            "copyprog copyprogrest copythreshold copymax stream xferbycopying halfduplex maxthreads addversionno "
            "killserver testserver"
        ),
        _TRANSFER,
    ),
    "sshargs": "tether runs ssh itself: put ssh options in a Host block of ~/.ssh/config (or ssh_config = FILE)",
    "sshcmd": "tether runs the system ssh, reading ~/.ssh/config (or ssh_config = FILE in the job)",
    "servercmd": "tether installs nothing on the far side: it needs rsync and python3 there",
    "clientHostName": "names unison's archive; tether keeps its state per job",
    "rootalias": "renames roots in unison's archive names; tether keeps its state per job",
    "ignorearchives": "tether keeps its own state per job; there is no switch to ignore it",
    "ignorelocks": "tether locks each replica (.tether/lock) and takes over a dead holder's lock by itself",
    "ignorecase": "tether compares names byte for byte (case-sensitive)",
    **dict.fromkeys(["ignoreinodenumbers", "pretendwin"], "tether always counts a changed inode as a change to check"),
    "fastercheckUNSAFE": "tether has no unsafe fast check",
    **dict.fromkeys(["immutable", "immutablenot"], "tether checks every file; it has no immutable directories"),
    "follow": "tether never follows symlinks: it syncs the link itself",
    **dict.fromkeys(
        ["owner", "group", "numericids"],
        "tether bisync does not carry owners or groups: files belong to the user tether runs as on each side",
    ),
    **dict.fromkeys(
        ["xattrs", "xattrignore", "xattrignorenot", "acl"], "tether does not sync extended attributes or ACLs"
    ),
    "rsrc": "macOS resource forks: tether does not sync them",
    "fat": "tether has no FAT mode (it syncs modes and mtimes in full)",
    "dontchmod": "tether always sets the mode of what it copies",
    "unicode": "tether compares names byte for byte (no Unicode normalisation)",
    "allHostsAreRunningWindows": "internal to unison",
    **dict.fromkeys(
        ["force", "forcepartial"],
        "a forced direction is one-way: a tether mirror job (source and targets) does that, bisync has none",
    ),
    "preferpartial": "tether's conflict policy covers the whole job; it cannot differ per path",
    **dict.fromkeys(
        _words("nodeletion nodeletionpartial noupdate noupdatepartial nocreation nocreationpartial"),
        "tether has no per-replica write ban (a replica it cannot write is synced from and reported)",
    ),
    "maxsizethreshold": "tether has no size limit per file",
    **dict.fromkeys(["maxerrors", "retry"], "a file that fails is reported, the rest synced; the next pass retries it"),
    "atomic": "tether syncs each file on its own (each one atomically)",
    "moves-experimental": "tether has no such switch",
    **dict.fromkeys(
        ["backupnot", "mirrornot"], "tether keeps versions of every file it overwrites or deletes: no exceptions"
    ),
    "backupdir": "tether keeps versions inside each replica, in .tether/versions/; another folder cannot be set",
    **dict.fromkeys(["backupprefix", "backupsuffix"], "tether names the versions itself, under .tether/versions/"),
    **dict.fromkeys(
        ["backupcurrent", "backupcurr", "backupcurrentnot", "backupcurrnot"],
        "a copy of the last synced version, for merge programs; tether runs none",
    ),
    "logfile": "tether logs to its state directory ($XDG_STATE_HOME/tether); `tether log NAME` shows it",
}


@dataclass(frozen=True)
class Pref:
    file: Path
    no: int
    key: str
    value: str
    origin: str | None = None  # the included file's name, when not the profile itself

    @property
    def label(self) -> str:
        """How dropped/notes name this line: the key and value (and the included file)."""
        return f"{self.key} = {self.value}" + (f" (in {self.origin})" if self.origin else "")

    def error(self, message: str, hint: str | None = HINT) -> ConfigError:
        return ConfigError(f"{self.file}:{self.no}: {self.key}: {message}", hint)


@dataclass
class Profile:
    prefs: list[Pref] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


_DIRECTIVE = re.compile(r"(include|source)(\??)\s+(.*)")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def looks_like(text: str, path: Path) -> bool:
    """Every line a unison line, and a `root` or at least two unison preferences (one for a .prf)."""
    keys: set[str] = set()
    for line in text.splitlines():
        s = line.strip().lstrip("\ufeff")
        if not s or s.startswith("#"):
            continue
        if _DIRECTIVE.fullmatch(s):
            keys.add("include")
            continue
        k, eq, v = s.partition("=")
        if not eq or not _KEY.fullmatch(k.strip()) or v.strip()[:1] in ('"', "'", "["):
            return False  # TOML, INI, shell or python assignments quote their values
        keys.add(k.strip())
    known = len(keys & (KNOWN | {"include"}))
    return "root" in keys or known >= 2 or (path.suffix == ".prf" and known >= 1)


def read(text: str, path: Path, _seen: tuple[Path, ...] = (), _origin: str | None = None) -> Profile:
    """The profile's preferences in order, with `include`/`source` files next to it read in place."""
    out = Profile()
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if no == 1:
            s = s.lstrip("\ufeff")
        if not s or s.startswith("#"):
            continue
        m = _DIRECTIVE.fullmatch(s)
        if m:
            _include(out, path, no, m.group(1), bool(m.group(2)), m.group(3).strip(), (*_seen, path), _origin)
            continue
        key, eq, value = s.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ConfigError(f"{path}:{no}: garbled line (no 'key = value'): {s}", HINT)
        if value.endswith("\\") and not value.endswith("\\\\"):
            value = value[:-1]  # unison: a trailing backslash protects trailing whitespace
        out.prefs.append(Pref(path, no, key, value, _origin))
    return out


def _include(
    out: Profile, path: Path, no: int, word: str, optional: bool, name: str, seen: tuple[Path, ...], origin: str | None
) -> None:
    """`include NAME` reads NAME or NAME.prf from unison's directory, `source` NAME only; here that
    directory is the one holding the profile. `?` makes a missing file no error (for unison)."""
    label = f"{word}{'?' if optional else ''} {name}" + (f" (in {origin})" if origin else "")
    if not name or re.search(r"(?<!\\)\s", name):
        raise ConfigError(f"{path}:{no}: garbled {word} line: one file name expected", HINT)
    name = re.sub(r"\\(.)", r"\1", name)
    base = path.parent / Path(name).expanduser()
    file = base if word == "source" or base.is_file() else base.with_name(base.name + ".prf")
    if not file.is_file():
        why = "unison skipped it too" if optional else "its preferences are not imported: import that file too"
        out.dropped.append((label, f"{file} does not exist next to the profile; {why}"))
        return
    if file.resolve() in {p.resolve() for p in seen}:
        raise ConfigError(f"{path}:{no}: {word} {name} includes itself", "remove the loop of include lines")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}:{no}: cannot read {file}: {e}", "make it readable or remove the line") from None
    sub = read(text, file, seen, name)
    out.prefs += sub.prefs
    out.dropped += sub.dropped
    out.notes.append((label, f"followed: its preferences are imported as if written here ({file})"))
    out.notes += sub.notes


# ----------------------------------------------------------------------------- roots


_URI = re.compile(r"(?:(?P<proto>[A-Za-z]+):)?//(?P<rest>.*)")
_HOSTPART = re.compile(r"(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]]*\]|\{[^}]*\}|[-_a-zA-Z0-9.]*)(?::(?P<port>\d+))?")


def root_spec(p: Pref) -> tuple[str, str | None]:
    """A unison root as a tether replica (a local path, or `[user@]host:path` over ssh), and a note
    when its spelling changed."""
    raw = p.value
    m = _URI.fullmatch(raw)
    if m is None:
        return _local(p, raw)
    proto, rest = (m.group("proto") or "file").lower(), m.group("rest")
    hm = _HOSTPART.match(rest)
    assert hm is not None  # every part is optional
    user, host, port, tail = hm.group("user"), hm.group("host"), hm.group("port"), rest[hm.end() :]
    if tail and not tail.startswith("/"):
        raise p.error(f"ill-formed root {raw!r}", "write ssh://host//abs/path or ssh://host/relative/path")
    path = tail[1:]  # ssh://host//abs -> /abs, ssh://host/rel -> rel (below the remote home)
    if proto == "file":
        if host or port or user:
            raise p.error(f"{raw!r} is a network share root", "mount the share and give its local path")
        return _local(p, path)
    if proto == "socket":
        raise p.error(
            f"{raw!r} reaches a unison server over a socket", "tether reaches a far side over ssh: use an ssh host"
        )
    if proto != "ssh":
        raise p.error(f"unknown root protocol {proto!r} in {raw!r}", "unison roots are paths or ssh://host/path")
    if not host:
        raise p.error(f"{raw!r} names no host", "write ssh://host//abs/path")
    if port:
        raise p.error(
            f"{raw!r} gives an ssh port",
            f"tether reads ports from ~/.ssh/config: add `Host {host}` with `Port {port}` (or an alias) there",
        )
    spec = f"{user + '@' if user else ''}{host}:{path}"
    where = "an absolute path" if path.startswith("/") else "a path below the remote home"
    return spec, f"{spec}: ssh with your ~/.ssh/config, {where}"


def _local(p: Pref, path: str) -> tuple[str, str | None]:
    """Absolute paths stay; a relative one was relative to where unison started: the home directory."""
    if not path:
        raise p.error("an empty root", "give the directory to sync")
    if path.startswith(("/", "~")):
        return path.rstrip("/") or "/", None
    spec = "~/" + posixpath.normpath(path)
    return spec, f"{spec}: unison took a relative root from the directory it started in (usually home)"


def _split(spec: str) -> tuple[str | None, str]:
    """(host, path) of a replica spec; host None for a local path."""
    if spec.startswith(("/", "~")):
        return None, spec
    if spec.startswith("["):
        host, _, path = spec.partition("]:")
        return host + "]", path
    host, _, path = spec.partition(":")
    return host, path


def _which_root(value: str, prefs: list[Pref], specs: list[str]) -> int | None:
    """Unison's prefer: a root as written, or a unique prefix or suffix of a root's path, or a
    unique prefix of a remote root's host."""
    for i, p in enumerate(prefs):
        if value in (p.value, specs[i]):
            return i + 1
    hits = set()
    for i, spec in enumerate(specs):
        host, path = _split(spec)
        if path and (path.startswith(value) or path.endswith(value)):
            hits.add(i + 1)
        if host and host.rsplit("@", 1)[-1].startswith(value):
            hits.add(i + 1)
    return hits.pop() if len(hits) == 1 else None


# ----------------------------------------------------------------------------- patterns


class Untranslatable(ValueError):
    """A pattern with no gitignore-style equivalent; the message says why."""


def explode(pat: str) -> list[str]:
    """Unison's `{a,b}` alternatives, nested ones too; backslash escapes are kept for the glob."""

    def alts(i: int, inner: bool) -> tuple[list[str], int]:
        acc: list[str] = []
        cur, start = [""], i
        while i < len(pat):
            c = pat[i]
            if c == "\\":
                i += 2
            elif c == "{":
                lit = pat[start:i]
                sub, i = alts(i + 1, True)
                cur, start = [a + lit + b for a in cur for b in sub], i
            elif inner and c in ",}":
                acc += [a + pat[start:i] for a in cur]
                if c == "}":
                    return acc, i + 1
                cur, i = [""], i + 1
                start = i
            else:
                i += 1
        if inner:
            raise Untranslatable("a '{' is never closed")
        return [a + pat[start:] for a in cur], i

    return alts(0, False)[0]


Token = tuple[str, str, bool, tuple[tuple[str, str], ...]]  # kind (* ? [ c /), char, negated, ranges


def _tokens(glob: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c in "*?":
            out.append((c, "", False, ()))
            i += 1
        elif c == "[":
            i += 1
            neg = i < n and glob[i] in "^!"
            i += neg
            ranges: list[tuple[str, str]] = []
            while True:
                if i >= n:
                    raise Untranslatable("a '[' is never closed")
                if glob[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _char(glob, i)
                if i + 1 < n and glob[i] == "-" and glob[i + 1] != "]":
                    hi, i = _char(glob, i + 1)
                    ranges.append((lo, hi))
                else:
                    ranges.append((lo, lo))
            out.append(("[", "", neg, tuple(ranges)))
        else:
            ch, i = _char(glob, i)
            out.append(("/" if ch == "/" else "c", ch, False, ()))
    return out


def _char(glob: str, i: int) -> tuple[str, int]:
    if glob[i] == "\\":
        if i + 1 >= len(glob):
            raise Untranslatable("it ends with a lone backslash")
        return glob[i + 1], i + 2
    return glob[i], i + 1


def _lit(ch: str) -> str:
    return "\\" + ch if ch in "*?[\\" else ch


def _escape_glob(text: str) -> str:
    return "".join(_lit(c) for c in text)


def _set(neg: bool, ranges: tuple[tuple[str, str], ...], nodot: bool) -> str | None:
    """A bracket for tether's glob; at the start of a name unison's set never matches a dot.
    None when it can match nothing."""
    items = list(ranges)
    if nodot:
        items = [*items, (".", ".")] if neg else [r for r in items if r != (".", ".")]
    if not items:
        return None
    if not neg and len(items) == 1 and items[0][0] == items[0][1]:
        return _lit(items[0][0])
    if any(c in "]\\" for r in items for c in r):
        raise Untranslatable("a [...] holding ']' or '\\' has no tether spelling")
    dash = ("-", "-") in items
    items = sorted((r for r in items if r != ("-", "-")), key=lambda r: r[0] in "!^")  # a leading ! means "not"
    body = "".join(lo if lo == hi else f"{lo}-{hi}" for lo, hi in items) + ("-" if dash else "")
    if not neg and body[:1] in ("!", "^"):
        raise Untranslatable("a [...] of only '!' and '^' has no tether spelling")
    return "[" + ("!" if neg else "") + body + "]"


def _component(tokens: list[Token]) -> list[str]:
    """One path component as tether glob text, in every variant it needs: unison's `*` at the start
    of a name matches no leading dot but may match nothing (`*~` is `~` or `[!.]*~`)."""
    starts = [""]
    i = 0
    if tokens and tokens[0][0] == "*":
        while i < len(tokens) and tokens[i][0] == "*":
            i += 1
        nxt = tokens[i] if i < len(tokens) else None
        if nxt is None or nxt[0] == "?":
            starts, i = ["[!.]*"], i + (nxt is not None)
        elif nxt[0] == "[":
            first, other = _set(nxt[2], nxt[3], nodot=True), _set(nxt[2], nxt[3], nodot=False)
            starts = [s for s in (first, None if other is None else "[!.]*" + other) if s is not None]
            i += 1
        elif nxt[1] == ".":
            starts = ["[!.]*"]
        else:
            starts = ["", "[!.]*"]
    elif tokens and tokens[0][0] == "?":
        starts, i = ["[!.]"], 1
    elif tokens and tokens[0][0] == "[":
        first = _set(tokens[0][2], tokens[0][3], nodot=True)
        if first is None:
            return []
        starts, i = [first], 1
    rest: list[str] = []
    for kind, ch, neg, ranges in tokens[i:]:
        if kind == "*":
            if not rest or rest[-1] != "*":
                rest.append("*")
        elif kind == "?":
            rest.append("?")
        elif kind == "[":
            s = _set(neg, ranges, nodot=False)
            if s is None:
                return []
            rest.append(s)
        else:
            rest.append(_lit(ch))
    tail = "".join(rest)
    return [s + tail for s in starts if s + tail]


def glob_patterns(kind: str, glob: str) -> list[str]:
    """A unison `Name`/`Path`/`BelowPath` glob as tether patterns (several for braces and for a
    leading `*` that may match nothing)."""
    if kind != "Name" and glob.startswith("/"):
        raise Untranslatable(f"{kind} patterns are relative to the root (unison refuses a leading '/')")
    out: list[str] = []
    for alt in explode(glob):
        comps: list[list[Token]] = [[]]
        for t in _tokens(alt):
            if t[0] == "/":
                comps.append([])
            else:
                comps[-1].append(t)
        if any(not c for c in comps):
            continue  # an empty component: no real path matches
        for parts in itertools.product(*(_component(c) for c in comps)):
            text = "/".join(parts)
            if text.endswith(" "):
                text = text[:-1] + "\\ "  # gitignore drops an unescaped trailing space
            if kind != "Name":
                text = "/" + text
            elif len(parts) > 1:
                text = "**/" + text
            elif text[0] in "!#":
                text = "\\" + text
            if text not in out:
                out.append(text)
    if not out:
        raise Untranslatable("it matches no path")
    return out


_META = set(".[]()*+?{}|^$\\")


def _regex_literal(rx: str) -> str | None:
    """The text a regex matches when it is a plain string (escapes allowed), else None."""
    out, i = [], 0
    while i < len(rx):
        c = rx[i]
        if c == "\\":
            if i + 1 >= len(rx) or rx[i + 1].isalnum():
                return None  # \w, \d, \1 ... are classes or references, not characters
            out.append(rx[i + 1])
            i += 2
        elif c in _META:
            return None
        else:
            out.append(c)
            i += 1
    return "".join(out)


def regex_patterns(rx: str) -> list[str]:
    """The few regex shapes that are globs in disguise (unison anchors regexes at both ends):
    a literal path, `.*SUFFIX`, `.*/NAME` and `DIR/.*`; any other regex is Untranslatable."""
    body = rx.removeprefix("^")
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    why = "a regular expression: tether's patterns are globs; write the exclude by hand"
    if body.startswith(".*/"):
        name = _regex_literal(body[3:])
        if name and "/" not in name:
            return ["*/**/" + _escape_glob(name)]
        raise Untranslatable(why)
    if body.startswith(".*"):
        suffix = _regex_literal(body[2:])
        if suffix and "/" not in suffix:
            return ["*" + _escape_glob(suffix)]
        raise Untranslatable(why)
    if body.endswith("/.*"):
        top = _regex_literal(body[:-3])
        if top and not top.startswith("/"):
            return ["/" + _escape_glob(top) + "/**"]
        raise Untranslatable(why)
    path = _regex_literal(body)
    if path and not path.startswith("/"):
        return ["/" + _escape_glob(path)]
    raise Untranslatable(why)


def pathspec(value: str) -> tuple[str, str]:
    """(kind, pattern) of an `ignore` value, without unison's `-> associated string`."""
    spec = f" {value} "
    if " -> " in spec:
        spec = spec.rsplit(" -> ", 1)[0]
    kind, _, pattern = spec.strip().partition(" ")
    if kind not in ("Name", "Path", "BelowPath", "Regex"):
        raise ValueError("a pattern starts with Name, Path, BelowPath or Regex")
    return kind, pattern.strip()


def simplify(patterns: list[str]) -> tuple[list[str], dict[str, str]]:
    """Fold unison's dot rule back where the profile undid it: `[!.]*~`, `~` and `.*~` (from
    `Name *~` and `Name .*~`) are together just `*~`. Also says which pattern became which."""
    out, merged = list(patterns), dict[str, str]()
    for p in patterns:
        if p not in out or "[!.]*" not in p:
            continue
        at = p.index("[!.]*")
        dot, empty, star = (p[:at] + x + p[at + 5 :] for x in (".*", "", "*"))
        if dot in out and (empty in out or p[at + 5 : at + 6] in ("", "/", ".")):
            merged |= {q: star for q in (p, dot, empty) if q in out}
            out = [star if q == p else q for q in out if q not in (dot, empty)]
    return out, merged


def pathspec_all(value: str) -> bool:
    """Whether a `backup` pathspec covers every file (as tether's backups do)."""
    return pathspec(value) in (("Name", "*"), ("Name", "?*"), ("Regex", ".*"))


# ----------------------------------------------------------------------------- conversion


class _Job:
    """The bisync job being built, with the import's notes and dropped keys."""

    def __init__(self, profile: Profile) -> None:
        self.prefs = profile.prefs
        self.out = Imported(dropped=list(profile.dropped), notes=list(profile.notes))
        self.fields: dict[str, toml.Value] = {"kind": "bisync"}
        self.exclude: list[str] = []
        self.include: list[str] = []
        self.specs: list[str] = []  # path1, path2
        self.origin: dict[str, Pref] = {}  # include pattern -> the ignorenot line it came from

    def note(self, p: Pref | str, text: str) -> None:
        self.out.notes.append((p.label if isinstance(p, Pref) else p, text))

    def drop(self, p: Pref | str, why: str) -> None:
        self.out.dropped.append((p.label if isinstance(p, Pref) else p, why))

    def last(self, *keys: str) -> Pref | None:
        """A single-valued preference: unison takes the last line; earlier ones are reported."""
        found = [p for p in self.prefs if p.key in keys]
        for p in found[:-1]:
            self.drop(p, f"set again on line {found[-1].no}: unison takes the last value")
        return found[-1] if found else None

    def every(self, *keys: str) -> list[Pref]:
        return [p for p in self.prefs if p.key in keys]


def _bool(p: Pref) -> bool:
    v = p.value.lower()
    if v in ("true", "yes"):
        return True
    if v in ("false", "no"):
        return False
    raise p.error(f"expects true or false, not {p.value!r}")


def _int(p: Pref) -> int:
    try:
        return int(p.value, 0)
    except ValueError:
        raise p.error(f"expects a whole number, not {p.value!r}") from None


HANDLED = set(
    _words(
        """root path ignore ignorenot prefer backup mirror backups backuplocation backuploc maxbackups mirrorversions
    backupversions times perms batch auto repeat confirmbigdel confirmbigdeletes log links fastcheck rsync watch
    mountpoint copyonconflict"""
    )
)


def convert(text: str, path: Path, name: str) -> Imported:
    """The bisync job NAME for the profile (and the files it includes, when they sit next to it)."""
    job = _Job(read(text, path))
    _roots(job)
    _patterns(job)
    _prefer(job)
    _backups(job)
    _flags(job)
    for p in job.prefs:
        if p.key not in HANDLED:
            job.drop(p, DROPPED.get(p.key, "not a unison preference (unison would refuse it too)"))
    if job.exclude:
        job.fields["exclude"] = job.exclude
    if job.include:
        job.fields["include"] = job.include
    order = ["kind", "path1", "path2", "conflict", "exclude", "include", "backups_keep", "interval"]
    job.out.jobs[name] = toml.table({k: job.fields[k] for k in order if k in job.fields})
    return job.out


def _roots(job: _Job) -> None:
    roots = job.every("root")
    if len(roots) != 2:
        where = f"{roots[2].file}:{roots[2].no}: " if len(roots) > 2 else ""
        raise UsageError(
            f"{where}the profile names {len(roots)} root(s); a tether job needs exactly two",
            "add the two `root = ...` lines unison took from its command line, then import again",
        )
    for i, p in enumerate(roots, 1):
        spec, note = root_spec(p)
        job.specs.append(spec)
        job.fields[f"path{i}"] = spec
        if note:
            job.note(p, f"path{i} = {note}")
    if _split(job.specs[0])[0] and _split(job.specs[1])[0]:
        raise UsageError(
            f"{roots[1].file}:{roots[1].no}: both roots are remote ({job.specs[0]}, {job.specs[1]})",
            "run tether on one of the two hosts, with that root as a local path",
        )


def _patterns(job: _Job) -> None:
    """ignore -> exclude, ignorenot -> include, path -> rules keeping only those subtrees."""
    lines: list[tuple[Pref, str, list[str]]] = []
    for key, target in (("ignore", job.exclude), ("ignorenot", job.include)):
        for p in job.every(key):
            try:
                kind, pattern = pathspec(p.value)
            except ValueError as e:
                raise p.error(str(e), "for example: ignore = Name *.tmp") from None
            try:
                pats = regex_patterns(pattern) if kind == "Regex" else glob_patterns(kind, pattern)
            except Untranslatable as e:
                job.drop(p, str(e))
                continue
            if kind == "BelowPath" and key == "ignorenot":
                pats += [q + "/**" for q in pats]  # the path and everything below, whatever else matches
            target += [q for q in pats if q not in target]
            lines.append((p, kind, pats))
            if kind == "Name" and any(set(alt) == {"*"} for alt in explode(pattern)):
                job.note(
                    p,
                    "it also matches the root: unison ignored the whole replica (its manual warns); "
                    "tether leaves out every name not starting with a dot",
                )
            if key == "ignorenot":
                job.origin |= dict.fromkeys(pats, p)
    job.exclude[:], merged = simplify(job.exclude)
    job.include[:], merged_in = simplify(job.include)
    for p, kind, pats in lines:
        table = merged if p.key == "ignore" else merged_in
        final = list(dict.fromkeys(table.get(q, q) for q in pats))
        verb = "exclude" if p.key == "ignore" else "include"
        if any(q in table for q in pats):
            why = "with the other lines for the same names: unison's leading * skips dot names, together they do not"
        elif kind == "Regex":
            why = "the regex is a plain glob"
        elif any("[!.]" in q for q in final):
            why = "unison's *, ? and [..] at the start of a name never match a leading dot"
        elif len(final) > 1:
            why = "one pattern per {..} alternative"
        else:
            continue
        job.note(p, f"{verb} {', '.join(final)} ({why})")
    if job.every("ignore"):
        job.note(
            "ignore",
            "exclude (gitignore-style: Name X matches at any depth, Path X is /X from the root; an excluded "
            "folder is not entered, as in unison)",
        )
    if job.every("ignorenot"):
        job.note("ignorenot", "include: tether applies every exclude, then every include, as unison's ignorenot")
    _paths(job)


def _paths(job: _Job) -> None:
    """Only these subtrees are synced: exclude everything at each level on the way down, include
    the way itself (tether applies all excludes, then all includes)."""
    prefs = job.every("path")
    if not prefs:
        return
    ignored = Filter.build(job.exclude, job.include)
    chosen: list[str] = []
    for p in prefs:
        rel = posixpath.normpath(p.value.strip("/")) if p.value.strip("/") else ""
        if p.value.startswith("/") or rel.split("/")[0] == "..":
            raise p.error(f"{p.value!r} must be relative to the roots", "for example: path = Documents/notes")
        if rel in ("", "."):
            job.note(p, "the whole replica: no rule needed")
            return
        if ignored.path_excluded(rel, False):
            job.drop(p, "an ignore pattern covers it, so unison never synced it either")
            continue
        chosen.append(rel)
    keep = sorted({r for r in chosen if not any(r.startswith(o + "/") for o in chosen)})
    parents = sorted({"/".join(r.split("/")[:i]) for r in keep for i in range(1, r.count("/") + 1)})
    tops = ["/" + _escape_glob(r) for r in keep]
    scoped = _scope_ignorenot(job, tops)
    esc = [_escape_glob(d) for d in parents]
    job.exclude += ["/*"] + [f"/{d}/*" for d in esc]
    job.include[:] = [f"/{d}/" for d in esc] + tops + [q for q in scoped if q not in tops]
    job.note(
        "path",
        f"only {', '.join(keep) or 'nothing'} synced: exclude /* (and the other names beside each folder on the "
        "way), include the way down; everything else stays untouched on both sides",
    )


def _scope_ignorenot(job: _Job, tops: list[str]) -> list[str]:
    """An include re-admits a path wherever it is; unison's ignorenot never reached past `path`, so
    each one is tied to the kept subtrees."""
    scoped: list[str] = []
    for q in job.include:
        if not q.startswith("/") or q.startswith("**/"):
            scoped += [f"{t}/**/{q.removeprefix('**/')}" for t in tops]
        elif any(q == t or q.startswith(t + "/") for t in tops):
            scoped.append(q)
        else:
            fixed = re.split(r"(?<!\\)[*?[]", q)[0]  # the literal start, up to the first wildcard
            inside = fixed != q and any(t.startswith(fixed) for t in tops)
            origin = job.origin.get(q)
            job.drop(
                f"{origin.label} (include {q})" if origin else f"include {q}",
                "with `path` set, tether cannot tie it to the synced subpaths (it starts with a wildcard)"
                if inside
                else "outside the `path` subpaths: it had no effect in unison either",
            )
    return scoped


def _prefer(job: _Job) -> None:
    p = job.last("prefer")
    if p is None:
        job.fields["conflict"] = "keep-both"
        job.note(
            "prefer (not set)",
            'conflict = "keep-both": unison left a conflict unsynced until you chose; tether keeps the newer '
            "version under the name and the other as NAME.conflict-HOST-TIME.EXT on both sides",
        )
        return
    value = p.value
    if value.lower() == "newer":
        job.fields["conflict"] = "newer"
        job.note(
            p,
            'conflict = "newer": the version with the later modification time wins, the other goes to that '
            "side's .tether/versions/; on equal times unison left the conflict, tether takes path1's; a change "
            "against a delete keeps the change in both. (Without times = true unison's times were those of "
            "its copies; tether always carries mtimes.)",
        )
        return
    if value.lower() == "older":
        job.fields["conflict"] = "keep-both"
        job.drop(p, 'tether has no "older" policy; conflict = "keep-both" keeps both versions instead')
        return
    root = _which_root(value, job.every("root"), job.specs)
    if root is None:
        raise p.error(
            f"{value!r} names neither root ({job.specs[0]}, {job.specs[1]})",
            "write one of the two roots exactly, or newer",
        )
    job.fields["conflict"] = f"path{root}"
    job.note(
        p,
        f'conflict = "path{root}": {job.specs[root - 1]} wins a conflict, the other side\'s version goes to its '
        ".tether/versions/; unlike unison, a change against a delete on that side is kept (never lost)",
    )


def _backups(job: _Job) -> None:
    """Unison's backups (opt-in) vs tether's (always on, in each replica's .tether/versions/)."""
    specs = job.every("backup", "mirror")
    legacy = job.last("backups")
    where = job.last("backuplocation", "backuploc")
    keep = job.last("maxbackups", "mirrorversions", "backupversions")
    legacy_on = legacy is not None and _bool(legacy)
    for p in specs:
        try:
            every = pathspec_all(p.value)
        except ValueError as e:
            raise p.error(str(e), "for example: backup = Name *") from None
        job.note(
            p,
            "tether keeps a version of every file it overwrites or deletes, in .tether/versions/"
            if every
            else "tether keeps versions of every file it overwrites or deletes, not only these",
        )
    if legacy is not None:
        job.note(
            legacy,
            "tether keeps versions of every file it overwrites or deletes (backups_keep), in .tether/versions/"
            if legacy_on
            else "unison kept no versions; tether always keeps some (backups_keep >= 1)",
        )
    if where is not None:
        job.note(where, "tether keeps the versions inside each replica, in .tether/versions/ (never synced)")
    if keep is not None:
        n = _int(keep)
        job.fields["backups_keep"] = max(1, n)
        job.note(keep, f"backups_keep = {max(1, n)}: versions kept per file" + (" (at least 1)" if n < 1 else ""))
    elif specs or legacy_on:
        job.fields["backups_keep"] = 2
        job.note("maxbackups (not set)", "backups_keep = 2, unison's default number of versions per file")
    else:
        job.note(
            "backup (not set)",
            "unison kept no old versions; tether keeps the last 10 of each file it overwrites or deletes in each "
            "replica's .tether/versions/ (backups_keep), purged after trash_days",
        )


def _flags(job: _Job) -> None:
    """Preferences whose meaning tether has by design: each gets a note saying what differs."""
    if (p := job.last("times")) is not None:
        job.note(
            p,
            "tether always carries modification times"
            if _bool(p)
            else "unison left a copy with the time of the copy; tether always carries modification times",
        )
    if (p := job.last("perms")) is not None:
        mask = _int(p)
        if mask == 0:
            text = (
                "unison synced no permission bits (a chmod stayed on its side); tether carries the mode: a "
                "chmod on one side reaches the other, and a copy takes its source's mode"
            )
        elif mask in (-1, 0o1777, 0o7777):
            text = "tether carries the mode of files and folders too"
        else:
            text = f"unison synced only the bits {mask:#o}; tether carries the whole mode"
        job.note(p, text)
    if (p := job.last("batch")) is not None:
        job.note(
            p,
            "tether never asks during a sync: changes go through, conflicts are settled by `conflict`"
            + ("" if _bool(p) else " (`tether sync NAME -n` shows the plan first)"),
        )
    if (p := job.last("auto")) is not None:
        _bool(p)
        job.note(p, "no equivalent needed: tether applies every non-conflicting change without asking")
    if (p := job.last("confirmbigdel", "confirmbigdeletes")) is not None:
        job.note(
            p,
            "tether stops a pass that would delete more than max_delete (50%) of a replica, or that finds a "
            "replica empty which held files (an unmounted disk); `--force` passes"
            + ("" if _bool(p) else " (unison would have gone ahead)"),
        )
    if (p := job.last("repeat")) is not None:
        _repeat(job, p)
    if (p := job.last("watch")) is not None:
        job.note(p, "`tether start NAME` watches both sides with inotify (the agent's on an ssh side)")
    if (p := job.last("log")) is not None:
        job.note(p, "one pass prints its summary (--json for scripts); `tether log NAME` shows a started job's log")
    if (p := job.last("links")) is not None:
        if p.value.lower() == "false":
            job.drop(p, "tether always syncs symlinks as links; exclude them by name to leave them out")
        else:
            job.note(p, "tether syncs symlinks as links (never followed)")
    if (p := job.last("fastcheck")) is not None:
        job.note(p, "tether checks type, size, mtime, mode and inode, and compares bytes where those cannot decide")
    if (p := job.last("rsync")) is not None:
        job.note(p, "tether sends big files with rsync (deltas), always")
    for p in job.every("mountpoint"):
        job.note(p, "tether stops when a replica is missing, or empty while its state held files (an unmounted disk)")
    if (p := job.last("copyonconflict")) is not None:
        job.note(p, "tether keeps a conflict's losing version in that side's .tether/versions/ (keep-both keeps both)")


def _repeat(job: _Job, p: Pref) -> None:
    m = re.fullmatch(r"(watch)?(?:\+?(\d+))?", p.value.strip().lower())
    if m is None or not (m.group(1) or m.group(2)):
        raise p.error(f"expects a number of seconds, watch or watch+SECONDS, not {p.value!r}")
    secs = int(m.group(2)) if m.group(2) else 0
    if secs:
        job.fields["interval"] = secs
    job.note(
        p,
        "run the job with `tether start NAME`: a pass on every change on either side (inotify)"
        + (f", and at least every {secs} s (interval)" if secs else ""),
    )
