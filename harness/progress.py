"""A progress bar with an ETA on stderr, live under the log lines (rich), and absent where it is not a terminal."""
from __future__ import annotations

import atexit
import sys
import time


class Progress:
    """Redraws `label [#####.....] i/n ETA` at most every 0.2 s; silent when disabled or not on a terminal."""

    def __init__(self, total: int, label: str = "", enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        # Redrawing in place only makes sense on a terminal; in a log file it is noise.
        self.total, self.label = total, label
        self.enabled = enabled and self.stream.isatty()
        self.start = self.last = time.perf_counter()
        self.done = 0
        self._live = None

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
        self._draw(f"{self.label} [{bar}] {done}/{self.total} ETA ", f"{eta:5.1f}s", note)

    def _draw(self, plain: str, eta: str, note: str) -> None:
        from rich.text import Text  # only a terminal pays for rich
        text = Text.assemble(plain, (eta, "cyan"), " ", (note, "green"), no_wrap=True, overflow="ellipsis")
        if self._live is None:
            self._live = _start(self.stream, text)
            if self._live is None:
                self.enabled = False
        else:
            self._live.update(text, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()  # transient: the bar goes, the lines printed above it stay
            atexit.unregister(self._live.stop)
            self._live = None


def _start(stream, text):
    """A live display of text at the bottom of the terminal, with stdout and stderr printed above it."""
    from rich.console import Console
    from rich.errors import LiveError
    from rich.live import Live
    # Console reads NO_COLOR itself. stdout joins the terminal only when it is one: a redirected stdout keeps its lines.
    console = Console(file=stream, force_terminal=True, highlight=False)
    stdout_tty = getattr(sys.stdout, "isatty", lambda: False)()
    live = Live(text, console=console, auto_refresh=False, transient=True,  # no thread beside a timed loop
                redirect_stdout=stdout_tty, redirect_stderr=stream is sys.stderr)
    try:
        live.start(refresh=True)
    except LiveError:  # another bar is already live: draw none rather than fight over the lines
        return None
    atexit.register(live.stop)  # an exception past the caller must not leave the cursor hidden
    return live
