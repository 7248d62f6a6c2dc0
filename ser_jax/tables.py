"""Fixed-width text tables for the console: leading (name) columns left-aligned, the rest right-aligned."""

from __future__ import annotations

from collections.abc import Sequence


def format_row(cells: Sequence, widths: Sequence[int], *, left: int = 1) -> str:
    """One line; the first `left` columns are left-aligned (names), the others right-aligned (figures)."""
    return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))


def format_table(header: Sequence, rows: Sequence[Sequence], *, rule: bool = True, left: int = 1) -> list[str]:
    """The table's lines, each column as wide as its widest cell; `rule` draws dashes under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = [format_row(header, widths, left=left)]
    if rule:
        lines.append("  ".join("-" * w for w in widths))
    return lines + [format_row(r, widths, left=left) for r in rows]
