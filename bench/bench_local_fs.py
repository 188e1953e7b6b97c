"""Spark Parquet writes on the local file system: Hadoop's RawLocalFileSystem (a `chmod` process
per created file and folder) vs ml_assets.hadoop.NoForkLocalFileSystem (modes set in the JVM).

Run:  cd /work/main && SPARK_LOCAL_IP=127.0.0.1 .venv/bin/python bench/bench_local_fs.py [--rounds 9] [--days 364]

One local[2] session from LazySparkResource (which puts the no-fork jar on the driver class path);
each round writes the same cached frame (900 rows per day) with partitionBy(day) once through
each class (fs.file.impl switched, Hadoop's FileSystem cache closed), the order alternating; a
first round warms both up and is not counted. Paired rounds make the comparison fair on a shared
machine. Prints ONE JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--days", type=int, default=364, help="partitions (day folders) per write")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    from ml_assets.defs.settings import DEFAULT_SPARK_CONFIG
    from ml_assets.resources.spark import LazySparkResource
    from ml_assets.storage.hadoop_local import DEFAULT_LOCAL_FS, NO_FORK_LOCAL_FS

    config = {**DEFAULT_SPARK_CONFIG, "spark.master": "local[2]", "spark.sql.shuffle.partitions": "2"}
    spark = LazySparkResource(spark_config=config).spark_session
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    if hadoop.get("fs.file.impl") != NO_FORK_LOCAL_FS:
        raise SystemExit("the no-fork local file system was not chosen (no javac? see the warning above)")
    from pyspark.sql import functions as F

    frame = (spark.range(0, args.days * 900).withColumn("day", (F.col("id") % args.days).cast("string"))
             .withColumn("x", F.rand(1)).repartition(2, "day").cache())
    frame.count()
    impls = {"raw": DEFAULT_LOCAL_FS, "nofork": NO_FORK_LOCAL_FS}
    times: dict[str, list[float]] = {"raw": [], "nofork": []}
    with tempfile.TemporaryDirectory(prefix="bench-local-fs-") as tmp:
        for round_ in range(args.rounds + 1):
            for name in (("raw", "nofork") if round_ % 2 else ("nofork", "raw")):
                hadoop.set("fs.file.impl", impls[name])
                spark._jvm.org.apache.hadoop.fs.FileSystem.closeAll()  # next lookup reads fs.file.impl
                target = os.path.join(tmp, f"{name}-{round_}")
                began = time.perf_counter()
                frame.write.partitionBy("day").parquet(target)
                elapsed = time.perf_counter() - began
                shutil.rmtree(target)
                if round_:  # round 0 warms up both classes
                    times[name].append(elapsed)
    spark.stop()
    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
    print(json.dumps({
        "benchmark": "local file system writes",
        "partitions_per_write": args.days, "rows_per_write": args.days * 900, "rounds": args.rounds,
        "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        "median_s": medians, "raw_over_nofork": round(medians["raw"] / medians["nofork"], 2),
        "paired_saving_median_s": round(statistics.median(
            r - n for r, n in zip(times["raw"], times["nofork"], strict=True)), 3),
        "seconds": {name: [round(x, 3) for x in values] for name, values in times.items()},
    }))


if __name__ == "__main__":
    main()
