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
side in one run, each in two judgement modes: "holdout" (the single holdout week) and "folds_k"
(the pooled weeks of ``--gate-folds`` rolling-origin folds, as the cycle judges when
training.folds.k > 1: the candidate configuration and the baseline refitted per fold, the champion
- a fixed model older than every fold week - scored on each; reseeds refit both seeds per fold).

"ceiling" measures how well ANY rule reading the judged rows could do here: the future week split
into halves (random rows, alternate days) predicting itself, the reseed future-delta spread, the
DeLong standard errors of the judged and the future differences, and for every mode the best
threshold rule on the judged difference ("oracle_on_judged_delta"). Trained models' predictions are cached per as-of date under ``--cache`` (keyed
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
from _decisions import (  # noqa: E402
    auc_delta,
    intervals_if_needed,
    oracle_table,
    pooled,
    rate,
    self_agreement,
    tally,
)

from ml_assets.examples import load_example  # noqa: E402
from ml_assets.examples.flights_features import flights_features  # noqa: E402
from ml_assets.ml.baseline import train_baseline  # noqa: E402
from ml_assets.ml.evaluation import compute_metrics  # noqa: E402
from ml_assets.ml.folds import select_candidate  # noqa: E402
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
    "non_inferiority_0.02": {"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.02}},
    "non_inferiority_0.02_no_ece_bar": {"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.02},
                                        "absolute": {"roc_auc": 0.6}},
    "superiority_confidence_0.8": {"confidence": 0.8},
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


def auc(y, p) -> float:
    return float(compute_metrics(y, p).roc_auc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=14, help="judged as-of dates (>= 12)")
    parser.add_argument("--every", type=int, default=3, help="weeks between judged as-of dates")
    parser.add_argument("--folds", type=int, default=3, help="rolling-origin folds for selection")
    parser.add_argument("--gate-folds", type=int, default=3,
                        help="pooled fold weeks the gate judges besides the single holdout (1: the holdout only)")
    parser.add_argument("--champion-ages", default="3,6", help="weeks between the champion's as-of date and the judged one")
    parser.add_argument("--uncalibrated", action="store_true", help="train without the spec's calibration")
    parser.add_argument("--cache", default="/tmp/ml_assets_bench_decisions", help="predictions cache directory")
    args = parser.parse_args()
    load_start = os.getloadavg()
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
    if args.gate_folds > min(ages):  # the fixed champion must not have trained on a judged fold week
        raise SystemExit(f"--gate-folds {args.gate_folds} needs champion ages >= it (got {ages})")
    lead = max(max(ages), args.folds - 1, args.gate_folds - 1)
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
        fold_dates = [as_of - dt.timedelta(weeks=j) for j in range(args.gate_folds)]
        p = {name: models.predictions(name, as_of) for name in FRAMEWORKS}
        baselines = [models.predictions("baseline", d) for d in fold_dates]
        choice = {"holdout": selected(as_of, 1), f"folds_{args.folds}": selected(as_of, args.folds)}
        future_auc = {name: auc(y[future], p[name][future]) for name in FRAMEWORKS}
        future_auc["baseline"] = auc(y[future], baselines[0][future])
        per_date.append({"as_of": as_of.isoformat(), "holdout_rows": int(holdout.size),
                         "holdout_roc_auc": {n: round(auc(y[holdout], p[n][holdout]), 4) for n in FRAMEWORKS},
                         "future_roc_auc": {n: round(v, 4) for n, v in future_auc.items()},
                         "selected": choice,
                         "selected_future_minus_baseline": {
                             k: round(future_auc[c] - future_auc["baseline"], 4) for k, c in choice.items()}})

        def case(kind, name, candidates, references, as_of=as_of, future=future, holdout=holdout,
                 fold_dates=fold_dates, baselines=baselines, **extra):
            """candidates/references: one full-length prediction array per fold date (latest first)."""
            folds = [{"rows": week_rows(d), "candidate": c, "reference": r, "baseline": b}
                     for d, c, r, b in zip(fold_dates, candidates, references, baselines, strict=True)]
            delta, se = auc_delta(y[future], candidates[0][future], references[0][future])
            cases.append({"kind": kind, "candidate": name, "as_of": as_of.isoformat(), "folds": folds,
                          "future": future, "future_days": dates[future], "p_future": candidates[0],
                          "champion_future": references[0], "future_delta": delta, "future_delta_se": se,
                          "holdout_delta": auc_delta(y[holdout], candidates[0][holdout], references[0][holdout])[0],
                          **extra})

        champions = {}
        for age in ages:
            # A fixed model, trained before every fold week (age >= folds): scored as it is on each of them.
            champion_date = as_of - dt.timedelta(weeks=age)
            champion_framework = selected(champion_date, args.folds)
            champions[age] = [models.predictions(champion_framework, champion_date)] * args.gate_folds
            for name in FRAMEWORKS:
                case("natural", name, [models.predictions(name, d) for d in fold_dates], champions[age],
                     champion_model=f"{champion_framework} {champion_date}")
        for name in FRAMEWORKS:
            # Configuration against configuration: the original seed refitted on each fold too (the
            # original model trained on the earlier fold weeks, so it cannot be scored on them).
            case("reseed", name, [models.predictions(name, d, seed=RESEED) for d in fold_dates],
                 [models.predictions(name, d) for d in fold_dates])
            for poison in POISONS:
                case("poisoned", f"{name} {poison}", [models.predictions(name, d, poison) for d in fold_dates],
                     champions[ages[0]])
        print(f"{as_of}: {models.trained} trainings so far, {models.seconds:.0f} s", file=sys.stderr, flush=True)

    modes = {"holdout": 1, **({f"folds_{args.gate_folds}": args.gate_folds} if args.gate_folds > 1 else {})}
    judged_rows = {}  # (case index, mode) -> pooled rows and predictions, absolute intervals
    for index, c in enumerate(cases):
        for mode, k in modes.items():
            rows, p_candidate, p_reference, p_baseline = pooled(c, k)
            intervals = intervals_if_needed(spec.promotion, y[rows], p_candidate, dates[rows])
            judged_rows[index, mode] = (rows, p_candidate, p_reference, p_baseline, intervals)
    print(f"judging {len(cases)} cases x {len(modes)} modes x {len(SETTINGS)} settings", file=sys.stderr, flush=True)

    settings = {}
    for setting, overrides in SETTINGS.items():
        # cluster_id slices need the cluster model, not fitted here: the other dimensions are gated
        promotion = spec.promotion.model_copy(update={"slice_dimensions": SLICE_DIMENSIONS, **overrides})
        settings[setting] = {"overrides": overrides}
        for mode in modes:
            settings[setting][mode] = tally(promotion, cases, {i: judged_rows[i, mode] for i in range(len(cases))},
                                            x[SLICE_DIMENSIONS], y, dates, BETTER)

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

    def agreement(kind: str, mode: str) -> dict:
        """Does the judged rows' ROC AUC difference (one or pooled weeks) predict the following week's?"""
        chosen = [(i, c) for i, c in enumerate(cases) if c["kind"] == kind]
        held, se = [], []
        for i, _ in chosen:
            rows, p_candidate, p_reference, _, _ = judged_rows[i, mode]
            delta = auc_delta(y[rows], p_candidate, p_reference)
            held.append(delta[0])
            se.append(delta[1])
        held, ahead = np.array(held), np.array([c["future_delta"] for _, c in chosen])
        return {"pairs": int(held.size), "correlation": round(float(np.corrcoef(held, ahead)[0, 1]), 3),
                "same_sign": rate(int(np.sum(np.sign(held) == np.sign(ahead))), held.size),
                "judged_abs_delta_median": round(float(np.median(np.abs(held))), 4),
                "judged_delta_se_median": round(float(np.median(se)), 4),
                "future_abs_delta_median": round(float(np.median(np.abs(ahead))), 4),
                "oracle_on_judged_delta": oracle_table(held, ahead, BETTER)}

    natural = [c for c in cases if c["kind"] == "natural"]
    reseed_future = np.array([c["future_delta"] for c in cases if c["kind"] == "reseed"])
    ceiling = {
        "future_delta_se_median": {kind: round(float(np.median([c["future_delta_se"] for c in cases
                                                                 if c["kind"] == kind])), 4)
                                   for kind in ("natural", "reseed")},
        # identical configurations: how far apart two seeds land on the future week
        "reseed_future_delta": {"sd": round(float(np.std(reseed_future, ddof=1)), 4),
                                "abs_max": round(float(np.max(np.abs(reseed_future))), 4),
                                "beyond_0.01": int(np.sum(np.abs(reseed_future) >= BETTER)),
                                "pairs": int(reseed_future.size)},
        "future_week_against_itself": self_agreement(y, natural, BETTER),
    }

    result = {
        "benchmark": "promotion-gate decisions against the following unseen week (bundled 2013 flights)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "judged_as_of_dates": [d.isoformat() for d in judged], "every_weeks": args.every,
        "calibration": calibration_tag(calibration), "champion_ages_weeks": ages, "selection_folds": args.folds,
        "slice_dimensions": SLICE_DIMENSIONS, "gate_modes": modes,
        "definitions": {"better": f"future ROC AUC minus the champion's >= +{BETTER}",
                        "worse": f"<= -{BETTER} (worse_any: < 0)",
                        "reseed blocked": "superiority: a regression rule fired (not 'beats champion'); "
                                          "non-inferiority: any rule failed",
                        "holdout": "judged on the holdout week (fold 0) alone",
                        f"folds_{args.gate_folds}": f"judged on the pooled weeks of {args.gate_folds} rolling-origin folds: "
                                               "the candidate configuration and the baseline refitted per fold, "
                                               "the champion (a fixed model) scored on each week; reseeds: both "
                                               "seeds refitted per fold"},
        "future_roc_auc_mean": {n: mean([d["future_roc_auc"][n] for d in per_date]) for n in [*FRAMEWORKS, "baseline"]},
        "selection": selection,
        "judged_vs_future": {mode: {kind: agreement(kind, mode) for kind in ("natural", "reseed")} for mode in modes},
        "ceiling": ceiling,
        "settings": settings,
        "per_date": per_date,
        "trainings": models.trained, "training_seconds": round(models.seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = RESULT.with_name("decisions" + ("" if calibration is not None else "_uncalibrated")
                           + ("" if args.gate_folds == 3 else f"_gate_folds_{args.gate_folds}") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
