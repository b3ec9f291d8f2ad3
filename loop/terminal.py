"""What the commands print on the terminal: one line per message (shared by ``cli`` and ``daemon``)."""

from __future__ import annotations


def one_line(message: str) -> str:
    """A message as one terminal line: newlines and other control characters (a file name may hold
    them) are escaped, the rest is kept as is."""
    return "".join(ch if ch.isprintable() or ch == "\t" else ascii(ch)[1:-1] for ch in message)
