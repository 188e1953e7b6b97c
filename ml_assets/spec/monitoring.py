"""Monitoring settings of the spec: drift, live performance, retraining triggers and freshness."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ml_assets.spec.sources import Strict as _Strict

#: Evaluation metrics a spec may name (promotion bars and the performance monitor).
KNOWN_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "ece")


class DriftSpec(_Strict):
    """Per-feature drift of a day against the champion's reference window (see ml_assets.ml.drift)."""

    psi: float = Field(0.2, gt=0, description="PSI at or over which a numeric feature has drifted")
    wasserstein: float = Field(0.1, gt=0, description="Wasserstein / reference std at or over which it has drifted")
    js_distance: float = Field(0.1, gt=0, le=1, description="Jensen-Shannon distance (base 2) for categorical features")
    numeric_rule: Literal["psi", "wasserstein", "either"] = Field(
        "psi", description="Which effect size decides for numeric features"
    )
    min_count: int = Field(30, ge=1, description="Fewest non-null current values a feature is judged on")
    bins: int = Field(10, ge=2, description="Reference quantile bins per numeric feature")
    top_k: int = Field(50, ge=1, description="Categories kept per categorical feature (the rest is __other__)")
    sample_size: int = Field(5000, ge=100, description="Reference values kept per numeric feature for Wasserstein")
    current_days: int = Field(1, ge=1, description="Trailing days (ending at the partition) scored as its current data")
    exclude_from_share: list[str] = Field(
        default_factory=list, description="Features reported but not counted in the drifted share"
    )
    share_threshold: float = Field(
        0.5, gt=0, le=1, description="A day has drifted when at least this share of the counted features drifted "
                                     "(weighting count) or of the champion's feature importance (weighting importance)"
    )
    weighting: Literal["count", "importance"] = Field(
        "count",
        description="count: every counted feature weighs the same (the share of drifted features, Evidently's "
                    "drift_share; the default, so existing specs keep their verdicts); importance: each weighs its "
                    "share of the champion's permutation importance on its holdout days (ROC AUC lost when the "
                    "feature is shuffled), so a shift in the features the model relies on counts and one in "
                    "features it ignores barely does (what `ml-assets spec init` writes; ml_assets.ml.drift_rule)",
    )
    any_of_top: int = Field(
        0, ge=0, description="Also flag a day when any of the champion's this many most important counted features "
                             "drifted (0: off)"
    )
    importance_repeats: int = Field(
        5, ge=1, description="Seeded shuffles per feature behind the permutation importance (weighting importance)"
    )

    @property
    def needs_importance(self) -> bool:
        return self.weighting == "importance" or self.any_of_top > 0


class PerformanceSpec(_Strict):
    """The champion's metric over a trailing window of labelled days, with its confidence interval,
    against its own holdout value (ml_assets.ml.performance)."""

    metric: str = Field("roc_auc", description="Metric watched (one of the evaluation metrics)")
    max_drop: float = Field(0.05, gt=0, description="Largest tolerated worsening from the holdout value, in metric units")
    label_lag_days: int = Field(
        1, ge=0, description="Without a label feed: days after a day before its labels are complete"
    )
    window_days: int = Field(
        7, ge=1, description="Trailing days (ending at the judged day) whose labelled rows are judged together"
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Two-sided confidence of the window's interval")
    rule: Literal["significant", "confident"] = Field(
        "significant",
        description="significant: the drop exceeds max_drop and its interval excludes 0 (a material loss that "
                    "is not noise); confident: the whole interval of the drop exceeds max_drop (slower, fewer retrains)",
    )
    min_rows: int = Field(100, ge=1, description="Fewest labelled rows in the window for it to be judged")
    min_class_rows: int = Field(
        10, ge=2, description="Fewest rows of EACH class in the window for it to be judged (the interval does the rest)"
    )
    min_label_coverage: float | None = Field(
        None, gt=0, le=1,
        description="With a label feed: share of a day's examples whose outcome landed before the day is judged "
                    "(a later landing of labels re-judges it); null: the feed's own min_coverage",
    )
    use_estimate: bool = Field(
        False,
        description="Let the performance sensor also count days judged on the CBPE estimate (expected metric "
                    "from the champion's probabilities, before labels land; assumes calibrated probabilities, see "
                    "training.calibration, and cannot see concept drift); a realised judgement replaces it",
    )
    estimate_samples: int = Field(200, ge=20, description="Monte-Carlo label draws behind the CBPE band")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in KNOWN_METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {list(KNOWN_METRICS)}")
        return value


class RetrainingSpec(_Strict):
    """When monitoring turns into a training run."""

    debounce_days: int = Field(3, ge=1, description="Consecutive drifted (or degraded) days before a retrain")
    cooldown_days: int = Field(14, ge=0, description="Days after a retrain's as-of day during which no trigger fires")
    fallback_cron: str | None = Field(
        None, description="Cron schedule of an unconditional retrain; null turns the fallback off"
    )


class FreshnessSpec(_Strict):
    """Freshness policies; the freshness_alerts sensor emails when one turns stale."""

    data_fail_hours: float = Field(48, gt=0, description="Daily data assets fail when not updated for this long")
    data_warn_hours: float | None = Field(30, gt=0, description="... and warn after this long (null: no warning)")
    evaluation_fail_days: float = Field(14, gt=0, description="candidate_model fails when no evaluation ran for this long")
    deployment_fail_days: float = Field(30, gt=0, description="deployed_model fails when nothing was deployed for this long")

    @model_validator(mode="after")
    def _warn_before_fail(self) -> FreshnessSpec:
        if self.data_warn_hours is not None and self.data_warn_hours >= self.data_fail_hours:
            raise ValueError("data_warn_hours must be smaller than data_fail_hours")
        return self


class MonitoringSpec(_Strict):
    drift: DriftSpec = Field(default_factory=DriftSpec)
    performance: PerformanceSpec = Field(default_factory=PerformanceSpec)
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec)
    freshness: FreshnessSpec = Field(default_factory=FreshnessSpec)
