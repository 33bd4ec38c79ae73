"""Number formats shared by every view, so a value reads the same in Markdown, HTML and compare."""
from __future__ import annotations

DASH = "—"


def ms(v) -> str:
    """Milliseconds to two decimals: 6.71."""
    return DASH if v is None else f"{v:,.2f}"


def seconds(v, digits: int = 2) -> str:
    """Seconds to a fixed number of decimals, the same for a whole column: 6.30."""
    return DASH if v is None else f"{v:,.{digits}f}"


def count(v) -> str:
    """A whole number with thousands separators: 9,538."""
    return DASH if v is None else f"{v:,.0f}"


def percent(v) -> str:
    """A fraction as a percentage to two decimals: 98.71%."""
    return DASH if v is None else f"{100 * v:.2f}%"


def sci(v) -> str:
    """Scientific with two significant figures: 6.8e-07."""
    return DASH if v is None else f"{v:.1e}"


def thousands(n) -> str:
    """A parameter count the way the course writes it: 109K."""
    return DASH if n is None else (f"{n / 1000:.0f}K" if n >= 1000 else str(n))


def one_line(text) -> str:
    """The first line of an error, so a traceback cannot break a table."""
    lines = str(text or "error").strip().splitlines()
    return lines[0] if lines else "error"
