"""The second example end to end: detection delay on its injected shift and false retrains before it.

Generates the shop-orders example (ml_assets.examples.orders: 240 days from 2024-01-01, a label feed
arriving 2-23 days after each order, a covariate + concept shift on 2024-05-15), infers its spec with
`ml-assets spec init` as a user would, then replays every day in process exactly as
`ml-assets replay --spec orders.yaml --from orders.csv outcomes=outcomes.jsonl --start 2024-01-01
--end 2024-08-27 --step-days 7` does (ml_assets.replay.loop.Replay, throw-away store and SQLite instance).

Prints one JSON object: the first model (day requested, verdict), per trigger (drift / performance,
which counts CBPE estimates when the spec's monitoring.performance.use_estimate is on) the detection
delay in days from the onset to the first retrain request on or after it, the false retrain requests
(any trigger but the first model's bootstrap) before the onset per month of monitoring with a champion,
every decision, the held-back days and the summary line. The performance trigger's delay on an injected
label-noise drop is bench/bench_monitoring.py's (orders, 30% labels flipped from 2024-05-01): its
figures are copied from bench/results/monitoring.json when present.

Two things are set here and recorded in the JSON (both measured, see the closing note of issue 10):
- `--baseline-margin` (default -0.1) replaces spec init's starting bar (-0.03) for "beats baseline": on
  this data the LogisticRegression baseline is the true model's form and beats both candidates by
  ~0.03 ROC AUC on the first holdout week (0.769 vs 0.740), so with the inferred spec no first model is
  ever deployed and there is nothing to monitor.

    .venv/bin/python bench/bench_orders.py [--days 240] [--step-days 7] [--baseline-margin -0.1]
        [--out bench/results/orders.json]
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
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


def _prepare(workdir: Path, days: int, baseline_margin: float | None) -> Path:
    """The example's files and the spec `ml-assets spec init` infers from them (as the README shows)."""
    cli = str(Path(sys.executable).parent / "ml-assets")
    for command in ([sys.executable, "-m", "ml_assets.examples.orders", "data", "--days", str(days)],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=240, help="days replayed from 2024-01-01 (default 240, all)")
    parser.add_argument("--step-days", type=int, default=7)
    parser.add_argument("--baseline-margin", type=float, default=-0.1,
                        help="promotion.baseline_margin roc_auc written over spec init's -0.03 (see above)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    workdir = replay_workdir("bench-orders-")
    from ml_assets.examples.orders import SHIFT_DAY, START

    spec_path = _prepare(workdir, args.days, args.baseline_margin)
    from ml_assets.defs.resources import select_spec

    select_spec(str(spec_path))
    load_before = os.getloadavg()
    began = time.perf_counter()
    from ml_assets.defs.dataset import SPEC
    from ml_assets.replay.command import _lander
    from ml_assets.replay.timeline import summary_line

    end = START + dt.timedelta(days=args.days - 1)
    data = workdir / "data"
    replay, rows, probe = run_replay(
        workdir, START, end, args.step_days,
        lander=_lander([str(data / "orders.csv"), f"outcomes={data / 'outcomes.jsonl'}"], None))
    total = time.perf_counter() - began
    result = {
        "benchmark": "orders",
        "command": f"ml-assets replay --spec orders.yaml --from orders.csv outcomes=outcomes.jsonl --start {START} "
                   f"--end {end} --step-days {args.step_days}",
        "commit": _commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "onset": SHIFT_DAY.isoformat(),
        "baseline_margin": args.baseline_margin,
        "uses_estimated_performance": SPEC.monitoring.performance.use_estimate,
        "total_seconds": round(total, 1),
        "stage_seconds": {k: round(v, 1) for k, v in replay.report.seconds.items()},
        "days": len(rows),
        "summary": summary_line(rows, replay.report),
        "held_back_days": {d: m[:200] for d, m in sorted(replay.report.failed_days.items())},
        "judged_drift_days": sum(r.drift != "-" for r in rows),
        "judged_performance_days": sum(r.live != "-" for r in rows),
        **detection(rows, SHIFT_DAY),
        "final_champion": rows[-1].champion if rows else None,
        "serving_probe_max_abs_diff": probe["max_abs_diff"] if probe else None,
    }
    monitoring = REPO / "bench" / "results" / "monitoring.json"
    if monitoring.exists():
        orders = json.loads(monitoring.read_text()).get("orders")
        result["label_noise_drop_from_bench_monitoring"] = orders
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
