"""Tables that fit the terminal: columns are dropped, never cut, and no word or number is broken.

Rich squeezes a table that is too wide by wrapping its cells anywhere, even inside
a number (``431,`` / ``000``) or a name (``ladder-m…``). Here each column is
given a width that holds its longest number or name whole (free text may wrap
between words); when even that does not fit, the columns the caller can spare
are left out, one at a time, in the order it gave. Piped output is not fitted:
the plain console prints every column on one line a row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence, Union

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

Cell = Union[str, Text]


@dataclass(frozen=True)
class Col:
    """One column: its header, alignment, whether its text may wrap between words, and whether it may go."""

    header: str
    justify: Literal["left", "right"] = "right"
    wrap: bool = False  # free text: may wrap between words; otherwise each cell keeps to one line
    spare: int = 0  # 0: always shown; else left out on a narrow terminal, the highest first
    room: int = 0  # wrapping text is not squeezed below this (or its longest line) while a spare column can go


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def _longest_line(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


def _widths(col: Col, cells: Sequence[str]) -> tuple[int, int]:
    """The narrowest width that breaks nothing in the column, and the width that wraps nothing."""
    widest = max([_longest_line(c) for c in cells] + [_longest_line(col.header)])
    if col.wrap:
        narrowest = max([_longest_word(c) for c in cells] + [_longest_word(col.header), min(col.room, widest)])
    else:  # a cell stays whole; a header may wrap between its words
        narrowest = max([_longest_line(c) for c in cells] + [_longest_word(col.header)])
    return max(narrowest, 1), max(widest, 1)


def _extra(count: int, **table: Any) -> int:
    """Cells' padding and the borders between and around ``count`` columns (Rich's defaults: a box, one space)."""
    borders = count + 1 if table.get("box", True) is not None else 0
    return 2 * count + borders


def _choose(cols: Sequence[Col], needs: list[tuple[int, int]], width: int, **table: Any) -> list[int]:
    """The indices of the columns to show: all, less the spare ones (highest first) while they do not fit."""
    shown = list(range(len(cols)))
    spare = sorted((i for i, c in enumerate(cols) if c.spare), key=lambda i: (-cols[i].spare, -i))
    while sum(needs[i][0] for i in shown) + _extra(len(shown), **table) > width and spare:
        shown.remove(spare.pop(0))
    return shown


def _share(needs: list[tuple[int, int]], wrap: list[bool], room: int) -> list[int]:
    """Give each column its narrowest width, then the room left: first to whole cells, those that need least
    first (so that most headers keep to one line), then to wrapping text."""
    widths = [low for low, _ in needs]
    room -= sum(widths)
    order = sorted(range(len(needs)), key=lambda i: (wrap[i], needs[i][1] - needs[i][0]))
    for i in order:
        more = max(0, min(needs[i][1] - widths[i], room))
        widths[i] += more
        room -= more
    return widths


def fitted_table(console: Console, cols: Sequence[Col], rows: Sequence[Sequence[Cell]], **table: Any) -> Table:
    """A table of ``rows`` under ``cols`` that fits ``console``'s width without breaking a word or a number.

    ``table`` passes on to Rich's Table (title, box, ...). On a plain console
    (a pipe) every column is kept and no width is set.
    """
    texts = [[_plain(cell) for cell in column] for column in zip(*rows)] if rows else [[] for _ in cols]
    needs = [_widths(col, cells) for col, cells in zip(cols, texts)]
    fit = console.is_terminal
    shown = _choose(cols, needs, console.width, **table) if fit else list(range(len(cols)))
    if fit and sum(needs[i][0] for i in shown) + _extra(len(shown), **table) > console.width:
        # nothing left to spare: wrapping text gives up its room rather than a word being cut
        needs = [_widths(replace(col, room=0), cells) for col, cells in zip(cols, texts)]
    widths = _share([needs[i] for i in shown], [cols[i].wrap for i in shown],
                    console.width - _extra(len(shown), **table)) if fit else [None] * len(shown)
    out = Table(**table)
    for i, width in zip(shown, widths):
        col = cols[i]
        out.add_column(col.header, justify=col.justify, width=width)  # wide enough: nothing is cut
    for row in rows:
        out.add_row(*(row[i] for i in shown))
    return out
