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


def aligned(rows: list[list[str]] | list[tuple[str, ...]], right: set[int],
            indent: str = "  ") -> list[str]:
    """Rows of cells as lines of a terminal table: each column as wide as its widest cell, the
    columns in `right` aligned right (figures), the others left; made safe to print."""
    cells = [[safe(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    return [indent + "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in cells]
