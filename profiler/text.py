"""Text that came from a run (names, a remote worker's messages), made fit for a terminal."""

from __future__ import annotations

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
_CONTROL.update({c: f"\\u{c:04x}" for c in range(0x80, 0xA0)})
_CONTROL.update({0x2028: "\\u2028", 0x2029: "\\u2029", 0x202E: "\\u202e"})


def safe(text: object, keep_newlines: bool = False) -> str:
    """Text from a run or a worker, fit to print: escape sequences (ESC, CSI, bells, bidi
    overrides) are shown as \\x.. instead of reaching the terminal."""
    table = dict(_CONTROL)
    if keep_newlines:
        table.pop(0x0A)
    return str(text).translate(table)
