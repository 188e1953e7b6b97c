"""The second example end to end: detection delay on its injected shift and false retrains before it;
the performance trigger's delay on an injected label-noise drop.

Two scenarios of the generated shop-orders example (ml_assets.examples.orders: from 2024-01-01, a label feed
arriving 2-23 days after each order), each in its own process (the spec is chosen at import):

- shift: the documented marketplace shift on 2024-05-15 (electronics 18% -> 36% of orders, half the price,
  returned far more often), 240 days.
- noise: the same shop without the shift, but from --noise-from (2024-05-01) --noise-share (30%) of the
  outcomes booked wrong (features unchanged: only live performance can see it), 200 days. Its drift requests
  over the whole run are false ones on stable features.

Each infers its spec with `ml-assets spec init` as a user would (drift weighted by the champion's feature
importance, a trailing window of >= 400 rows), then replays every day in process exactly as
`ml-assets replay --spec orders.yaml --from orders.csv outcomes=outcomes.jsonl --start 2024-01-01 --end ...
--step-days 7` does (ml_assets.replay.loop.Replay, throw-away store and SQLite instance).

Prints one JSON object, per scenario: the first model (day requested, verdict), per trigger (drift /
performance) the detection delay in days from the onset to the first retrain request on or after it, the false
retrain requests (any trigger but the first model's bootstrap) before the onset per month of monitoring with a
champion, every decision with its verdict, the held-back days and the summary line.

One thing is set here and recorded in the JSON (measured, see the closing note of issue 10):
`--baseline-margin` (default -0.1) replaces spec init's starting bar (-0.03) for "beats baseline": on this
data the LogisticRegression baseline is the true model's form and beats both candidates by ~0.03 ROC AUC on
the first holdout week (0.769 vs 0.740), so with the inferred spec no first model is ever deployed.

    .venv/bin/python bench/bench_orders.py [--scenario both|shift|noise] [--step-days 7]
        [--noise-from 2024-05-01] [--noise-share 0.3] [--out bench/results/orders.json]
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _replay import replay_workdir, run_replay  # noqa: E402 - bench/ is the script's folder

RETRAIN = re.compile(r"^retrain \((\w[\w ]*), as of (\S+)\)")
DAYS_PER_MONTH = 30.44


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


SCENARIOS = ("shift", "noise")


def _prepare(workdir: Path, generator: list[str], baseline_margin: float | None) -> Path:
    """The example's files and the spec `ml-assets spec init` infers from them (as the README shows)."""
    cli = str(Path(sys.executable).parent / "ml-assets")
    for command in ([sys.executable, "-m", "ml_assets.examples.orders", "data", *generator],
                    [cli, "spec", "init", "--from", "data/orders.csv", "--label", "returned", "--timestamp",
                     "ordered_at", "--timezone", "Europe/Berlin", "--labels", "data/outcomes.jsonl",
                     "--labels-timestamp", "resolved_at", "--out", "orders.yaml"]):
        subprocess.run(command, cwd=workdir, check=True, capture_output=True, text=True)
    spec = workdir / "orders.yaml"
    if baseline_margin is not None:
        text = spec.read_text()
        assert "baseline_margin: {roc_auc: -0.03}" in text, "spec init's baseline bar changed: update the bench"
        spec.write_text(text.replace("baseline_margin: {roc_auc: -0.03}", f"baseline_margin: {{roc_auc: {baseline_margin}}}"))
    return spec


def detection(rows, onset: dt.date) -> dict:
    """Retrain requests from the timeline: first model, delay per trigger after the onset, false ones before."""
    requests = [(dt.date.fromisoformat(r.day), m[1], m[2], r.verdict.split(" - ")[0])
                for r in rows if (m := RETRAIN.match(r.action))]
    first_model = next(((d, v) for d, trigger, _, v in requests if trigger == "bootstrap"), None)
    champion_from = next((dt.date.fromisoformat(r.day) for r in rows if r.champion is not None), None)
    delays = {}
    for trigger in sorted({t for _, t, _, _ in requests if t != "bootstrap"} | {"drift", "performance"}):
        after = [d for d, t, _, _ in requests if t == trigger and d >= onset]
        delays[trigger] = (after[0] - onset).days if after else None
    any_after = [d for d, t, _, _ in requests if t != "bootstrap" and d >= onset]
    false = [{"day": d.isoformat(), "trigger": t, "as_of": a, "verdict": v}
             for d, t, a, v in requests if t != "bootstrap" and d < onset]
    monitored_days = (onset - champion_from).days if champion_from and champion_from < onset else 0
    return {
        "first_model": {"requested": first_model[0].isoformat(), "verdict": first_model[1]} if first_model else None,
        "champion_from": champion_from.isoformat() if champion_from else None,
        "detection_delay_days": {**delays, "any": (any_after[0] - onset).days if any_after else None},
        "false_retrain_requests_before_onset": false,
        "monitored_days_before_onset": monitored_days,
        "false_retrains_per_month_before_onset":
            round(len(false) / (monitored_days / DAYS_PER_MONTH), 2) if monitored_days else None,
        "decisions": [{"day": d.isoformat(), "trigger": t, "as_of": a, "verdict": v} for d, t, a, v in requests],
    }


def _signals(rows, onset: dt.date, count: int = 6) -> list[dict]:
    """The first judged days from the onset on: drift and live performance as the timeline shows them."""
    after = [r for r in rows if dt.date.fromisoformat(r.day) >= onset and (r.drift != "-" or r.live != "-")]
    return [{"day": r.day, "drift": r.drift, "live": r.live} for r in after[:count]]


def run_scenario(scenario: str, args) -> dict:
    """One scenario in this process: generate, spec init, replay, read the timeline."""
    from ml_assets.examples.orders import SHIFT_DAY, START

    if scenario == "shift":
        days, onset, generator = args.shift_days, SHIFT_DAY, ["--days", str(args.shift_days)]
    else:
        days, onset = args.noise_days, args.noise_from
        generator = ["--days", str(args.noise_days), "--shift-day", "none", "--label-noise-from",
                     args.noise_from.isoformat(), "--label-noise-share", str(args.noise_share)]
    workdir = replay_workdir(f"bench-orders-{scenario}-")
    spec_path = _prepare(workdir, generator, args.baseline_margin)
    from ml_assets.defs.settings import select_spec

    select_spec(str(spec_path))
    load_before = os.getloadavg()
    began = time.perf_counter()
    from ml_assets.defs.dataset import SPEC
    from ml_assets.replay.command import _lander
    from ml_assets.replay.timeline import summary_line

    end = START + dt.timedelta(days=days - 1)
    data = workdir / "data"
    replay, rows, probe = run_replay(
        workdir, START, end, args.step_days,
        lander=_lander([str(data / "orders.csv"), f"outcomes={data / 'outcomes.jsonl'}"], None))
    total = time.perf_counter() - began
    found = detection(rows, onset)
    result = {
        "scenario": scenario,
        "generator": "python -m ml_assets.examples.orders data " + " ".join(generator),
        "command": f"ml-assets replay --spec orders.yaml --from orders.csv outcomes=outcomes.jsonl --start {START} "
                   f"--end {end} --step-days {args.step_days}",
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "onset": onset.isoformat(),
        "drift_rule": SPEC.monitoring.drift.model_dump(include={"weighting", "share_threshold", "any_of_top",
                                                                "current_days"}),
        "performance_rule": SPEC.monitoring.performance.model_dump(include={"metric", "max_drop", "window_days",
                                                                            "rule", "use_estimate"}),
        "baseline_margin": args.baseline_margin,
        "total_seconds": round(total, 1),
        "stage_seconds": {k: round(v, 1) for k, v in replay.report.seconds.items()},
        "days": len(rows),
        "summary": summary_line(rows, replay.report),
        "held_back_days": {d: m[:200] for d, m in sorted(replay.report.failed_days.items())},
        "judged_drift_days": sum(r.drift != "-" for r in rows),
        "judged_performance_days": sum(r.live != "-" for r in rows),
        **found,
        "first_signals_from_onset": _signals(rows, onset),
        "final_champion": rows[-1].champion if rows else None,
        "serving_probe_max_abs_diff": probe["max_abs_diff"] if probe else None,
    }
    if scenario == "noise":
        # The features never move in this scenario: every drift request is a false one.
        drift_requests = [d for d in found["decisions"] if d["trigger"] == "drift"]
        monitored = (end - dt.date.fromisoformat(found["champion_from"])).days + 1 if found["champion_from"] else 0
        result["drift_requests_on_stable_features"] = drift_requests
        result["drift_false_retrains_per_month_whole_run"] = (
            round(len(drift_requests) / (monitored / DAYS_PER_MONTH), 2) if monitored else None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["both", *SCENARIOS], default="both")
    parser.add_argument("--shift-days", type=int, default=240, help="days replayed from 2024-01-01 (shift)")
    parser.add_argument("--noise-days", type=int, default=200, help="days replayed from 2024-01-01 (noise)")
    parser.add_argument("--noise-from", type=dt.date.fromisoformat, default=dt.date(2024, 5, 1))
    parser.add_argument("--noise-share", type=float, default=0.3)
    parser.add_argument("--step-days", type=int, default=7)
    parser.add_argument("--baseline-margin", type=float, default=-0.1,
                        help="promotion.baseline_margin roc_auc written over spec init's -0.03 (see above)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    if args.scenario != "both":
        result = run_scenario(args.scenario, args)
    else:
        # One process per scenario: the spec is chosen once per process, at import.
        result = {"benchmark": "orders", "commit": _commit(),
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
        passed = ["--shift-days", str(args.shift_days), "--noise-days", str(args.noise_days), "--noise-from",
                  args.noise_from.isoformat(), "--noise-share", str(args.noise_share), "--step-days",
                  str(args.step_days), "--baseline-margin", str(args.baseline_margin)]
        with tempfile.TemporaryDirectory(prefix="bench-orders-") as folder:
            for scenario in SCENARIOS:
                out = Path(folder) / f"{scenario}.json"
                subprocess.run([sys.executable, __file__, *passed, "--scenario", scenario, "--out", str(out)],
                               stdout=subprocess.DEVNULL, check=True)
                result[scenario] = json.loads(out.read_text())
        shift, noise = result["shift"], result["noise"]
        result["headline"] = {
            "shift_detection_delay_days": shift["detection_delay_days"],
            "false_retrains_per_month_before_shift": shift["false_retrains_per_month_before_onset"],
            "label_noise_performance_trigger_delay_days": noise["detection_delay_days"]["performance"],
            "false_retrains_per_month_before_label_noise": noise["false_retrains_per_month_before_onset"],
            "drift_false_retrains_per_month_stable_features": noise["drift_false_retrains_per_month_whole_run"],
        }
    text = json.dumps(result, indent=2, default=str)
    if args.scenario == "both" or not args.out:
        print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
