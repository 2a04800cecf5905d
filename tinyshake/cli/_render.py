"""Pictures the commands share, drawn from plain numbers: Rich colours on a terminal, plain characters otherwise.

Every function takes ``fancy`` (from ``use_rich``): True gives styled Rich text,
False gives the same layout in plain characters, which prints with no escape codes.
"""

from __future__ import annotations

from typing import Sequence

from rich.style import Style
from rich.text import Text

# =========================================================================== heatmaps, bars and scatters
# (inspect and demo: attention weights, next-character probabilities, embeddings)

SHADES = " .:-=+*#%@"  # plain cells, from weight 0 to weight 1
COLD, HOT = (24, 28, 64), (250, 196, 40)  # cell colours for weight 0 and weight 1
BAR_WIDTH = 40
VISIBLE = {"\n": "\u23ce", " ": "\u00b7", "\t": "\u21e5"}  # ⏎ · ⇥: characters you could not see otherwise


def visible(char: str) -> str:
    """A character as a label: newline, space and tab become symbols so that a row or column never looks empty."""
    return VISIBLE.get(char, char)


def level(weight: float) -> float:
    """Where a weight in [0, 1] sits on the colour and shade scales; the square root lifts small weights."""
    return min(1.0, max(0.0, weight)) ** 0.5


def shade(weight: float) -> str:
    """A weight as one plain character of :data:`SHADES`."""
    return SHADES[round(level(weight) * (len(SHADES) - 1))]


def blend(weight: float) -> Style:
    """A cell's colours for a weight: dark blue at 0, amber at 1, with text that stays readable on it."""
    lifted = level(weight)
    red, green, blue = (round(c + (h - c) * lifted) for c, h in zip(COLD, HOT))
    return Style(bgcolor=f"rgb({red},{green},{blue})", color="black" if weight > 0.5 else "white")


def legend(fancy: bool) -> Text:
    """What the cells mean: a strip of colours, or the plain shade ramp."""
    if not fancy:
        return Text(f"shades from 0 to 1 (square-root scale): {SHADES!r}")
    strip = [(" ", Style(bgcolor=blend(i / 10).bgcolor)) for i in range(11)]
    return Text.assemble("0 ", *strip, " 1 (square-root scale)")


def heatmap(matrix: Sequence[Sequence[float]], rows: Sequence[str], columns: Sequence[str], fancy: bool,
            cell: int = 2, title: str = "") -> Text:
    """A labelled grid of weights in [0, 1]: one line per row, ``cell`` characters per column.

    Labels are single characters (see :func:`visible`), so the grid is as wide as
    one label plus ``cell`` per column, and row i, column j is ``matrix[i][j]``.
    """
    lines = [Text(title, style="bold" if fancy else "")] if title else []
    lines.append(Text("  " + "".join(visible(c).ljust(cell) for c in columns).rstrip(), style="dim" if fancy else ""))
    for label, row in zip(rows, matrix):
        line = Text(visible(label) + " ", style="dim" if fancy else "")
        for weight in row:
            if fancy:
                line.append(" " * cell, style=Style(bgcolor=blend(weight).bgcolor))
            else:
                line.append(shade(weight) * cell)
        lines.append(line)
    return Text("\n").join(lines)


def bars(labels: Sequence[str], values: Sequence[float], fancy: bool, width: int = BAR_WIDTH) -> Text:
    """One line per value in [0, 1]: its label, the value to 4 decimals, a bar ``width`` long at 1."""
    char, style = ("\u2588", "magenta") if fancy else ("#", "")
    lines = []
    for label, value in zip(labels, values):
        length = round(min(1.0, max(0.0, value)) * width)
        lines.append(Text.assemble(f"{label} {value:.4f}", (" " + char * length, style) if length else ""))
    return Text("\n").join(lines)


def scatter(points: Sequence[tuple[float, float]], glyphs: Sequence[str], width: int, height: int,
            styles: Sequence[str] = ()) -> tuple[Text, int]:
    """Glyphs placed at their (x, y) on a ``width`` x ``height`` grid, y up; returns the picture and how many overlap.

    A glyph whose cell is taken goes to the nearest free cell on the same line
    (within two cells), so near neighbours stay readable; only glyphs with no
    room at all are left out and counted.
    """
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0 = min(xs), min(ys)
    x_span, y_span = (max(xs) - x0) or 1.0, (max(ys) - y0) or 1.0
    grid: list[list[tuple[str, str] | None]] = [[None] * width for _ in range(height)]
    hidden = 0
    for index, ((x, y), glyph) in enumerate(zip(points, glyphs)):
        column = round((x - x0) / x_span * (width - 1))
        line = height - 1 - round((y - y0) / y_span * (height - 1))
        free = [c for c in (column, column + 1, column - 1, column + 2, column - 2)
                if 0 <= c < width and grid[line][c] is None]
        if not free:
            hidden += 1
            continue
        grid[line][free[0]] = (glyph, styles[index] if index < len(styles) else "")
    text = Text("\n").join(
        Text.assemble(*((cell or (" ", "")) for cell in row)) for row in grid
    )
    return text, hidden
