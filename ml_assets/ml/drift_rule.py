"""Whether a day has drifted, from its per-feature verdicts (ml_assets.ml.drift): the dataset rule.

Three readings of the same ``DriftReport`` (spec ``monitoring.drift``):

* ``weighting="count"``: the share of counted features that drifted (Evidently's ``drift_share``).
  Every feature weighs the same, so a shift in the one feature a model leans on (1 of 10: 10 %)
  goes unseen under a 50 % bar, while several features the model ignores can raise it.
* ``weighting="importance"``: each counted feature weighs its share of the champion's permutation
  importance (ml_assets.ml.importance); the day's figure is the share of the model's importance
  that drifted. A shift in the features that carry the predictions counts; one in unused features
  barely does.
* ``any_of_top=k`` (with either weighting): the day has drifted also when any of the k most
  important counted features drifted (needs importances).

The share is compared with ``share_threshold`` (``>=``). Features not judged (too few values) count
as not drifted, as in the report's own share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ml_assets.ml.drift import DriftReport
from ml_assets.ml.importance import weights as importance_weights

Weighting = Literal["count", "importance"]


@dataclass(frozen=True)
class DatasetDrift:
    drifted: bool
    share: float  # the share compared with the threshold (count or importance)
    summary: str
    weights: dict[str, float] = field(default_factory=dict)  # per counted feature, summing to 1
    top_drifted: list[str] = field(default_factory=list)  # drifted among the any_of_top most important


def judge(report: DriftReport, *, share_threshold: float, weighting: Weighting = "count",
          importance: dict[str, float] | None = None, any_of_top: int = 0) -> DatasetDrift:
    """The day's dataset verdict; ``importance`` (feature -> importance) is needed by ``weighting="importance"``
    and ``any_of_top``."""
    if weighting not in ("count", "importance"):
        raise ValueError(f"weighting must be count or importance, not {weighting!r}")
    if not 0 < share_threshold <= 1:
        raise ValueError(f"share_threshold must be in (0, 1], not {share_threshold}")
    if any_of_top < 0:
        raise ValueError(f"any_of_top must be at least 0, not {any_of_top}")
    if (weighting == "importance" or any_of_top) and importance is None:
        raise ValueError("the importance-weighted drift rule (weighting=importance or any_of_top) needs the "
                         "champion's feature importance")
    counted = report.counted_features
    drifted = set(report.drifted_features)
    if weighting == "importance":
        shares = importance_weights(importance, counted)
    else:
        shares = {name: 1.0 / len(counted) for name in counted} if counted else {}
    share = min(sum(w for name, w in shares.items() if name in drifted), 1.0)
    top: list[str] = []
    if any_of_top:
        ranked = sorted(counted, key=lambda name: (-importance.get(name, 0.0), name))[:any_of_top]
        top = [name for name in ranked if name in drifted]
    flagged = share >= share_threshold or bool(top)
    what = " of importance" if weighting == "importance" else ""  # count: the wording reports always had
    summary = (f"{len(drifted)}/{len(counted)} features drifted ({share:.0%}{what} "
               f"{'>=' if share >= share_threshold else '<'} {share_threshold:.0%})")
    if any_of_top:
        summary += f"; top {any_of_top} by importance: " + (", ".join(top) + " drifted" if top else "none drifted")
    return DatasetDrift(drifted=flagged, share=share, summary=summary, weights=shares, top_drifted=top)
