"""Text from users (clinic names, usernames, spreadsheet cells) printed on a terminal.

A management command that prints such text as it is lets the text drive the operator's
terminal: an ANSI escape sequence in a CSV header cell can recolour, hide or rewrite
what the operator reads, or (on some terminals) set the window title or a hyperlink.
``safe`` replaces every control character (C0, DEL, C1 — ESC among them) and the Unicode
direction overrides with a visible ``\\xNN`` / ``\\uNNNN`` escape.
"""

from __future__ import annotations

import re

# C0 controls (newline and tab too: one message is one line), DEL, C1 controls, and the
# bidirectional embedding/override/isolate characters that reorder what is displayed.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object) -> str:
    """``text`` as a string with its control characters escaped, for terminal output."""
    return _UNSAFE.sub(_escape, str(text))
