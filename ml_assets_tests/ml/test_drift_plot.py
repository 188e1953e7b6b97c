"""The drift report's PNG (ml_assets.ml.drift_plot): panels, bar colours, the empty report."""

import io

from PIL import Image

from ml_assets.ml.drift import DriftReport, FeatureDrift
from ml_assets.ml.drift_plot import PANEL_WIDTH, RED, panels, plot_drift


def feature(name, kind, psi=None, wasserstein=None, js=None, drifted=False, note=""):
    statistic = "psi" if kind == "numeric" else "jensen_shannon"
    return FeatureDrift(name=name, kind=kind, statistic=statistic, psi=psi, wasserstein=wasserstein, js_distance=js,
                        p_value=None, n_reference=900, n_current=900, drifted=drifted,
                        threshold=0.2 if kind == "numeric" else 0.1, note=note)


def report(features):
    return DriftReport(features=features, drifted_share=sum(f.drifted for f in features) / len(features),
                       n_current=900)


def png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_a_panel_per_effect_size_with_the_drifted_bar_in_red():
    drifted = report([feature("distance", "numeric", psi=3.0, wasserstein=0.4, drifted=True),
                      feature("temp", "numeric", psi=0.01, wasserstein=0.02),
                      feature("carrier", "categorical", js=0.05)])
    titles = [title for title, _, _ in panels(drifted)]
    assert titles == ["PSI (numeric)", "Wasserstein / ref. std (numeric) - informational",
                      "JS distance, base 2 (categorical)"]
    image = png(plot_drift(drifted))
    assert image.width == 3 * PANEL_WIDTH
    red = tuple(int(RED[i:i + 2], 16) for i in (1, 3, 5))
    first_panel = image.crop((0, 0, PANEL_WIDTH, image.height))
    third_panel = image.crop((2 * PANEL_WIDTH, 0, 3 * PANEL_WIDTH, image.height))
    assert red in {c for _, c in first_panel.getcolors(1 << 16)}  # distance's PSI is over 0.2
    assert red not in {c for _, c in third_panel.getcolors(1 << 16)}  # carrier's JS is under 0.1


def test_nothing_judged_still_draws():
    empty = report([feature("distance", "numeric", note="too few rows")])
    assert panels(empty) == []
    assert png(plot_drift(empty)).width == PANEL_WIDTH


def test_kept_text_masks_draw_the_same_bytes_as_a_plain_font(monkeypatch):
    from PIL import ImageFont

    from ml_assets.ml import drift_plot

    days = [report([feature("distance", "numeric", psi=psi, wasserstein=psi / 3, drifted=psi >= 0.2),
                    feature("carrier", "categorical", js=psi / 2)]) for psi in (0.05, 0.31, 0.05, 1.7)]
    kept = [plot_drift(day) for day in days]  # later days reuse the masks of the first
    assert kept[0] == kept[2] and kept[0] != kept[1]
    monkeypatch.setattr(drift_plot, "_kept_masks_font", lambda: ImageFont.FreeTypeFont)
    drift_plot._font.cache_clear()
    try:
        assert [plot_drift(day) for day in days] == kept
    finally:
        drift_plot._font.cache_clear()
