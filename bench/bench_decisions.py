"""Decision quality of the promotion gate against the future, on the bundled 2013 flights; prints one JSON object.

At weekly as-of dates (every ``--every`` weeks of a weekly grid) the project's own trainers
(train_keras, train_sklearn with the spec's default parameters), the LogisticRegression baseline,
compare() and gate.decide() judge challengers on the 7-day holdout ending at the as-of date; the
truth is the 7 days AFTER the holdout, which no model or rule saw:

- natural challengers: both frameworks trained at the date, against the champion (the candidate
  selected ``--champion-ages`` weeks earlier). "better" = future ROC AUC ahead of the champion's
  by >= 0.01, "worse" = behind by >= 0.01, the rest "indifferent";
- poisoned challengers of both frameworks: 30% of training labels flipped, every UA label flipped,
  a 3-day training window - all must be blocked;
- reseeds: the same configuration trained with another seed, judged against the original -
  blocked only when a regression rule fires (under the superiority policy "not established as
  better" is the intended outcome for an identical configuration, and is counted apart);
- selection: the candidate chosen on the single holdout week vs on the pooled predictions of
  ``--folds`` rolling-origin folds (ml_assets.ml.folds), and the baseline, on the future week.

Every gate setting in SETTINGS is applied to the same predictions, so they are compared side by
side in one run. Trained models' predictions are cached per as-of date under ``--cache`` (keyed
by the trainers' source), so a re-run only re-judges. Runs single-threaded (other work shares
the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ml_assets.examples import load_example  # noqa: E402
from ml_assets.examples.flights_features import flights_features  # noqa: E402
from ml_assets.ml.baseline import train_baseline  # noqa: E402
from ml_assets.ml.comparison import compare  # noqa: E402
from ml_assets.ml.evaluation import compute_metrics  # noqa: E402
from ml_assets.ml.folds import select_candidate  # noqa: E402
from ml_assets.ml.gate import InfraResult, decide  # noqa: E402
from ml_assets.ml.models import (  # noqa: E402
    FeatureColumns,
    KerasParams,
    SklearnParams,
    train_keras,
    train_sklearn,
)
from ml_assets.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "decisions.json"
WEEK = 7
PREDICT_WEEKS = 8  # a model is scored on its holdout week and the 7 after (as a fold model and as a champion)
BETTER = 0.01  # future ROC AUC difference that makes a challenger better (or worse, negated)
SLICE_DIMENSIONS = ["carrier", "origin"]  # cluster_id needs the cluster model: not fitted here
INFRA_OK = InfraResult(loaded=True, answered=1, requested=1, p95_latency_ms=1.0, size_mb=1.0)
FRAMEWORKS = {"keras": (train_keras, KerasParams()), "sklearn": (train_sklearn, SklearnParams())}
POISONS = ("flip30", "flip_carrier_UA", "window3")
SEED, RESEED = 13, 14

# Gate settings judged side by side: overrides of the spec's promotion section ("spec" = as shipped).
SETTINGS = {
    "spec": {},
    "superiority_no_ece_bar": {"absolute": {"roc_auc": 0.6}},
    "non_inferiority_0.005": {"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.005}},
    "non_inferiority_0.01": {"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.01}},
    "non_inferiority_0.01_no_ece_bar": {"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.01},
                                        "absolute": {"roc_auc": 0.6}},
    "non_inferiority_0.02_no_ece_bar": {"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.02},
                                        "absolute": {"roc_auc": 0.6}},
    "non_inferiority_0.01_no_ece_bar_slice_0.1": {"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.01},
                                                  "absolute": {"roc_auc": 0.6},
                                                  "max_slice_regression": {"roc_auc": 0.1}},
}


def source_digest() -> str:
    """Trainers' source: a changed model (e.g. calibration added) invalidates the cache."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "ml_assets" / "ml").glob("*.py")):
        if path.stem.startswith(("models", "calibration", "baseline")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def spec_calibration(spec):
    """The spec's post-hoc calibration as the trainers take it; None where the code predates it."""
    try:
        from ml_assets.ml.calibration import CalibrationParams
    except ImportError:
        return None
    return CalibrationParams.from_spec(spec.training) if hasattr(spec.training, "calibration") else None


def calibration_tag(calibration) -> str:
    return "uncalibrated" if calibration is None else f"{calibration.method}-{calibration.days}"


def feature_rows(spec) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Every labelled flight's features, 0/1 label and local date (ISO), ordered by date."""
    frames = load_example(spec.example_data)
    flights = frames["flights"]
    labelled = flights[flights["arr_delay"].notna()]
    # flights_features samples with random_state=seed: the same permutation gives each row's date back.
    order = labelled.sample(n=len(labelled), random_state=0).index
    x, y = flights_features(frames, n_rows=len(labelled), seed=0)
    dates = pd.to_datetime(labelled.loc[order, ["year", "month", "day"]]).dt.strftime("%Y-%m-%d").to_numpy()
    by_date = np.argsort(dates, kind="stable")
    return x.iloc[by_date].reset_index(drop=True), y[by_date], dates[by_date]


class Models:
    """Train-or-load predictions of (framework, as_of, variant, seed) on the weeks after the window."""

    def __init__(self, x, y, dates, columns, window_days: int, cache: Path, calibration=None) -> None:
        self.x, self.y, self.dates, self.columns, self.window_days = x, y, dates, columns, window_days
        self.calibration = calibration  # as the training step passes it (the spec's training.calibration)
        self.cache = cache / f"{source_digest()}-{calibration_tag(calibration)}"
        self.cache.mkdir(parents=True, exist_ok=True)
        self.trained, self.seconds = 0, 0.0

    def rows(self, first: dt.date, last: dt.date) -> np.ndarray:
        return np.flatnonzero((self.dates >= first.isoformat()) & (self.dates <= last.isoformat()))

    def train_rows(self, as_of: dt.date, days: int | None = None) -> np.ndarray:
        holdout_start = as_of - dt.timedelta(days=WEEK - 1)
        return self.rows(holdout_start - dt.timedelta(days=days or self.window_days),
                         holdout_start - dt.timedelta(days=1))

    def scored_rows(self, as_of: dt.date) -> np.ndarray:
        return self.rows(as_of - dt.timedelta(days=WEEK - 1), as_of + dt.timedelta(days=WEEK * (PREDICT_WEEKS - 1)))

    def _labels(self, rows: np.ndarray, variant: str, as_of: dt.date) -> np.ndarray:
        y = self.y[rows].copy()
        if variant == "flip30":
            flip = np.random.default_rng([SEED, as_of.toordinal()]).random(rows.size) < 0.3
            y[flip] = 1 - y[flip]
        elif variant == "flip_carrier_UA":
            ua = self.x["carrier"].to_numpy()[rows] == "UA"
            y[ua] = 1 - y[ua]
        return y

    def predictions(self, framework: str, as_of: dt.date, variant: str = "clean", seed: int = SEED) -> np.ndarray:
        """Scores on every row from the holdout week on (length len(self.y); NaN outside)."""
        path = self.cache / f"{framework}_{as_of}_{variant}_{seed}.npy"
        if path.exists():
            return np.load(path)
        train = self.train_rows(as_of, 3 if variant == "window3" else None)
        y = self._labels(train, variant, as_of)
        started = time.perf_counter()
        if framework == "baseline":
            model = train_baseline(self.x.iloc[train], y, self.columns, seed=seed)
        else:
            trainer, params = FRAMEWORKS[framework]
            # 3 training days are too few to hold out calibration days: that poison trains uncalibrated
            calibrated = self.calibration is not None and variant != "window3"
            extra = {"calibration": self.calibration, "days": self.dates[train]} if calibrated else {}
            model = trainer(self.x.iloc[train], y, self.columns, params, seed, **extra)
        self.seconds += time.perf_counter() - started
        self.trained += 1
        scored = self.scored_rows(as_of)
        out = np.full(self.y.size, np.nan)
        out[scored] = model.predict_proba(self.x.iloc[scored])
        np.save(path, out)
        return out


def gate(promotion, y, p_candidate, p_champion, p_baseline, slices, days):
    """decide() as the promotion check runs it, from predictions on the holdout rows."""
    champion_metrics = sorted({*promotion.min_improvement, *promotion.min_relative_improvement, "roc_auc"})
    vs_champion = compare(promotion, y, p_candidate, p_champion, reference="champion", metrics=champion_metrics,
                          slices=slices, days=days)
    vs_baseline = compare(promotion, y, p_candidate, p_baseline, reference="baseline",
                          metrics=sorted({*promotion.baseline_margin, "roc_auc"}), days=days, gate_slices=False)
    candidate = {"overall": compute_metrics(y, p_candidate, promotion.decision_threshold).as_dict()}
    champion = {"overall": compute_metrics(y, p_champion, promotion.decision_threshold).as_dict()}
    verdict = decide(promotion, candidate, champion, INFRA_OK, vs_champion=vs_champion, vs_baseline=vs_baseline)
    failed = sorted({row.rule + ("" if row.slice == "overall" else " (slice)") + f" {row.metric}"
                     for row in verdict.rows if not row.passed})
    return verdict.passed, failed


def auc(y, p) -> float:
    return float(compute_metrics(y, p).roc_auc)


def rate(hits: int, total: int) -> float | None:
    return None if total == 0 else round(hits / total, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=14, help="judged as-of dates (>= 12)")
    parser.add_argument("--every", type=int, default=3, help="weeks between judged as-of dates")
    parser.add_argument("--folds", type=int, default=3, help="rolling-origin folds for selection")
    parser.add_argument("--champion-ages", default="3,6", help="weeks between the champion's as-of date and the judged one")
    parser.add_argument("--uncalibrated", action="store_true", help="train without the spec's calibration")
    parser.add_argument("--cache", default="/tmp/ml_assets_bench_decisions", help="predictions cache directory")
    args = parser.parse_args()
    ages = [int(a) for a in args.champion_ages.split(",")]
    started = time.perf_counter()
    spec = load_spec("flights")
    columns = FeatureColumns.from_spec(spec)
    x, y, dates = feature_rows(spec)
    calibration = None if args.uncalibrated else spec_calibration(spec)
    models = Models(x, y, dates, columns, spec.training.window_days, Path(args.cache), calibration)
    first = dt.date.fromisoformat(dates[0]) + dt.timedelta(days=spec.training.window_days + WEEK - 1)
    grid = [first + dt.timedelta(weeks=g) for g in range(60)]
    grid = [d for d in grid if (d + dt.timedelta(days=WEEK)).isoformat() <= dates[-1]]
    lead = max(max(ages), args.folds - 1)
    judged = grid[lead::args.every][: args.dates]
    if len(judged) < args.dates:
        raise SystemExit(f"only {len(judged)} judged dates fit in the data (asked {args.dates})")

    def week_rows(as_of: dt.date, offset: int = 0) -> np.ndarray:
        end = as_of + dt.timedelta(weeks=offset)
        return models.rows(end - dt.timedelta(days=WEEK - 1), end)

    def selected(as_of: dt.date, folds: int) -> str:
        """The framework chosen at as_of on the pooled predictions of its folds (each fold's own models)."""
        rows, pooled = [], {name: [] for name in FRAMEWORKS}
        for j in range(folds):
            fold_as_of = as_of - dt.timedelta(weeks=j)
            if fold_as_of < grid[0]:
                break  # early in the data: fewer folds
            fold_rows = week_rows(fold_as_of)
            rows.append(fold_rows)
            for name in FRAMEWORKS:
                pooled[name].append(models.predictions(name, fold_as_of)[fold_rows])
        rows_all = np.concatenate(rows)
        return select_candidate(spec.promotion, y[rows_all], {n: np.concatenate(p) for n, p in pooled.items()},
                                days=dates[rows_all]).chosen

    cases, per_date = [], []
    for as_of in judged:
        holdout, future = week_rows(as_of), week_rows(as_of, 1)
        slices = x.iloc[holdout][SLICE_DIMENSIONS].reset_index(drop=True)
        p = {name: models.predictions(name, as_of) for name in FRAMEWORKS}
        baseline = models.predictions("baseline", as_of)
        choice = {"holdout": selected(as_of, 1), f"folds_{args.folds}": selected(as_of, args.folds)}
        future_auc = {name: auc(y[future], p[name][future]) for name in FRAMEWORKS}
        future_auc["baseline"] = auc(y[future], baseline[future])
        per_date.append({"as_of": as_of.isoformat(), "holdout_rows": int(holdout.size),
                         "holdout_roc_auc": {n: round(auc(y[holdout], p[n][holdout]), 4) for n in FRAMEWORKS},
                         "future_roc_auc": {n: round(v, 4) for n, v in future_auc.items()},
                         "selected": choice,
                         "selected_future_minus_baseline": {
                             k: round(future_auc[c] - future_auc["baseline"], 4) for k, c in choice.items()}})

        context = {"as_of": as_of.isoformat(), "baseline": baseline, "holdout": holdout, "slices": slices}

        def case(kind, name, p_candidate, p_champion, context=context, future=future, holdout=holdout, **extra):
            cases.append({"kind": kind, "candidate": name, "p": p_candidate, "champion": p_champion, **context,
                          "future_delta": auc(y[future], p_candidate[future]) - auc(y[future], p_champion[future]),
                          "holdout_delta": auc(y[holdout], p_candidate[holdout]) - auc(y[holdout], p_champion[holdout]),
                          **extra})

        champions = {}
        for age in ages:
            champion_date = as_of - dt.timedelta(weeks=age)
            champion_framework = selected(champion_date, args.folds)
            champions[age] = models.predictions(champion_framework, champion_date)
            for name in FRAMEWORKS:
                case("natural", name, p[name], champions[age], champion_model=f"{champion_framework} {champion_date}")
        for name in FRAMEWORKS:
            case("reseed", name, models.predictions(name, as_of, seed=RESEED), p[name])
            for poison in POISONS:
                case("poisoned", f"{name} {poison}", models.predictions(name, as_of, poison), champions[ages[0]])
        print(f"{as_of}: {models.trained} trainings so far, {models.seconds:.0f} s", file=sys.stderr, flush=True)

    settings = {}
    for setting, overrides in SETTINGS.items():
        # cluster_id slices need the cluster model, not fitted here: the other dimensions are gated
        promotion = spec.promotion.model_copy(update={"slice_dimensions": SLICE_DIMENSIONS, **overrides})
        counts = {k: 0 for k in ("better", "better_passed", "worse", "worse_passed", "indifferent",
                                 "indifferent_passed", "worse_any", "worse_any_passed", "poisoned",
                                 "poisoned_blocked", "reseeds", "reseeds_blocked", "reseeds_flagged_regression")}
        failures: dict[str, int] = {}
        missed_poison = []
        for c in cases:
            rows = c["holdout"]
            passed, failed = gate(promotion, y[rows], c["p"][rows], c["champion"][rows], c["baseline"][rows],
                                  c["slices"], dates[rows])
            for rule in failed:
                failures[f"{c['kind']}: {rule}"] = failures.get(f"{c['kind']}: {rule}", 0) + 1
            if c["kind"] == "natural":
                group = ("better" if c["future_delta"] >= BETTER else "worse" if c["future_delta"] <= -BETTER
                         else "indifferent")
                counts[group] += 1
                counts[f"{group}_passed"] += passed
                if c["future_delta"] < 0:
                    counts["worse_any"] += 1
                    counts["worse_any_passed"] += passed
            elif c["kind"] == "poisoned":
                counts["poisoned"] += 1
                counts["poisoned_blocked"] += not passed
                if passed:
                    missed_poison.append(f"{c['as_of']} {c['candidate']}")
            else:
                counts["reseeds"] += 1
                counts["reseeds_blocked"] += not passed
                # "beats champion" under superiority is not a regression: an identical configuration is not better
                regression = [r for r in failed if not (promotion.policy == "superiority"
                                                        and r.startswith("beats champion"))]
                counts["reseeds_flagged_regression"] += bool(regression)
        reseed_blocked = counts["reseeds_flagged_regression"] if promotion.policy == "superiority" else \
            counts["reseeds_blocked"]
        goals = {
            "poisoned_blocked_100pct": counts["poisoned_blocked"] == counts["poisoned"],
            "reseeds_blocked_le_5pct": reseed_blocked <= 0.05 * counts["reseeds"],
            "worse_passed_le_5pct": counts["worse_passed"] <= 0.05 * max(counts["worse"], 1),
            "better_passed_ge_80pct": counts["better_passed"] >= 0.8 * counts["better"],
        }
        settings[setting] = {
            "overrides": overrides, "counts": counts,
            "rates": {"better_passed": rate(counts["better_passed"], counts["better"]),
                      "worse_passed": rate(counts["worse_passed"], counts["worse"]),
                      "worse_any_passed": rate(counts["worse_any_passed"], counts["worse_any"]),
                      "poisoned_blocked": rate(counts["poisoned_blocked"], counts["poisoned"]),
                      "reseeds_blocked": rate(counts["reseeds_blocked"], counts["reseeds"]),
                      "reseeds_flagged_regression": rate(counts["reseeds_flagged_regression"], counts["reseeds"])},
            "goals": goals, "poisoned_passed": missed_poison,
            "failed_rules": dict(sorted(failures.items(), key=lambda kv: -kv[1])),
        }

    def mean(values):
        return round(float(np.mean(values)), 4)

    selection = {}
    for scheme in per_date[0]["selected"]:
        ahead = [d["selected_future_minus_baseline"][scheme] for d in per_date]
        selection[scheme] = {
            "picked": {n: sum(d["selected"][scheme] == n for d in per_date) for n in FRAMEWORKS},
            "future_roc_auc_mean": mean([d["future_roc_auc"][d["selected"][scheme]] for d in per_date]),
            "ahead_of_baseline_mean": mean(ahead), "behind_baseline_dates": sum(a < 0 for a in ahead),
            "picked_the_future_winner": sum(
                d["selected"][scheme] == max(FRAMEWORKS, key=lambda n, d=d: d["future_roc_auc"][n]) for d in per_date),
        }
    def agreement(kind: str) -> dict:
        """Does the holdout week's ROC AUC difference predict the following week's?"""
        held = np.array([c["holdout_delta"] for c in cases if c["kind"] == kind])
        ahead = np.array([c["future_delta"] for c in cases if c["kind"] == kind])
        return {"pairs": int(held.size), "correlation": round(float(np.corrcoef(held, ahead)[0, 1]), 3),
                "same_sign": rate(int(np.sum(np.sign(held) == np.sign(ahead))), held.size),
                "holdout_abs_delta_median": round(float(np.median(np.abs(held))), 4),
                "future_abs_delta_median": round(float(np.median(np.abs(ahead))), 4)}

    result = {
        "benchmark": "promotion-gate decisions against the following unseen week (bundled 2013 flights)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "judged_as_of_dates": [d.isoformat() for d in judged], "every_weeks": args.every,
        "calibration": calibration_tag(calibration), "champion_ages_weeks": ages, "selection_folds": args.folds, "slice_dimensions": SLICE_DIMENSIONS,
        "definitions": {"better": f"future ROC AUC minus the champion's >= +{BETTER}",
                        "worse": f"<= -{BETTER} (worse_any: < 0)",
                        "reseed blocked": "superiority: a regression rule fired (not 'beats champion'); "
                                          "non-inferiority: any rule failed"},
        "future_roc_auc_mean": {n: mean([d["future_roc_auc"][n] for d in per_date]) for n in [*FRAMEWORKS, "baseline"]},
        "selection": selection,
        "holdout_vs_future": {kind: agreement(kind) for kind in ("natural", "reseed")},
        "settings": settings,
        "per_date": per_date,
        "trainings": models.trained, "training_seconds": round(models.seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = RESULT if calibration is not None else RESULT.with_name("decisions_uncalibrated.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
