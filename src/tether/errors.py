"""Errors a user can act on, each carrying the exit code it ends the command with.

Exit codes (see README): 0 done, 1 finished with errors, 2 bad usage or config,
3 conflicts left for the user, 4 another run holds the lock.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2
EXIT_CONFLICTS = 3
EXIT_LOCKED = 4


class TetherError(Exception):
    """A failure explained in one or two lines; the CLI prints it without a traceback."""

    code = EXIT_ERRORS

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(TetherError):
    """Bad command-line input: nothing was changed."""

    code = EXIT_USAGE


class ConfigError(UsageError):
    """A job file that does not validate; the message names file, line and key."""


class LockedError(TetherError):
    """Another process runs this job (or holds this replica)."""

    code = EXIT_LOCKED
