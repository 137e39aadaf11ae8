"""Reading bash-style `KEY=value` config files (MiMi, osync) without running them.

Both tools `source` their config into bash. Here the file is parsed instead: quotes, escapes,
comments and `$NAME` / `${NAME}` (from earlier keys, else the environment, as bash would) are
understood; anything that would run code (command substitution, pipes, a command after an
assignment) is a syntax error naming FILE:LINE, never executed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tether.errors import ConfigError
from tether.importers import Imported

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECTION = re.compile(r"\[[A-Za-z0-9_ .-]*\][ \t]*(?=\n|$)")
_BREAK = " \t\n;"
_SHELL_ONLY = "|&<>()"


@dataclass(frozen=True)
class Assignment:
    key: str
    value: str
    line: int
    expanded: tuple[str, ...] = ()  # variables the value took from elsewhere


class _Reader:
    def __init__(self, text: str, path: Path, env: Mapping[str, str]) -> None:
        self.text, self.path, self.env = text, path, env
        self.i = 0
        self.vars: dict[str, str] = {}

    def line(self, at: int | None = None) -> int:
        return self.text.count("\n", 0, self.i if at is None else at) + 1

    def error(self, message: str, hint: str | None = None, at: int | None = None) -> ConfigError:
        return ConfigError(f"{self.path}:{self.line(at)}: {message}", hint)

    def peek(self, n: int = 1) -> str:
        return self.text[self.i : self.i + n]

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.i)
        self.i = len(self.text) if end < 0 else end

    def statements(self, sections: bool) -> list[Assignment]:
        out: list[Assignment] = []
        n = len(self.text)
        while self.i < n:
            c = self.text[self.i]
            if c in " \t\n;":
                self.i += 1
            elif c == "#":
                self.skip_comment()
            elif sections and c == "[" and (m := _SECTION.match(self.text, self.i)):
                self.i = m.end()  # osync's [GENERAL] headers: osync greps them away, so do we
            else:
                out.append(self.assignment())
        return out

    def assignment(self) -> Assignment:
        start = self.i
        if self.text.startswith("export ", self.i):
            self.i += len("export ")
        m = _NAME.match(self.text, self.i)
        if not m or not self.text.startswith("=", m.end()):
            word = self.text[start:].split("\n", 1)[0].strip()
            raise self.error(
                f"not a KEY=value line: {word[:60]!r}", "the file is read, never run: only assignments are understood"
            )
        key = m.group()
        self.i = m.end() + 1
        value, expanded = self.word()
        rest = self.i
        while self.peek() in (" ", "\t"):
            self.i += 1
        if self.peek() not in ("", "\n", ";", "#"):
            raise self.error(
                f"{key}: something follows the value (quote a value holding spaces)",
                'write KEY="value with spaces"',
                at=rest,
            )
        self.vars[key] = value
        return Assignment(key, value, self.line(start), tuple(expanded))

    def word(self) -> tuple[str, list[str]]:
        parts: list[str] = []
        expanded: list[str] = []
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in _BREAK:
                break
            if c in _SHELL_ONLY or c == "`":
                raise self.error(f"{c!r} outside quotes is shell syntax", "the file is read, never run")
            if c == "'":
                end = self.text.find("'", self.i + 1)
                if end < 0:
                    raise self.error("a ' quote is never closed")
                parts.append(self.text[self.i + 1 : end])
                self.i = end + 1
            elif c == '"':
                parts.append(self.double_quoted(expanded))
            elif c == "\\":
                nxt = self.text[self.i + 1 : self.i + 2]
                parts.append("" if nxt == "\n" else nxt)
                self.i += 2
            elif c == "$":
                parts.append(self.dollar(expanded))
            else:
                parts.append(c)
                self.i += 1
        return "".join(parts), expanded

    def double_quoted(self, expanded: list[str]) -> str:
        opened = self.i
        self.i += 1
        parts: list[str] = []
        while True:
            if self.i >= len(self.text):
                raise self.error('a " quote is never closed', at=opened)
            c = self.text[self.i]
            if c == '"':
                self.i += 1
                return "".join(parts)
            if c == "\\" and self.text[self.i + 1 : self.i + 2] in ('"', "\\", "$", "`", "\n"):
                nxt = self.text[self.i + 1]
                parts.append("" if nxt == "\n" else nxt)
                self.i += 2
            elif c == "$":
                parts.append(self.dollar(expanded))
            elif c == "`":
                raise self.error("command substitution (`...`) is not run", "write the value out")
            else:
                parts.append(c)
                self.i += 1

    def dollar(self, expanded: list[str]) -> str:
        """$NAME or ${NAME}: an earlier key of the file, else the environment, else empty (as bash)."""
        nxt = self.text[self.i + 1 : self.i + 2]
        if nxt == "(":
            raise self.error("command substitution $(...) is not run", "write the value out")
        if nxt == "{":
            m = _NAME.match(self.text, self.i + 2)
            if not m or not self.text.startswith("}", m.end()):
                raise self.error("only ${NAME} is understood in a value", "write the value out")
            name, self.i = m.group(), m.end() + 1
        else:
            m = _NAME.match(self.text, self.i + 1)
            if not m:
                self.i += 1
                return "$"  # a lone $ is literal in bash too
            name, self.i = m.group(), m.end()
        expanded.append(name)
        return self.vars.get(name, self.env.get(name, ""))


def read(text: str, path: Path, *, sections: bool = False, env: Mapping[str, str] | None = None) -> list[Assignment]:
    """Every assignment in file order; `sections` skips osync's `[SECTION]` header lines."""
    return _Reader(text, path, os.environ if env is None else env).statements(sections)


def settle(assignments: list[Assignment], imp: Imported) -> dict[str, Assignment]:
    """The value of each key as bash ends up with it (the last assignment wins), noting what
    was expanded or assigned twice, so that no reading of the file goes unsaid."""
    final: dict[str, Assignment] = {}
    for a in assignments:
        if a.key in final:
            imp.note(a.key, f"set again on line {a.line}: the last value counts, as in bash")
        final[a.key] = a
    for a in final.values():
        if a.expanded:
            names = ", ".join("$" + n for n in a.expanded)
            imp.note(a.key, f"{names} expanded as bash would: {a.value!r}")
    return final


TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off", "")


def boolean(path: Path, a: Assignment) -> bool:
    v = a.value.strip().lower()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    raise ConfigError(f"{path}:{a.line}: {a.key} must be true or false, not {a.value!r}")


def integer(path: Path, a: Assignment) -> int:
    v = a.value.strip()
    if not re.fullmatch(r"\d+", v or "0"):
        raise ConfigError(f"{path}:{a.line}: {a.key} must be a whole number, not {a.value!r}")
    return int(v or "0")
