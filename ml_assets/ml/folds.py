"""Rolling-origin folds, and choosing among candidate frameworks on their pooled fold predictions.

Fold j (0 = the latest) validates on the ``holdout_days`` ending ``j * holdout_days`` before
as_of and trains on the ``window_days`` before its own validation days, so every fold's training
days end before its validation days (no look-ahead). The latest fold is the window the published
model trains on; earlier folds' models are refits that only judge which framework generalises
(a single 7-day holdout can be unrepresentative: one week of 2013 scored every model at 0.51-0.63
while the week after scored ~0.71).

Selection applies the gate's criterion to the pooled validation rows of all folds: the paired
difference of the metric (DeLong or the bootstrap, as the promotion spec says) between the
candidates on the same rows. The candidate with the best pooled estimate is chosen; whether its
lead is established at the spec's confidence is recorded next to it.

The gate judges on the same pooled rows (:func:`pool_folds`): the chosen configuration's model of
each fold and the baseline refitted on each fold, against the champion - a fixed model - scored on
every fold's rows it did not train on (bench/bench_decisions.py measures both judgements against
the following unseen week: "judged_vs_future").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_assets.ml.training_set import TrainingWindow, choose_window
from ml_assets.spec.model import PromotionSpec

if TYPE_CHECKING:
    import numpy as np

# numpy/pandas are imported inside the functions: the code location imports this module.
__all__ = ["FoldScores", "Pooled", "Selection", "earlier_fold_frames", "fold_of_day", "frame_folds", "pool_folds",
           "rolling_folds", "select_candidate", "unseen_scores"]


def rolling_folds(labelled_days: list[str], as_of: str | None, window_days: int, holdout_days: int, k: int,
                  min_train_days: int = 7) -> list[TrainingWindow]:
    """The ``k`` rolling-origin folds ending at as_of, oldest first (the last one is the published window)."""
    if k < 1:
        raise ValueError(f"training.folds.k must be at least 1, got {k}")
    if not labelled_days:
        raise ValueError("no labelled days: materialize features and labels first")
    end = dt.date.fromisoformat(as_of or labelled_days[-1])
    folds = []
    for j in reversed(range(k)):
        fold_end = (end - dt.timedelta(days=j * holdout_days)).isoformat()
        try:
            folds.append(choose_window(labelled_days, fold_end, window_days, holdout_days, min_train_days))
        except ValueError as exc:
            raise ValueError(f"fold {k - j} of {k} (validation ending {fold_end}): {exc}") from exc
    return folds


def fold_of_day(folds: list[TrainingWindow]) -> dict[str, int]:
    """Validation day -> index of its fold in ``folds`` (validation days never overlap)."""
    owner: dict[str, int] = {}
    for index, fold in enumerate(folds):
        for day in fold.holdout_days:
            if day in owner:
                raise ValueError(f"day {day} validates two folds")
            owner[day] = index
    return owner


@dataclass(frozen=True)
class Selection:
    chosen: str
    scores: dict[str, float | None]  # pooled metric per candidate
    metric: str
    rows: int
    comparison: dict | None  # compare() of the chosen against the runner-up on the pooled rows
    established: bool  # the chosen one's lead is established at the spec's confidence

    def as_dict(self) -> dict:
        return {"chosen": self.chosen, "metric": self.metric, "scores": self.scores, "rows": self.rows,
                "established": self.established, "comparison": self.comparison}


def select_candidate(spec: PromotionSpec, y, predictions: Mapping[str, np.ndarray], *, days=None,
                     metric: str = "roc_auc") -> Selection:
    """The candidate with the best pooled ``metric``, with its paired comparison against the runner-up.

    ``predictions`` hold each candidate's scores on the same rows (the pooled validation rows of
    all folds, in one order); ties go to the earlier candidate in ``predictions``.
    """
    import numpy as np

    from ml_assets.ml.comparison import compare, metric_function
    from ml_assets.ml.gate import HIGHER_IS_BETTER, improvement_interval

    if not predictions:
        raise ValueError("no candidates to select from")
    labels = np.asarray(y)
    score = metric_function(metric, spec.decision_threshold)
    scores: dict[str, float | None] = {}
    for label, p in predictions.items():
        p = np.asarray(p, dtype=float)
        if p.shape != labels.shape:
            raise ValueError(f"candidate {label!r} has {p.size} predictions for {labels.size} pooled rows")
        value = score(labels, p)
        scores[label] = None if value is None else float(value)
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    ranked = sorted(scores, key=lambda label: -np.inf if scores[label] is None else sign * scores[label],
                    reverse=True)  # stable: ties keep the given order
    chosen = ranked[0]
    if scores[chosen] is None:
        raise ValueError(f"{metric} is undefined on the pooled rows (a single class?)")
    comparison, established = None, False
    if len(ranked) > 1:
        runner_up = ranked[1]
        comparison = compare(spec, labels, predictions[chosen], predictions[runner_up], reference=runner_up,
                             metrics=[metric], days=days, gate_slices=False)
        difference = comparison["overall"][metric]
        if "error" not in difference:
            established = improvement_interval(metric, difference)[1] > 0
    return Selection(chosen, scores, metric, int(labels.size), comparison, established)


@dataclass(frozen=True)
class FoldScores:
    """One fold's validation rows: labels, days, slice columns (or None), and each model's scores on them.

    A model missing from ``scores`` was not scored on this fold (e.g. the champion trained on its days).
    """

    y: np.ndarray
    days: np.ndarray
    scores: Mapping[str, np.ndarray]
    slices: object = None  # pandas DataFrame, one column per slice dimension, row-aligned


@dataclass(frozen=True)
class Pooled:
    """The rows of several folds in one order, and where each model was scored on them."""

    y: np.ndarray
    days: np.ndarray
    slices: object  # pandas DataFrame or None
    scores: dict[str, np.ndarray]  # NaN on the rows of folds the model was not scored on
    folds: int

    def scored(self, *labels: str) -> np.ndarray:
        """Row mask where every model in ``labels`` has a score (the rows a paired comparison may use)."""
        import numpy as np

        mask = np.ones(self.y.size, dtype=bool)
        for label in labels:
            if label not in self.scores:
                raise ValueError(f"no scores for {label!r}; have {sorted(self.scores)}")
            mask &= ~np.isnan(self.scores[label])
        return mask

    def days_of(self, mask) -> list[str]:
        return sorted({str(d) for d in self.days[mask]})


def unseen_scores(days, train_days: list[str] | None, scores) -> np.ndarray:
    """A fixed model's scores where it did not train on the row's day, NaN where it did.

    ``train_days`` None (not recorded) counts every day as seen: such a model is not judged there.
    """
    import numpy as np

    days = np.asarray([str(d) for d in days])
    seen = np.ones(days.size, dtype=bool) if train_days is None else np.isin(days, [str(d) for d in train_days])
    scores = np.asarray(scores, dtype=float)
    if scores.shape != days.shape:
        raise ValueError(f"{scores.size} scores for {days.size} days")
    return np.where(seen, np.nan, scores)


def pool_folds(folds: list[FoldScores]) -> Pooled:
    """Concatenate the folds' rows; a model not scored on a fold gets NaN there (see :meth:`Pooled.scored`)."""
    import numpy as np
    import pandas as pd

    if not folds:
        raise ValueError("no folds to pool")
    labels = sorted({label for fold in folds for label in fold.scores})
    for index, fold in enumerate(folds):
        y = np.asarray(fold.y)
        if len(fold.days) != y.size or (fold.slices is not None and len(fold.slices) != y.size):
            raise ValueError(f"fold {index}: {y.size} labels but {len(fold.days)} days"
                             + ("" if fold.slices is None else f" and {len(fold.slices)} slice rows"))
        for label, p in fold.scores.items():
            if np.asarray(p).shape != y.shape:
                raise ValueError(f"fold {index}: {label!r} has {np.asarray(p).size} scores for {y.size} rows")
    has_slices = [fold.slices is not None for fold in folds]
    if any(has_slices) and not all(has_slices):
        raise ValueError("slice columns given for some folds only")
    scores = {label: np.concatenate([np.asarray(fold.scores[label], dtype=float) if label in fold.scores
                                     else np.full(len(fold.y), np.nan) for fold in folds]) for label in labels}
    slices = None
    if all(has_slices):
        slices = pd.concat([fold.slices.reset_index(drop=True) for fold in folds], ignore_index=True)
    return Pooled(np.concatenate([np.asarray(fold.y) for fold in folds]),
                  np.concatenate([np.asarray([str(d) for d in fold.days]) for fold in folds]), slices, scores,
                  len(folds))


def _iso_days(column) -> np.ndarray:
    import pandas as pd

    return pd.to_datetime(column).dt.strftime("%Y-%m-%d").to_numpy()


def frame_folds(frame, date_column: str, window_days: int, holdout_days: int, k: int) -> list[TrainingWindow]:
    """The folds of a training-set frame (its last day ends the latest fold), as training_set chose them."""
    days = sorted(set(_iso_days(frame[date_column])))
    return rolling_folds(days, days[-1] if days else None, window_days, holdout_days, k, min_train_days=1)


def earlier_fold_frames(frame, folds: list[TrainingWindow], date_column: str,
                        key_columns: list[str]) -> list[tuple[object, object]]:
    """(training rows, validation rows) of every fold but the latest.

    Validation rows come in one fixed order (day, then the spec's key columns), so predictions a
    training step stores line up with the labels the evaluation step reads from the same frame.
    """
    import numpy as np

    days = _iso_days(frame[date_column])
    out = []
    for fold in folds[:-1]:
        train = frame[np.isin(days, fold.train_days)]
        validation = frame[np.isin(days, fold.holdout_days)]
        validation = validation.assign(_day=days[np.isin(days, fold.holdout_days)]).sort_values(
            ["_day", *key_columns], kind="stable").drop(columns="_day")
        if train.empty or validation.empty:
            raise ValueError(f"fold validating {fold.holdout_days[0]}..{fold.holdout_days[-1]} has no "
                             f"{'training' if train.empty else 'validation'} rows")
        out.append((train.reset_index(drop=True), validation.reset_index(drop=True)))
    return out
