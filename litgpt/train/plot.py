"""The loss-curve PNG written at the end of a run, drawn without a plotting library.

A small raster canvas (RGB bytes), lines, a 5x7 bitmap font for the labels, and a PNG encoder
(zlib + CRC chunks). Enough for train and validation loss against optimizer steps.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence

from litgpt.utils import atomic_path

# 5x7 glyphs, rows top to bottom, '#' = ink. Lowercase only: labels are lowercased before drawing.
_GLYPHS = {
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.", "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####", "3": "####.|....#|....#|.###.|....#|....#|####.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.", "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.", "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.", "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    ".": ".....|.....|.....|.....|.....|.##..|.##..", "-": ".....|.....|.....|#####|.....|.....|.....",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....", ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.", ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "=": ".....|.....|#####|.....|#####|.....|.....", "/": "....#|...#.|...#.|..#..|.#...|.#...|#....",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....", "_": ".....|.....|.....|.....|.....|.....|#####",
    "a": ".....|.....|.###.|....#|.####|#...#|.####", "b": "#....|#....|####.|#...#|#...#|#...#|####.",
    "c": ".....|.....|.###.|#....|#....|#....|.###.", "d": "....#|....#|.####|#...#|#...#|#...#|.####",
    "e": ".....|.....|.###.|#...#|#####|#....|.###.", "f": "..##.|.#...|###..|.#...|.#...|.#...|.#...",
    "g": ".....|.####|#...#|#...#|.####|....#|.###.", "h": "#....|#....|####.|#...#|#...#|#...#|#...#",
    "i": "..#..|.....|.##..|..#..|..#..|..#..|.###.", "j": "...#.|.....|..##.|...#.|...#.|#..#.|.##..",
    "k": "#....|#....|#..#.|#.#..|##...|#.#..|#..#.", "l": ".##..|..#..|..#..|..#..|..#..|..#..|.###.",
    "m": ".....|.....|##.#.|#.#.#|#.#.#|#.#.#|#.#.#", "n": ".....|.....|####.|#...#|#...#|#...#|#...#",
    "o": ".....|.....|.###.|#...#|#...#|#...#|.###.", "p": ".....|####.|#...#|#...#|####.|#....|#....",
    "q": ".....|.####|#...#|#...#|.####|....#|....#", "r": ".....|.....|#.##.|##..#|#....|#....|#....",
    "s": ".....|.....|.####|#....|.###.|....#|####.", "t": ".#...|.#...|###..|.#...|.#...|.#..#|..##.",
    "u": ".....|.....|#...#|#...#|#...#|#..##|.##.#", "v": ".....|.....|#...#|#...#|#...#|.#.#.|..#..",
    "w": ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.", "x": ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#",
    "y": ".....|#...#|#...#|#...#|.####|....#|.###.", "z": ".....|.....|#####|...#.|..#..|.#...|#####",
}
_FONT = {ch: [row for row in rows.split("|")] for ch, rows in _GLYPHS.items()}

BLUE, ORANGE = (31, 119, 180), (230, 110, 0)
GRID, AXIS, TEXT, WHITE = (225, 225, 225), (60, 60, 60), (30, 30, 30), (255, 255, 255)


class Canvas:
    """An RGB image in memory with the few drawing operations the plot needs."""

    def __init__(self, width: int, height: int, background: tuple[int, int, int] = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        """Fills the rectangle [x0, x1] x [y0, y1]."""
        for y in range(max(0, y0), min(self.height, y1 + 1)):
            for x in range(max(0, x0), min(self.width, x1 + 1)):
                i = 3 * (y * self.width + x)
                self.pixels[i : i + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int], width: int = 1) -> None:
        """Bresenham line, `width` pixels thick."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        lo, hi = -((width - 1) // 2), width // 2
        while True:
            for ox in range(lo, hi + 1):
                for oy in range(lo, hi + 1):
                    self.set(x0 + ox, y0 + oy, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, s: str, color: tuple[int, int, int] = TEXT, scale: int = 2) -> None:
        """Draws `s` with its top-left corner at (x, y); unknown characters are blank."""
        for ch in s.lower():
            glyph = _FONT.get(ch)
            if glyph is not None:
                for row, bits in enumerate(glyph):
                    for col, bit in enumerate(bits):
                        if bit == "#":
                            self.rect(x + col * scale, y + row * scale, x + col * scale + scale - 1,
                                      y + row * scale + scale - 1, color)
            x += 6 * scale

    @staticmethod
    def text_width(s: str, scale: int = 2) -> int:
        return 6 * scale * len(s) - scale

    def png(self) -> bytes:
        """The image encoded as PNG (8-bit RGB, no filtering)."""
        stride = 3 * self.width
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _tick_label(value: float, step: float) -> str:
    if abs(value) >= 10000 and float(value).is_integer():
        return f"{value / 1000:g}k"
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def plot_losses(
    train: Sequence[tuple[int, float]],
    val: Sequence[tuple[int, float]],
    path: Path,
    title: str = "loss",
    width: int = 900,
    height: int = 520,
) -> Optional[Path]:
    """Writes a PNG of train (blue line) and validation (orange line with dots) loss against steps.

    Args:
        train: (step, loss) points of the training loss.
        val: (step, loss) points of the validation loss.
        path: the PNG to write (atomically).
        title: text above the plot.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        `path`, or None when there is nothing to plot.
    """
    train = [(s, v) for s, v in train if math.isfinite(v)]
    val = [(s, v) for s, v in val if math.isfinite(v)]
    points = train + val
    if not points:
        return None
    canvas = Canvas(width, height)
    left, right, top, bottom = 90, width - 30, 50, height - 60
    x_lo, x_hi = min(s for s, _ in points), max(s for s, _ in points)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = min(v for _, v in points), max(v for _, v in points)
    pad = (y_hi - y_lo) * 0.05 or max(abs(y_hi) * 0.05, 0.1)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(step: float) -> int:
        return round(left + (step - x_lo) / (x_hi - x_lo) * (right - left))

    def py(value: float) -> int:
        return round(bottom - (value - y_lo) / (y_hi - y_lo) * (bottom - top))

    y_ticks = nice_ticks(y_lo, y_hi)
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    for t in y_ticks:
        canvas.line(left, py(t), right, py(t), GRID)
        label = _tick_label(t, y_step)
        canvas.text(left - 8 - canvas.text_width(label), py(t) - 7, label)
    x_ticks = [t for t in nice_ticks(x_lo, x_hi) if x_lo <= t <= x_hi]
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    for t in x_ticks:
        canvas.line(px(t), top, px(t), bottom, GRID)
        label = _tick_label(t, x_step)
        canvas.text(px(t) - canvas.text_width(label) // 2, bottom + 10, label)
    canvas.line(left, bottom, right, bottom, AXIS, 2)
    canvas.line(left, top, left, bottom, AXIS, 2)
    canvas.text(left, 16, title)
    canvas.text((left + right) // 2 - canvas.text_width("step") // 2, height - 26, "step")

    for series, color in ((train, BLUE), (val, ORANGE)):
        coords = [(px(s), py(v)) for s, v in series]
        for (x0, y0), (x1, y1) in zip(coords, coords[1:]):
            canvas.line(x0, y0, x1, y1, color, 2)
        if color == ORANGE or len(coords) == 1:
            for x, y in coords:
                canvas.rect(x - 3, y - 3, x + 3, y + 3, color)

    legend_x = right - 190
    for i, (label, color, series) in enumerate((("train loss", BLUE, train), ("val loss", ORANGE, val))):
        if series:
            y = top + 12 + 24 * i
            canvas.rect(legend_x, y + 4, legend_x + 24, y + 8, color)
            canvas.text(legend_x + 34, y, label)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(canvas.png())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    return path
