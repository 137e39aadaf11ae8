"""Questions on the terminal, and a refusal to guess when there is none.

A terminal is there when stdin is one (cron, CI and pipes have none, even if a
controlling terminal exists); questions and answers then go through /dev/tty so that a
listing piped into `less` does not swallow them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

from tether.errors import TetherError, UsageError


class NeedsAnswer(UsageError):
    """A question with no terminal to ask it on: stop before any change (exit 2)."""


class Stopped(TetherError):
    """The user chose to stop at a question: nothing more was changed (exit 1)."""


class Asker:
    def __init__(
        self, *, yes: bool = False, terminal: tuple[TextIO, TextIO] | None = None, silent: str | None = None
    ) -> None:
        self.yes = yes
        self.tty = terminal  # (read, write)
        self._opened: list[TextIO] = []
        # why there is nobody to ask, and what else the user can do
        self.nobody = f"{silent} asks nothing" if silent else "there is no terminal to ask"
        self.instead = f"run it without {silent}" if silent else "run it in a terminal"

    @classmethod
    def open(cls, *, yes: bool = False, silent: str | None = None) -> Asker:
        """`silent`: the flag (--quiet for cron, --json for scripts) by which nothing is asked,
        as if there were no terminal: a question is a refusal naming the flag that answers it."""
        if silent or not sys.stdin.isatty():
            return cls(yes=yes, silent=silent)
        try:
            read = open("/dev/tty", encoding="utf-8", errors="replace")  # noqa: SIM115
            write = open("/dev/tty", "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        except OSError:
            return cls(yes=yes, terminal=(sys.stdin, sys.stderr))
        asker = cls(yes=yes, terminal=(read, write))
        asker._opened = [read, write]
        return asker

    def close(self) -> None:
        for f in self._opened:
            with contextlib.suppress(OSError):
                f.close()

    def _write(self, text: str) -> None:
        assert self.tty is not None
        self.tty[1].write(text)
        self.tty[1].flush()

    def _ask(self, question: str) -> str:
        assert self.tty is not None
        sys.stdout.flush()
        self._write(question)
        line = self.tty[0].readline()
        if not line:  # end of input on the terminal: take it as "stop"
            raise Stopped("stopped: no answer (end of input)")
        return line.strip()

    def confirm(self, question: str, flag: str, why: str) -> bool:
        """A yes/no question, default no; `flag` answers it without a terminal."""
        if self.yes:
            return True
        if self.tty is None:
            raise NeedsAnswer(
                f"{why}, and {self.nobody}: nothing was changed",
                f"add {flag} to answer yes"
                + (" (or --yes for every question)" if flag != "--yes" else "")
                + f", or {self.instead}",
            )
        answer = self._ask(f"{question} [y/N] ").lower()
        return answer in ("y", "yes")

    def choose(self, question: str, options: Sequence[str], flag: str) -> int:
        """A numbered choice; --yes never picks a location, only `flag` does."""
        if self.tty is None or self.yes:
            listed = ", ".join(options)
            why = "--yes does not pick a location" if self.yes else "cannot ask: " + self.nobody.replace(" to ask", "")
            raise NeedsAnswer(f"{question} ({listed}): {why}", f"add {flag} LOCATION with one of: {listed}")
        lines = [question, *(f"  {i}) {o}" for i, o in enumerate(options, 1))]
        self._write("\n".join(lines) + "\n")
        while True:
            answer = self._ask(f"choose 1-{len(options)} (q to stop): ")
            if answer.lower() in ("q", "quit"):
                raise Stopped("stopped: nothing was changed")
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                return int(answer) - 1
