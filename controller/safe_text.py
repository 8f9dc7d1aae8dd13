"""Text a gateway (or any client) supplied, made fit for a terminal and for a log line.

A gateway is not trusted to write to the operator's terminal or to the controller's log: an escape
sequence would clear the screen or set the window title, a newline would forge a log line of its own,
a bidi override would make text read backwards. ``safe`` shows every such character as a visible
escape (``\\x1b``, ``\\n``, ``\\u202e``); everything printable, non-ASCII letters included, stays as it
is. One function, used by every CLI view (controller/cli_views.py) and every log line that carries
what a gateway sent (channel, SZTP, EST, the admin API).
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def safe(value: object, limit: int | None = None) -> str:
    """``value`` as text fit for a terminal or a log line: every character that is not printable (C0 and C1
    controls, DEL, format characters such as the bidi overrides U+202A-U+202E and U+2066-U+2069, line and
    paragraph separators, lone surrogates) escaped. None is "-". With ``limit``, the result is cut to that
    many characters (and says so with "...")."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit]  # before escaping: a huge input costs no more than its first part
        cut = True
    else:
        cut = False
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if limit is not None and len(text) > limit:
        text, cut = text[:limit], True
    return text + "..." if cut else text
