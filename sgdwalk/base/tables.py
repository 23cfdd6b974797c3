"""Plain-text tables: columns as wide as their widest cell, two spaces apart.

One renderer for every table sgdwalk prints (a run's window summary, a sweep's cells, the
claims comparison and the pytest summary), so they line up the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

Alignment = Literal["left", "right"]
COLUMN_GAP: Final = "  "


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    align: Alignment | Sequence[Alignment] = "left",
    rule: bool = False,
) -> list[str]:
    """The table's lines: the header, a rule of dashes under it when asked, then the rows.

    ``align`` is one alignment for every column or one per column. Trailing spaces are cut,
    so a left-aligned last column is not padded.
    """
    alignments = [align] * len(header) if isinstance(align, str) else list(align)
    if len(alignments) != len(header):
        raise ValueError(f"{len(alignments)} alignments for {len(header)} columns")
    for number, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {number} has {len(row)} cells for {len(header)} columns")
    widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if alignment == "right" else cell.ljust(width)
            for cell, width, alignment in zip(cells, widths, alignments, strict=True)
        )
        return COLUMN_GAP.join(padded).rstrip()

    lines = [line(header)]
    if rule:
        lines.append(COLUMN_GAP.join("-" * width for width in widths))
    lines.extend(line(row) for row in rows)
    return lines


__all__ = ["Alignment", "COLUMN_GAP", "text_table"]
