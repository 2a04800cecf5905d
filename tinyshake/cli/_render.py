"""Shared CLI rendering: pictures that several commands draw, built from plain values the core returns.

Each section is self-contained. Nothing here imports torch.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.text import Text

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


def metric_series(metrics: Iterable[dict[str, Any]], split: str, label: str) -> Series:
    """A curve from a run's recorded metrics (``{"step", "train", "val", ...}`` rows) for ``split``."""
    points = [(float(m["step"]), float(m[split])) for m in metrics
              if isinstance(m.get(split), (int, float)) and math.isfinite(m[split])]
    return Series(label, sorted(points))


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
    out.append(" " * (label_width + 2))
    for index, s in enumerate(drawn):
        if plain:
            out.append(f"{MARKERS[index % len(MARKERS)]} {s.label}")
        else:
            out.append("━━ ", style=PALETTE[index % len(PALETTE)]).append(s.label)
        out.append("   ")
    out.rstrip()
    return out


def chart_svg(chart: Text, title: str, width: int) -> str:
    """``chart`` drawn in colour on a recording console, as the SVG image of what it drew."""
    recorder = Console(record=True, width=width, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    recorder.print(chart)
    return recorder.export_svg(title=title)


def loss_chart(metrics: Sequence[dict[str, Any]], width: int, height: int, plain: bool, title: str = "") -> Text:
    """A run's train and val curves from its metrics rows: the chart of `train` and `runs show`."""
    return line_chart([metric_series(metrics, "train", "train"), metric_series(metrics, "val", "val")],
                      width, height, plain, title)
