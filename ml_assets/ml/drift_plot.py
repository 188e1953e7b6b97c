"""The drift report's PNG: one panel per effect size, a bar per feature, the threshold as a dashed line.

Drawn with Pillow (matplotlib's DejaVu Sans for the text) rather than matplotlib: the feature_drift
asset draws one per day, and a matplotlib figure with its layout pass cost 0.3-1 s each (a third of
the demo's monitoring time); this costs a few milliseconds for the same panels, bars, colours,
threshold lines and titles.
"""

from __future__ import annotations

import io
import math
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_assets.ml.drift import DriftReport

PANELS = (
    ("psi", "psi", "PSI (numeric)"),
    ("wasserstein", "wasserstein", "Wasserstein / ref. std (numeric)"),
    ("js_distance", "jensen_shannon", "JS distance, base 2 (categorical)"),
)
RED, BLUE, GRID, INK, WHITE = "#d62728", "#1f77b4", "#e6e6e6", "#000000", "#ffffff"
PANEL_WIDTH, ROW_HEIGHT, TOP, BOTTOM, GAP = 414, 25, 58, 40, 24  # pixels (4.6 in per panel at 90 dpi)


@cache
def _font(size: int):
    import matplotlib
    from PIL import ImageFont

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return _kept_masks_font()(str(path), size) if path.is_file() else ImageFont.load_default(size)


@cache
def _kept_masks_font() -> type:
    """A FreeType font that keeps what it rendered and measured: every day's plot draws the same feature
    names, titles and most tick labels again. Pure functions of their arguments (text, the position's
    fraction, anchor, ...), so the pixels are the same; the drawing only reads the masks."""
    from PIL import ImageFont

    def kept(method):
        def call(self, *args, **kwargs):
            key = (method.__name__, args, tuple(sorted(kwargs.items())))
            try:
                return self.kept[key]
            except KeyError:
                pass
            except TypeError:  # an unhashable argument (a features list): not kept
                return method(self, *args, **kwargs)
            if len(self.kept) >= 4096:
                self.kept.clear()
            self.kept[key] = value = method(self, *args, **kwargs)
            return value

        return call

    class KeptMasks(ImageFont.FreeTypeFont):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.kept: dict = {}

        getmask2 = kept(ImageFont.FreeTypeFont.getmask2)
        getlength = kept(ImageFont.FreeTypeFont.getlength)
        getbbox = kept(ImageFont.FreeTypeFont.getbbox)

    return KeptMasks


def panels(report: DriftReport) -> list[tuple[str, list[tuple[str, float]], float]]:
    """(title, [(feature, value)], threshold) of each effect size some feature has; a panel whose
    statistic decided no verdict (e.g. Wasserstein under the default PSI rule) says "informational"."""
    deciding = {f.statistic for f in report.features if f.note == ""}
    if report.thresholds.numeric_rule == "either" and any(f.kind == "numeric" for f in report.features):
        deciding |= {"psi", "wasserstein"}
    out = []
    for attr, statistic, title in PANELS:
        rows = [(f.name, getattr(f, attr)) for f in report.features if getattr(f, attr) is not None]
        if rows:
            suffix = "" if statistic in deciding else " - informational"
            out.append((title + suffix, rows, getattr(report.thresholds, attr)))
    return out


def _ticks(upper: float) -> list[float]:
    """About five round tick values from 0 to `upper`."""
    raw = upper / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(upper / step) + 1)]


def _dashed(draw, x: float, top: float, bottom: float) -> None:
    y = top
    while y < bottom:
        draw.line([(x, y), (x, min(y + 5, bottom))], fill=INK, width=1)
        y += 8


def plot_drift(report: DriftReport) -> bytes:
    """PNG: one panel per effect size, a bar per feature (red at or over the panel's threshold), the
    threshold as a dashed line. Features that were not judged have no bar."""
    from PIL import Image, ImageDraw

    drawn = panels(report)
    rows_max = max([len(rows) for _, rows, _ in drawn] or [1])
    label, small, title_font = _font(11), _font(10), _font(12)
    names = [name for _, rows, _ in drawn for name, _ in rows]
    label_width = int(max([label.getlength(n) for n in names] or [0])) + 10
    width = PANEL_WIDTH * max(len(drawn), 1)
    height = TOP + BOTTOM + ROW_HEIGHT * rows_max
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    heading = (f"Feature drift: {len(report.drifted_features)}/{len(report.counted_features)} counted features "
               f"drifted, {report.n_current} current rows")
    draw.text((width / 2, 8), heading, fill=INK, font=_font(13), anchor="mt")
    if not drawn:
        draw.text((width / 2, height / 2), "no feature could be judged", fill=INK, font=label, anchor="mm")
    for index, (title, rows, threshold) in enumerate(drawn):
        left = index * PANEL_WIDTH + label_width + 6
        right = (index + 1) * PANEL_WIDTH - GAP
        bottom = TOP + ROW_HEIGHT * len(rows)
        upper = max([*(v for _, v in rows), threshold]) * 1.15 or 1.0
        scale = (right - left) / upper
        draw.text(((left + right) / 2, TOP - 24), title, fill=INK, font=title_font, anchor="mt")
        for tick in _ticks(upper):
            x = left + tick * scale
            draw.line([(x, TOP), (x, bottom)], fill=GRID, width=1)
            draw.text((x, bottom + 4), f"{tick:g}", fill=INK, font=small, anchor="mt")
        for row, (name, value) in enumerate(rows):
            y = TOP + ROW_HEIGHT * row
            draw.rectangle([left, y + 4, left + max(value * scale, 1), y + ROW_HEIGHT - 4],
                           fill=RED if value >= threshold else BLUE)
            draw.text((left - 6, y + ROW_HEIGHT / 2), name, fill=INK, font=label, anchor="rm")
        x = left + threshold * scale
        _dashed(draw, x, TOP, bottom)
        draw.text((right, bottom + 18), f"- - threshold {threshold:g}", fill=INK, font=small, anchor="rt")
        draw.rectangle([left, TOP, right, bottom], outline=INK, width=1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()
