"""One status line on a terminal for transfers in flight, one entry per target."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO

from tether.output import human_bytes, shown


class ProgressLine:
    """Redrawn at most ten times a second; erased when done so results print cleanly."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.state: dict[str, tuple[int, int, str]] = {}
        self.lock = threading.Lock()
        self.last = 0.0

    def __call__(self, target: str, pct: int, done: int, rate: str) -> None:
        with self.lock:
            self.state[target] = (pct, done, rate)
            now = time.monotonic()
            if now - self.last < 0.1 and pct < 100:
                return
            self.last = now
            # the figures first: a long target name is what gets cut on a narrow terminal
            parts = [f"{p:3d}% {human_bytes(b)} {r} {shown(t)}" for t, (p, b, r) in self.state.items()]
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + " | ".join(parts)[:width].ljust(width))
            self.stream.flush()

    def close(self) -> None:
        with self.lock:
            if self.state:
                self.stream.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
                self.stream.flush()
