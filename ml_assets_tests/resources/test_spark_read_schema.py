"""read_tables skips Spark's schema-inference job, and returns exactly what spark.read.parquet gives.

Real local Spark over a local store: partitions written by Spark (schema from their footers, no
job), by pyarrow (Spark infers once per exact set of versions), mixed schemas and files that make
the footer shortcut unsure (Spark infers every time), and an empty day's file.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_assets.resources.spark_io import _write_split, read_tables, store_for_spark
from ml_assets.storage import DatasetStore
from ml_assets.storage.local import LocalBlobStore

pytestmark = pytest.mark.spark

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


def _jobs(spark, read):
    """(DataFrame read, Spark jobs the read itself launched)."""
    group = f"read-{uuid.uuid4().hex}"
    spark.sparkContext.setJobGroup(group, "schema inference count")
    try:
        frame = read()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    return frame, len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def _assert_same_as_plain(spark, store, table, days):
    """read_tables equals spark.read.parquet on the same paths (schema and rows); returns its job count."""
    paths = store_for_spark(spark, store).spark_paths(table, days)
    frame, jobs = _jobs(spark, lambda: read_tables(spark, store, table, days))
    plain = spark.read.parquet(*paths)
    assert frame.schema == plain.schema
    assert frame.schema.json() == plain.schema.json()  # field metadata and nullability included
    assert sorted(map(repr, frame.collect())) == sorted(map(repr, plain.collect()))
    return jobs


def _spark_frame(spark):
    from pyspark.sql.types import (
        ArrayType,
        DateType,
        DoubleType,
        IntegerType,
        MapType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    # Non-nullable fields at every level: Spark reads them back nullable (asNullable).
    schema = StructType([
        StructField("date", DateType(), False),
        StructField("n", IntegerType(), False, {"comment": "kept"}),
        StructField("x", DoubleType(), True),
        StructField("name", StringType(), True),
        StructField("at", TimestampType(), True),
        StructField("tags", ArrayType(IntegerType(), False), False),
        StructField("scores", MapType(StringType(), DoubleType(), False), True),
        StructField("inner", StructType([StructField("a", IntegerType(), False)]), False),
    ])
    rows = [
        (dt.date(2024, 1, day), i, i / 3, f"r{i}", dt.datetime(2024, 1, day, i % 24), [i, i + 1],
         {"s": float(i)}, (i,))
        for day in (1, 2) for i in range(day * 5)
    ]  # 2024-01-03 has no rows: an empty file of the output's schema
    return spark.createDataFrame(rows, schema)


def test_spark_written_partitions_need_no_inference_job(spark, local_resource):
    datasets = store_for_spark(spark, local_resource)
    rows = _write_split(_spark_frame(spark), datasets, "spark_made", DAYS)
    assert rows == {"2024-01-01": 5, "2024-01-02": 10, "2024-01-03": 0}

    assert _assert_same_as_plain(spark, local_resource, "spark_made", DAYS) == 0
    assert _assert_same_as_plain(spark, local_resource, "spark_made", ["2024-01-03"]) == 0  # empty day alone
    assert _assert_same_as_plain(spark, local_resource, "spark_made", DAYS[1:]) == 0
    _, plain_jobs = _jobs(spark, lambda: spark.read.parquet(*datasets.spark_paths("spark_made", DAYS)))
    assert plain_jobs == 1  # what the shortcut saves: Spark's job reading a footer


def _publish_arrow(datasets: DatasetStore, table: str, day: str, tmp_path, table_data: pa.Table):
    folder = tmp_path / f"arrow-{uuid.uuid4().hex}"
    folder.mkdir()
    pq.write_table(table_data, folder / "part-00000.parquet")
    datasets.publish(table, day, folder)


def test_pyarrow_partitions_are_inferred_once_per_set_of_versions(spark, local_resource, tmp_path):
    datasets = store_for_spark(spark, local_resource)
    for i, day in enumerate(DAYS):
        data = pa.table({
            "date": pa.array([dt.date(2024, 1, i + 1)] * 3, pa.date32()),
            "flight": pa.array([1, 2, None], pa.int64()),
            "carrier": pa.array(["AA", None, "UA"]),
            "dep": pa.array([dt.datetime(2024, 1, 1, 5)] * 3, pa.timestamp("us")),
        })
        _publish_arrow(datasets, "arrow_made", day, tmp_path, data)

    assert _assert_same_as_plain(spark, local_resource, "arrow_made", DAYS) == 1
    assert _assert_same_as_plain(spark, local_resource, "arrow_made", DAYS) == 0  # same versions: kept
    assert _assert_same_as_plain(spark, local_resource, "arrow_made", DAYS[:2]) == 1  # other paths: inferred

    # A new version of a day is a new path: never the kept schema of the old one.
    changed = pa.table({"date": pa.array([dt.date(2024, 1, 1)], pa.date32()), "flight": pa.array([7]),
                        "gate": pa.array(["B2"])})
    _publish_arrow(datasets, "arrow_made", DAYS[0], tmp_path, changed)
    assert _assert_same_as_plain(spark, local_resource, "arrow_made", DAYS) == 1


def test_mixed_or_doubtful_files_fall_back_to_spark_inference(spark, local_resource, tmp_path):
    datasets = store_for_spark(spark, local_resource)
    first = spark.createDataFrame([(dt.date(2024, 1, 1), 1)], "date date, n int")
    second = spark.createDataFrame([(dt.date(2024, 1, 2), 2, "b")], "date date, n int, extra string")
    _write_split(first, datasets, "mixed", DAYS[:1])
    _write_split(second, datasets, "mixed", DAYS[1:2])
    arrow = pa.table({"date": pa.array([dt.date(2024, 1, 3)], pa.date32()), "n": pa.array([3], pa.int32())})
    _publish_arrow(datasets, "mixed", DAYS[2], tmp_path, arrow)

    paths = datasets.spark_paths("mixed", DAYS)
    assert datasets.footer_spark_schema(paths[:2]) is None  # two different Spark schemas
    assert datasets.footer_spark_schema([paths[0], paths[2]]) is None  # one file without Spark's key
    assert _assert_same_as_plain(spark, local_resource, "mixed", DAYS[:2]) == 1
    assert _assert_same_as_plain(spark, local_resource, "mixed", [DAYS[0], DAYS[2]]) == 1


def test_footer_schema_only_for_plain_local_folders(spark, local_resource, tmp_path):
    datasets = store_for_spark(spark, local_resource)
    _write_split(spark.createDataFrame([(dt.date(2024, 1, 1), 1)], "date date, n int"), datasets, "t", DAYS[:1])
    (path,) = datasets.spark_paths("t", DAYS[:1])
    assert '"name":"n"' in datasets.footer_spark_schema([path])

    nested = tmp_path / "nested"
    (nested / "k=1").mkdir(parents=True)
    pq.write_table(pa.table({"n": [1]}), nested / "k=1" / "part-0.parquet")
    assert datasets.footer_spark_schema([str(nested)]) is None  # Spark's partition discovery: its call
    summary = tmp_path / "summary"
    summary.mkdir()
    pq.write_table(pa.table({"n": [1]}), summary / "_common_metadata")
    assert datasets.footer_spark_schema([str(summary)]) is None
    not_parquet = tmp_path / "text"
    not_parquet.mkdir()
    (not_parquet / "part-0.parquet").write_text("not parquet")
    assert datasets.footer_spark_schema([str(not_parquet)]) is None
    assert datasets.footer_spark_schema([path.replace("date=", "date*")]) is None  # a glob
    assert datasets.footer_spark_schema([str(tmp_path / "missing")]) is None

    remote = DatasetStore(LocalBlobStore(tmp_path / "store"), tmp_path / "cache",
                          spark_root="abfss://c@account.dfs.core.windows.net")
    assert remote.footer_spark_schema(remote.spark_paths("t", DAYS[:1])) is None


@pytest.mark.azurite
def test_azure_download_mode_reads_the_footers_of_the_driver_copies(spark, azurite, tmp_path):
    from ml_assets_tests.fixtures.dagster import azure_store_resource

    store = azure_store_resource(azurite, f"ml-{uuid.uuid4().hex[:12]}", tmp_path)
    datasets = store_for_spark(spark, store)
    assert not datasets.shared  # Spark reads the copies downloaded into the driver's cache
    _write_split(_spark_frame(spark), datasets, "spark_made", DAYS)
    assert _assert_same_as_plain(spark, store, "spark_made", DAYS) == 0
