"""A dependency-free progress bar with an ETA, drawn on stderr."""
from __future__ import annotations

import sys
import time


class Progress:
    """Redraws `label [#####.....] i/n ETA` at most every 0.2 s; silent when disabled or not on a terminal."""

    def __init__(self, total: int, label: str = "", enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        # Redrawing with \r only makes sense on a terminal; in a log file it is noise.
        self.total, self.label = total, label
        self.enabled = enabled and self.stream.isatty()
        self.start = self.last = time.perf_counter()
        self.done = 0

    def update(self, done: int, note: str = "") -> None:
        self.done = done
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.2 and done < self.total):
            return
        self.last = now
        frac = done / self.total if self.total else 1.0
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} ETA {eta:5.1f}s {note}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
