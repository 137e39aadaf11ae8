"""Importers of other tools' configs (`tether import-config`): what one conversion produces."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Imported:
    """The tether config a foreign file becomes, and what could not be carried over (never quietly)."""

    jobs: dict[str, str] = field(default_factory=dict)  # job name -> TOML text of jobs/NAME.toml
    locations: str | None = None  # TOML text of locations.toml, or None
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (key, why it has no equivalent)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (key, how its meaning was translated)
