"""Pictures the commands share, drawn from plain numbers: Rich colours on a terminal, plain characters otherwise.

Every function takes ``fancy`` (from ``use_rich``): True gives styled Rich text,
False gives the same layout in plain characters, which prints with no escape codes.
Nothing here imports torch.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from rich.console import Console
from rich.style import Style
from rich.text import Text

from tinyshake.cli._output import no_color, use_rich, utf_output
from tinyshake.store.record import Evaluation

# =========================================================================== heatmaps, bars and scatters
# (inspect and demo: attention weights, next-character probabilities, embeddings)

SHADES = " .:-=+*#%@"  # plain cells, from weight 0 to weight 1
COLD, HOT = (24, 28, 64), (250, 196, 40)  # cell colours for weight 0 and weight 1
BAR_WIDTH = 40
VISIBLE = {"\n": "\u23ce", " ": "\u00b7", "\t": "\u21e5"}  # ⏎ · ⇥: characters you could not see otherwise


def visible(token: str) -> str:
    """A character or token as a label: newlines, spaces and tabs become symbols, so that a label never looks empty."""
    return "".join(VISIBLE.get(char, char) for char in token)


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
    """What the cells mean: a strip of colours, or the plain shade ramp (also on a terminal with ``NO_COLOR``)."""
    if not fancy or no_color():
        return Text(f"shades from 0 to 1 (square-root scale): {SHADES!r}")
    strip = [(" ", Style(bgcolor=blend(i / 10).bgcolor)) for i in range(11)]
    return Text.assemble("0 ", *strip, " 1 (square-root scale)")


def heatmap(matrix: Sequence[Sequence[float]], rows: Sequence[str], columns: Sequence[str], fancy: bool,
            cell: int = 2, title: str = "") -> Text:
    """A labelled grid of weights in [0, 1]: one line per row, ``cell`` characters per column.

    Labels of single characters (see :func:`visible`) head the columns, so the
    grid is as wide as one label plus ``cell`` per column. Tokens of several
    characters (a BPE's) do not fit a column: rows then carry their position
    and token, and the columns a ruler of positions (their last digit). Row i,
    column j is ``matrix[i][j]``. Cells are coloured on a colour terminal, and
    shades of characters otherwise: with ``NO_COLOR`` a coloured cell would be blank.
    """
    coloured = fancy and not no_color()
    row_labels, top = [visible(label) for label in rows], [visible(c).ljust(cell) for c in columns]
    if any(len(label) != 1 for label in (*rows, *columns)):
        row_labels = [f"{i:>2} {label}" for i, label in enumerate(row_labels)]
        top = [str(j % 10).ljust(cell) for j in range(len(columns))]
    width = max(len(label) for label in row_labels) if row_labels else 1
    lines = [Text(title, style="bold" if fancy else "")] if title else []
    lines.append(Text(" " * (width + 1) + "".join(top).rstrip(), style="dim" if fancy else ""))
    for label, row in zip(row_labels, matrix):
        line = Text(label.ljust(width) + " ", style="dim" if fancy else "")
        for weight in row:
            if coloured:
                line.append(" " * cell, style=Style(bgcolor=blend(weight).bgcolor))
            else:
                line.append(shade(weight) * cell)
        lines.append(line)
    return Text("\n").join(lines)


def bars(labels: Sequence[str], values: Sequence[float], fancy: bool, width: int = BAR_WIDTH) -> Text:
    """One line per value in [0, 1]: its label (padded to the longest), the value to 4 decimals, a bar ``width`` long at 1."""
    char, style = ("\u2588", "magenta") if fancy else ("#", "")
    lines = []
    longest = max((len(label) for label in labels), default=0)
    for label, value in zip(labels, values):
        length = round(min(1.0, max(0.0, value)) * width)
        lines.append(Text.assemble(f"{label:<{longest}} {value:.4f}", (" " + char * length, style) if length else ""))
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


# =========================================================================== token boundaries
# (inspect tokens and demo bpe: where a tokenizer cut a text)

TOKEN_STYLES = ("black on bright_cyan", "black on bright_yellow")  # alternate, so that neighbours stand apart
SEPARATOR = "|"  # between tokens where there is no colour


def token_pieces(pieces: Sequence[str], fancy: bool) -> Text:
    """A text cut into its tokens: alternating colours on a colour terminal, ``|`` between tokens otherwise.

    A newline inside a token shows as ⏎ before it breaks the line, so a token of
    newlines is never invisible; the text keeps its shape.
    """
    coloured = fancy and not no_color()
    out = Text()
    for index, piece in enumerate(pieces):
        if index and not coloured:
            out.append(SEPARATOR, style="dim" if fancy else "")
        shown = piece.replace("\n", VISIBLE["\n"] + "\n")
        out.append(shown, style=TOKEN_STYLES[index % 2] if coloured else "")
    return out


# =========================================================================== loss charts
#
# Line charts of loss against step, drawn with Rich itself: on a colour terminal with braille dots (2 x 4 per
# character cell) in one colour per curve; without colour (piped, NO_COLOR, TERM=dumb) with one plain marker
# character per curve, so the curves stay apart with no escape codes. Used by `train` (live, under the loss
# table), `runs show` and `plot`.

PALETTE = ("cyan", "magenta", "green", "yellow", "bright_blue", "red", "bright_white", "orange3", "purple",
           "chartreuse3", "deep_pink3", "grey62")
MARKERS = "*o+x#@%&=~^$"
_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row][col] within a cell
Y_TICKS = 4


@dataclass(frozen=True)
class Series:
    """One curve: its legend label and its (step, loss) points, in step order."""

    label: str
    points: Sequence[tuple[float, float]]


def plain_charts() -> bool:
    """Charts in marker characters, not coloured braille: piped, ``TERM=dumb``, ``NO_COLOR``, or an output
    encoding without braille (``PYTHONIOENCODING=ascii``).

    Braille curves are told apart by colour alone, so without colour they would be one tangle.
    """
    return not use_rich() or no_color() or not utf_output()


def loss_cell(value: Optional[float]) -> str:
    """A loss as a table shows it: four decimals, or a dash where there is none."""
    return "-" if value is None else f"{value:.4f}"


def metric_series(metrics: Iterable[Evaluation], split: str, label: str) -> Series:
    """A curve of ``split`` ("train" or "val") from a run's evaluations."""
    values = ((m.step, getattr(m, split)) for m in metrics)
    return Series(label, sorted((float(step), float(v)) for step, v in values if v is not None and math.isfinite(v)))


def _line(grid: dict[tuple[int, int], int], a: tuple[int, int], b: tuple[int, int], index: int) -> None:
    """Mark the grid points from a to b (Bresenham), so steep drops stay continuous."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        grid[(x0, y0)] = index
        if (x0, y0) == (x1, y1):
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def _tick(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def _step_label(value: float) -> str:
    return f"{value:,.0f}"


def line_chart(series: Sequence[Series], width: int, height: int, plain: bool, title: str = "") -> Text:
    """The curves as a Text of ``height`` plot rows plus axes and a legend, at most ``width`` cells wide.

    ``plain`` draws one marker character per curve and no styles, for output without colour.
    """
    drawn = [s for s in series if s.points]
    out = Text()
    if title:
        out.append(title + "\n", style="" if plain else "bold")
    if not drawn:
        return out.append("(no evaluations recorded yet)")
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    if x_hi == x_lo:
        x_hi = x_lo + 1
    ticks = [y_hi - (y_hi - y_lo) * i / (Y_TICKS - 1) for i in range(Y_TICKS)]
    label_width = max(len(_tick(t)) for t in ticks)
    columns = max(8, width - label_width - 2)
    rows = max(3, height)
    sub_x, sub_y = (1, 1) if plain else (2, 4)
    gw, gh = columns * sub_x, rows * sub_y

    def to_grid(x: float, y: float) -> tuple[int, int]:
        gx = round((x - x_lo) / (x_hi - x_lo) * (gw - 1))
        gy = round((y_hi - y) / (y_hi - y_lo) * (gh - 1))
        return gx, gy

    grid: dict[tuple[int, int], int] = {}
    for index, s in enumerate(drawn):
        points = [to_grid(x, y) for x, y in s.points]
        for a, b in zip(points, points[1:] or points):
            _line(grid, a, b, index)

    cells: dict[tuple[int, int], tuple[int, int]] = {}  # (column, row) -> (braille bits, curve drawn last)
    for (gx, gy), index in grid.items():
        key = (gx // sub_x, gy // sub_y)
        bits = 0 if plain else _BRAILLE_BITS[gy % sub_y][gx % sub_x]
        cells[key] = (cells.get(key, (0, index))[0] | bits, index)

    tick_rows = {round(i * (rows - 1) / (Y_TICKS - 1)): t for i, t in enumerate(ticks)}
    for row in range(rows):
        label = _tick(tick_rows[row]) if row in tick_rows else ""
        out.append(f"{label:>{label_width}} ┤" if row in tick_rows else f"{label:>{label_width}} │",
                   style="" if plain else "dim")
        for column in range(columns):
            cell = cells.get((column, row))
            if cell is None:
                out.append(" ")
            elif plain:
                out.append(MARKERS[cell[1] % len(MARKERS)])
            else:
                out.append(chr(0x2800 + cell[0]), style=PALETTE[cell[1] % len(PALETTE)])
        out.append("\n")
    axis_style = "" if plain else "dim"
    out.append(" " * label_width + " └" + "─" * columns + "\n", style=axis_style)
    left, middle, right = _step_label(x_lo), _step_label((x_lo + x_hi) / 2), _step_label(x_hi)
    gap = columns - len(left) - len(middle) - len(right)
    scale = left + " " * max(1, gap // 2) + middle + " " * max(1, gap - gap // 2) + right
    out.append(" " * (label_width + 2) + scale + "  step\n", style=axis_style)
    return out.append_text(_legend(drawn, label_width + 2, width, plain))


def _legend(drawn: Sequence[Series], indent: int, width: int, plain: bool) -> Text:
    """Each curve's marker (or colour) and label, as many to a line as fit in ``width`` cells."""
    out, used = Text(" " * indent), indent
    for index, s in enumerate(drawn):
        size = 3 + len(s.label)  # marker and its space, or the coloured "━━ "
        if used > indent and used + size > width:
            out.rstrip()
            out.append("\n" + " " * indent)
            used = indent
        if plain:
            out.append(f"{MARKERS[index % len(MARKERS)]} {s.label}")
        else:
            out.append("━━ ", style=PALETTE[index % len(PALETTE)]).append(s.label)
        out.append("   ")
        used += size + 3
    out.rstrip()
    return out


def chart_svg(chart: Text, title: str, width: int) -> str:
    """``chart`` drawn in colour on a recording console, as the SVG image of what it drew."""
    recorder = Console(record=True, width=width, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    recorder.print(chart)
    return recorder.export_svg(title=title)


def loss_chart(metrics: Sequence[Evaluation], width: int, height: int, plain: bool, title: str = "") -> Text:
    """A run's train and val curves from its evaluations: the chart of `train` and `runs show`."""
    return line_chart([metric_series(metrics, "train", "train"), metric_series(metrics, "val", "val")],
                      width, height, plain, title)
