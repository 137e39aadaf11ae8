"""tether: keep directories in sync, continuously and safely."""

__version__ = "0.1.0"
