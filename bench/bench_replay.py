"""`make demo` end to end, timed: the flights replay of January-June 2013 (181 days, 7 at a time).

Runs the replay in process exactly as `ml-assets replay --spec flights --start 2013-01-01 --end
2013-06-30 --step-days 7` does, in a throw-away store and Dagster instance (SQLite, as `make demo`),
and prints one JSON object: total seconds, seconds per stage (land; materialize = raw + features and
labels + clusters; monitoring; training; serving), the days, the held-back days and every decision
(the day a retrain was requested, its trigger and as-of day, the gate's outcome, the deployed
version). `--out` writes it to bench/results/replay.json. The load average before and after is
reported: on a shared machine the seconds are not those of a quiet one.

The instance's SQLite storage goes through ml_assets.defs.instance_storage.TunedSqliteStorage as
`ml-assets replay` does; `--default-storage` uses Dagster's own SQLite classes (same files) to
measure what the tuning saves; `--per-day` runs raw and monitoring one day per run.

    .venv/bin/python bench/bench_replay.py [--start 2013-01-01] [--end 2013-06-30] [--step-days 7]
        [--default-storage] [--per-day] [--out PATH]
"""

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _replay import replay_workdir, run_replay  # noqa: E402 - bench/ is the script's folder

TARGET_SECONDS = 150.0
MATERIALIZE = ("raw", "features_labels", "clusters")


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--end", default="2013-06-30")
    parser.add_argument("--step-days", type=int, default=7)
    parser.add_argument("--per-day", action="store_true",
                        help="raw and monitoring as one run per day (the path before range runs), for comparison")
    parser.add_argument("--default-storage", action="store_true",
                        help="Dagster's own SQLite storage classes (before the tuned storage), for comparison")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    workdir = replay_workdir("bench-replay-")
    from ml_assets.defs.settings import select_spec

    select_spec("flights")
    load_before = os.getloadavg()
    began = time.perf_counter()
    replay, rows, probe = run_replay(workdir, dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end),
                                     args.step_days, per_day=args.per_day,
                                     default_storage=args.default_storage)
    total = time.perf_counter() - began
    seconds = replay.report.seconds
    stages = {
        "land": seconds.get("land", 0.0),
        "materialize": sum(seconds.get(s, 0.0) for s in MATERIALIZE),
        "monitoring": seconds.get("monitoring", 0.0),
        "training": seconds.get("training", 0.0),
        "serving": seconds.get("serving", 0.0),
    }
    decisions = [{"day": r.day, "action": r.action, "verdict": r.verdict.split(" - ")[0],
                  "champion_after": r.champion} for r in rows if r.verdict != "-"]
    text = json.dumps({
        "benchmark": "replay",
        "mode": "per-day raw and monitoring runs" if args.per_day else "range runs",
        "dagster_storage": "Dagster's SqliteStorage" if args.default_storage else "TunedSqliteStorage",
        "command": f"ml-assets replay --spec flights --start {args.start} --end {args.end} --step-days {args.step_days}",
        "commit": _commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "total_seconds": round(total, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
        "detail_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "days": len(rows),
        "held_back_days": sorted(r.day for r in rows if r.status == "held back"),
        "decisions": decisions,
        "champion": rows[-1].champion if rows else None,
        "serving_probe_max_abs_diff": probe["max_abs_diff"] if probe else None,
        "target_seconds": TARGET_SECONDS,
        "meets_target": total <= TARGET_SECONDS,
    }, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
