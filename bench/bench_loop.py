"""Time from a day landing to a retrained model serving, at demo scale; prints one JSON object.

Everything runs as in the main job (``ml-assets demo``), in a throw-away store and Dagster instance:
January 2013 up to 4 February is landed at once and the first model is trained and served. Then one
day at a time is landed and the whole path is timed, from the landing of the day to the HTTP
server answering with the new version: raw (per source, with its checks), features and labels (Spark),
clusters, drift and live performance, the retraining sensors' tick, the training run (both
candidates, evaluation, promotion gate, deployment), the new champion's reference statistics, and
the server's hot swap. The spec is the bundled flights spec with debounce 1, cooldown 0 and a low
drift-share threshold, so that every new day requests a retrain: the timing is of the path, not of
waiting for drift. Days are landed until a candidate passes the gate and serves (at most 8).
"""

import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_SECONDS = 180.0
BOOTSTRAP_END = dt.date(2013, 2, 4)
MAX_DAYS = 8


def eager_spec(workdir: Path) -> Path:
    from ml_assets.spec.model import BUNDLED_SPECS_DIR

    spec = yaml.safe_load((BUNDLED_SPECS_DIR / "flights.yaml").read_text())
    monitoring = spec.setdefault("monitoring", {})
    monitoring.setdefault("drift", {})["share_threshold"] = 0.05
    monitoring["retraining"] = {"debounce_days": 1, "cooldown_days": 0, "fallback_cron": None}
    path = workdir / "flights-eager.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    os.environ.update({
        "ML_ASSETS_SPEC": str(eager_spec(workdir)),
        "ML_ASSETS_STORE_ROOT": str(workdir / "store"),
        "ML_ASSETS_CACHE_DIR": str(workdir / "cache"),
        "ML_ASSETS_OUTBOX_DIR": str(workdir / "outbox"),
    })
    import dagster as dg

    from ml_assets.definitions import defs
    from ml_assets.demo import Demo

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    (workdir / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(workdir / "dagster_home")) as instance:
        demo = Demo(defs, instance, log=log)
        began = time.perf_counter()
        (first,) = [r for r in demo.run_loop(dt.date(2013, 1, 1), BOOTSTRAP_END, step_days=35)
                    if r.seconds_to_serving]
        bootstrap = {"days_landed": 35, "seconds_to_serving": round(first.seconds_to_serving, 1),
                     "total_seconds": round(time.perf_counter() - began, 1)}
        log(f"bootstrap: v{first.champion} serving {first.seconds_to_serving:.0f} s after 35 days landed")
        days = []
        day = BOOTSTRAP_END + dt.timedelta(days=1)
        while len(days) < MAX_DAYS:
            began = time.perf_counter()
            (row,) = demo.run_loop(day, day, step_days=1)
            days.append({"day": row.day, "action": row.action, "verdict": row.verdict[:120],
                         "seconds_to_decision": round(time.perf_counter() - began, 1),
                         "seconds_to_serving": round(row.seconds_to_serving, 1) if row.seconds_to_serving else None})
            log(f"{row.day}: {row.action}; {row.verdict[:80]}; {days[-1]['seconds_to_decision']} s")
            if row.seconds_to_serving:
                break
            day += dt.timedelta(days=1)
    served = [d["seconds_to_serving"] for d in days if d["seconds_to_serving"]]
    print(json.dumps({
        "benchmark": "landing_to_serving",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "bootstrap": bootstrap,
        "days": days,
        "landing_to_serving_seconds": served[0] if served else None,
        "median_day_to_decision_seconds": sorted(d["seconds_to_decision"] for d in days)[len(days) // 2],
        "stage_seconds": {k: round(v, 1) for k, v in demo.report.seconds.items()},
        "target_seconds": TARGET_SECONDS,
        "meets_target": bool(served) and served[0] < TARGET_SECONDS,
    }, indent=2))


if __name__ == "__main__":
    main()
