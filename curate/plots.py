"""Figures as PNG bytes: the run report's bar charts drawn with Pillow, training curves with
matplotlib.

A pipeline run draws eight bar charts (funnel, removals, histograms, clusters, mixture,
tokenizer). With matplotlib they cost ~1 s of a 3,877-page run of ~22 CPU s: 0.3 s to import
pyplot, ~0.65 s to lay out and render the figures (``bench/RESULTS.md``, issue 19, sixth round).
:func:`hbar_png` and :func:`vbar_png` draw the same charts with Pillow in milliseconds, in
matplotlib's font (DejaVu Sans, from its data folder) and colours. Curves (the training report,
the sweep) stay with matplotlib: :func:`pyplot`, :func:`png_bytes`.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

BLUE, ORANGE, GREEN, RED = "#4c72b0", "#dd8452", "#55a868", "#c44e52"
INK, GRID, AXIS = "#262626", "#e5e5e5", "#808080"
WIDTH = 700  # pixels: the 7-inch, 100-dpi width the matplotlib figures had
PAD = 8
LOG_FLOOR = 0.5  # a log axis starts here: a bar of 1 is a third of a decade tall


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    """``fig`` laid out and saved as PNG bytes (no software stamp, so the same figure gives the
    same bytes), then closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    pyplot().close(fig)
    return buf.getvalue()


@cache
def font(size: int) -> Any:
    """DejaVu Sans at ``size`` pixels (the file matplotlib ships; not imported), else Pillow's
    own default font."""
    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.exists(path):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """0, then equal round steps (1, 2, 2.5 or 5 × 10^k) up to the first at or above ``high``."""
    if not high > 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return [i * step for i in range(math.ceil(high / step - 1e-9) + 1)]


def tick_label(value: float) -> str:
    """A tick's text: thousands separators for whole numbers, else up to 3 significant digits."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3g}"


def _finite(value: float) -> float:
    """A bar's length: negative, NaN and infinite values draw as no bar."""
    value = float(value)
    return value if math.isfinite(value) and value > 0 else 0.0


def _text_width(text: str, size: int) -> float:
    return font(size).getlength(text)


def _rotated_text(canvas: Any, xy: tuple[float, float], text: str, size: int, angle: float,
                  anchor: str) -> None:  # fmt: skip
    """``text`` turned ``angle`` degrees counter-clockwise, placed with its ``anchor`` corner
    (``"right-top"`` of the turned box, or ``"center"``) at ``xy``."""
    from PIL import Image, ImageDraw

    f = font(size)
    left, top, right, bottom = f.getbbox(text)
    stamp = Image.new("L", (int(right - left) + 2, int(bottom - top) + 2), 0)
    ImageDraw.Draw(stamp).text((1 - left, 1 - top), text, font=f, fill=255)
    stamp = stamp.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    x, y = xy
    if anchor == "center":
        box = (int(x - stamp.width / 2), int(y - stamp.height / 2))
    else:
        box = (int(x - stamp.width), int(y))
    canvas.paste(INK, box, mask=stamp)


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def hbar_png(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    xlabel: str,
    color: str = GREEN,
    notes: Sequence[str] | None = None,
) -> bytes:
    """Horizontal bars, the first label on top, with a value axis from 0 (round ticks and a
    grid); ``notes``: a text after each bar (the funnel's counts and shares)."""
    from PIL import Image, ImageDraw

    labels = [str(x) for x in labels]
    values = [_finite(v) for v in values]
    notes = list(notes) if notes is not None else []
    row = 28 if notes else 24
    left = PAD + max([_text_width(x, 11) for x in labels] or [0]) + 10
    right = PAD + 12 + max([_text_width(x, 10) for x in notes] or [0])
    width = max(WIDTH, int(left + right + 240))
    top, bottom = 34, 48
    height = top + row * max(len(labels), 1) + bottom
    plot = width - left - right
    ticks = nice_ticks(max(values, default=0))
    scale = plot / ticks[-1]
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    base = top + row * len(labels)
    for t in ticks:
        x = left + t * scale
        draw.line([(x, top), (x, base)], fill=GRID)
        draw.text((x, base + 5), tick_label(t), font=font(10), fill=INK, anchor="mt")
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        end = left + value * scale  # values are finite and >= 0 (_finite)
        if end > left:
            draw.rectangle([left, y + 4, end, y + row - 4], fill=color)
        draw.text((left - 6, y + row / 2), label, font=font(11), fill=INK, anchor="rm")
        if i < len(notes):
            draw.text((end + 6, y + row / 2), notes[i], font=font(10), fill=INK, anchor="lm")
    draw.line([(left, top), (left, base)], fill=AXIS)
    draw.line([(left, base), (left + plot, base)], fill=AXIS)
    draw.text((left + plot / 2, height - PAD), xlabel, font=font(11), fill=INK, anchor="md")
    draw.text((width / 2, PAD), title, font=font(13), fill=INK, anchor="mt")
    return _png(image)


def vbar_png(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    title: str,
    ylabel: str,
    xlabel: str = "",
    log: bool = False,
    colors: Sequence[str] = (BLUE, ORANGE, GREEN, RED),
) -> bytes:
    """Vertical bars, one group per label and one bar per series in it (a legend when there
    are several); ``log``: a log-scale value axis (ticks at powers of ten, bars from
    :data:`LOG_FLOOR`). Labels wider than their slot are turned 30 degrees."""
    from PIL import Image, ImageDraw

    labels = [str(x) for x in labels]
    names = list(series)
    columns = [[_finite(v) for v in series[name]] for name in names]
    high = max((v for col in columns for v in col), default=0.0)
    if log:
        ticks = [10.0**k for k in range(math.ceil(math.log10(max(high, 1.0)) - 1e-9) + 1)]
        ticks = ticks if len(ticks) > 1 else [1.0, 10.0]
    else:
        ticks = nice_ticks(high)
    tick_width = max(_text_width(tick_label(t), 10) for t in ticks)
    left = PAD + 18 + tick_width + 10
    slot_min = max([_text_width(x, 10) for x in labels] or [0]) + 6
    width = WIDTH if len(labels) >= 6 else max(int(left + PAD + 10 + 56 * len(labels)), 400)
    plot = width - left - PAD - 10
    slot = plot / max(len(labels), 1)
    turned = slot < slot_min
    label_height = max(_text_width(x, 10) for x in labels) * 0.5 + 14 if turned and labels else 16
    top = 34 + (18 if len(names) > 1 else 0)
    plot_height = 220
    base = top + plot_height
    height = int(base + 6 + label_height + (20 if xlabel else 4) + PAD)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def y_of(v: float) -> float:
        if log:  # the axis starts at half of 1, so that a count of 1 still shows a bar
            span = math.log10(ticks[-1] / LOG_FLOOR)
            return base - (math.log10(max(v, LOG_FLOOR) / LOG_FLOOR) / span) * plot_height
        return base - v / ticks[-1] * plot_height

    for t in ticks:
        y = y_of(t)
        draw.line([(left, y), (left + plot, y)], fill=GRID)
        draw.text((left - 5, y), tick_label(t), font=font(10), fill=INK, anchor="rm")
    bar = slot * 0.8 / max(len(names), 1)
    every = 1 if turned or slot >= slot_min else math.ceil(slot_min / slot)
    for i, label in enumerate(labels):
        x0 = left + i * slot + slot * 0.1
        for k, col in enumerate(columns):
            if i < len(col) and y_of(col[i]) < base:
                draw.rectangle(
                    [x0 + k * bar, y_of(col[i]), x0 + (k + 1) * bar - 1, base],
                    fill=colors[k % len(colors)],
                )
        centre = left + (i + 0.5) * slot
        if i % every:
            continue
        if turned:
            _rotated_text(image, (centre + 4, base + 4), label, 10, 30, "right-top")
        else:
            draw.text((centre, base + 5), label, font=font(10), fill=INK, anchor="mt")
    draw.line([(left, top), (left, base)], fill=AXIS)
    draw.line([(left, base), (left + plot, base)], fill=AXIS)
    _rotated_text(image, (PAD + 7, top + plot_height / 2), ylabel, 11, 90, "center")
    if xlabel:
        draw.text((left + plot / 2, height - PAD), xlabel, font=font(11), fill=INK, anchor="md")
    draw.text((width / 2, PAD), title, font=font(13), fill=INK, anchor="mt")
    if len(names) > 1:
        x = left + plot
        for k in reversed(range(len(names))):
            x -= _text_width(names[k], 10) + 6
            draw.text((x, 36), names[k], font=font(10), fill=INK, anchor="lm")
            x -= 14
            draw.rectangle([x, 31, x + 10, 41], fill=colors[k % len(colors)])
            x -= 10
    return _png(image)
