"""Exceptions as one line: a framework's error can run to a page, and a refusal or a report row is one line."""
from __future__ import annotations


def first_line(error: BaseException | str) -> str:
    """The first line of an exception's message (or of a text), surrounding white space removed; "" if blank."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def one_line(error: BaseException) -> str:
    """'Type: first line of the message', or the type's name alone when the message is blank."""
    line = first_line(error)
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
