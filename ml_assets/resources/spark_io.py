"""IO manager storing Spark DataFrames as one versioned Parquet dataset per daily partition.

Cluster-safe: when the store is reachable by every Spark node (`DatasetStore.shared`: the local
store's root folder, or the Azure container through hadoop-azure), executors read the stored
versions in place and write into a staging prefix inside the store, which the driver then
publishes by rename (local) or copy; rows are counted from Parquet footers (local) or by Spark.
Otherwise (the Azure store in its default 'download' mode) the driver downloads inputs into its
cache and Spark writes into a driver-local folder, which only works with a local[*] master: a
cluster master is refused with an error naming the setting to change.
"""

import json
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import dagster as dg

from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import LazySparkResource, SparkDataFrame
from ml_assets.storage import DatasetStore

_SPLIT_COLUMN = "__partition"


def table_name(asset_key: dg.AssetKey) -> str:
    return "__".join(asset_key.path)


def is_local_master(spark) -> bool:
    return spark.sparkContext.master.startswith("local")


def store_for_spark(spark, blob_store: BlobStoreResource) -> DatasetStore:
    """The dataset store, with the session given what it needs to reach it from every node."""
    datasets = blob_store.datasets()
    if not datasets.shared and not is_local_master(spark):
        raise dg.DagsterInvariantViolationError(
            f"Spark master {spark.sparkContext.master} runs executors on other nodes, but the blob store "
            f"{datasets.blobs.location} is only reachable through copies in the driver's cache "
            f"({datasets.cache_dir}): set ML_ASSETS_SPARK_FS=abfss (or wasbs) with the hadoop-azure "
            "connector on the cluster, or use a local[*] master"
        )
    settings = blob_store.hadoop_settings()
    if settings:
        hadoop = spark.sparkContext._jsc.hadoopConfiguration()
        for key, value in settings.items():
            hadoop.set(key, value)
    return datasets


def read_tables(spark, blob_store: BlobStoreResource, table: str, partitions: list[str]) -> SparkDataFrame:
    """The live versions of a table's partitions as one DataFrame, read where every node can.

    Exactly `spark.read.parquet(*paths)`, minus the Spark job it launches to infer the schema from a
    footer (~30-50 ms a read): the schema Spark recorded in its files' footers when the driver can
    read them, else the one Spark inferred for the same paths before (versions never change).
    """
    datasets = store_for_spark(spark, blob_store)
    paths = datasets.spark_paths(table, partitions)
    key = _schema_key(spark, paths)
    schema = _known_schema(key, datasets, paths)
    if schema is not None:
        return spark.read.schema(schema).parquet(*paths)
    frame = spark.read.parquet(*paths)
    _remember_schema(key, frame.schema)
    return frame


#: Schemas kept per exact tuple of version paths read (and the session settings that type them).
SCHEMA_CACHE_ENTRIES = 1024
_SCHEMAS: OrderedDict[tuple, object] = OrderedDict()
_SCHEMAS_LOCK = threading.Lock()
# Session settings that change how Spark types a Parquet file without Spark's own schema in it.
_SCHEMA_SETTINGS = (
    "spark.sql.parquet.binaryAsString", "spark.sql.parquet.int96AsTimestamp",
    "spark.sql.parquet.inferTimestampNTZ.enabled", "spark.sql.legacy.parquet.nanosAsLong",
    "spark.sql.parquet.mergeSchema",
)


def _schema_key(spark, paths: list[str]) -> tuple:
    settings = tuple(spark.conf.get(name, None) for name in _SCHEMA_SETTINGS)
    return spark.sparkContext.applicationId, settings, tuple(paths)


def _known_schema(key: tuple, datasets: DatasetStore, paths: list[str]):
    """The schema Spark would infer for paths, without a Spark job; None if unsure."""
    with _SCHEMAS_LOCK:
        if key in _SCHEMAS:
            _SCHEMAS.move_to_end(key)
            return _SCHEMAS[key]
    recorded = datasets.footer_spark_schema(paths)
    if recorded is None:
        return None
    schema = _spark_schema(recorded)
    if schema is not None:
        _remember_schema(key, schema)
    return schema


def _spark_schema(recorded: str):
    """Spark's schema from a footer's JSON, made nullable as Spark does for a file source
    (DataSource.resolveRelation: dataSchema.asNullable); None if it is not a JSON struct."""
    from pyspark.sql.types import StructType

    try:
        parsed = json.loads(recorded)
        if not isinstance(parsed, dict) or parsed.get("type") != "struct":
            return None
        return _as_nullable(StructType.fromJson(parsed))
    except (ValueError, KeyError, TypeError):  # an old Spark's case-class text: let Spark read it
        return None


def _as_nullable(data_type):
    from pyspark.sql.types import ArrayType, MapType, StructField, StructType

    if isinstance(data_type, StructType):
        return StructType(
            [StructField(f.name, _as_nullable(f.dataType), True, f.metadata) for f in data_type.fields]
        )
    if isinstance(data_type, ArrayType):
        return ArrayType(_as_nullable(data_type.elementType), True)
    if isinstance(data_type, MapType):
        return MapType(_as_nullable(data_type.keyType), _as_nullable(data_type.valueType), True)
    return data_type


def _remember_schema(key: tuple, schema) -> None:
    with _SCHEMAS_LOCK:
        _SCHEMAS[key] = schema
        _SCHEMAS.move_to_end(key)
        while len(_SCHEMAS) > SCHEMA_CACHE_ENTRIES:
            _SCHEMAS.popitem(last=False)


class SparkParquetIOManager(dg.ConfigurableIOManager):
    """Writes each partition of a (possibly multi-partition) output as its own dataset version.

    A single-run backfill hands over one DataFrame for the whole range; it is written in one
    Spark job and split by its `date` column, and every partition is published atomically.
    Loading returns one DataFrame over the requested partitions, read by Spark.
    """

    blob_store: dg.ResourceDependency[BlobStoreResource]
    pyspark: dg.ResourceDependency[LazySparkResource]

    def handle_output(self, context: dg.OutputContext, obj: SparkDataFrame | None) -> None:
        if obj is None:
            return
        table = table_name(context.asset_key)
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else [""]
        datasets = store_for_spark(obj.sparkSession, self.blob_store)
        rows = _write_split(obj, datasets, table, keys)
        # Dagster copies output metadata onto every partition's event, so a range gets a
        # summary of constant size, not a per-day map that would grow with the square of its length.
        context.add_output_metadata(
            {
                "rows": dg.MetadataValue.int(sum(rows.values())),
                "partitions_written": dg.MetadataValue.int(len(keys)),
                "fewest_rows_in_a_partition": dg.MetadataValue.int(min(rows.values())),
                "most_rows_in_a_partition": dg.MetadataValue.int(max(rows.values())),
                "storage": dg.MetadataValue.text(datasets.blobs.describe(f"tables/{table}/")),
            }
        )

    def load_input(self, context: dg.InputContext) -> SparkDataFrame:
        upstream = context.upstream_output
        if upstream is None or upstream.asset_key is None:
            raise dg.DagsterInvariantViolationError("SparkParquetIOManager only loads asset inputs")
        table = table_name(upstream.asset_key)
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
        else:
            keys = self.blob_store.datasets().partitions(table) or [""]
        return read_tables(self.pyspark.spark_session, self.blob_store, table, keys)


def _split_dirname(key: str) -> str:
    return f"{_SPLIT_COLUMN}={key or 'all'}"


def _split(frame: SparkDataFrame, keys: list[str]):
    from pyspark.sql import functions as F

    if keys == [""]:
        return F.lit("all")
    if PARTITION_COLUMN not in frame.columns:
        raise ValueError(f"a partitioned output needs a {PARTITION_COLUMN!r} column; got {frame.columns}")
    return F.date_format(F.col(PARTITION_COLUMN), "yyyy-MM-dd")


def _check_no_strays(written: set[str], keys: list[str]) -> None:
    expected = {key or "all" for key in keys}
    stray = sorted(written - expected)
    if stray:
        raise ValueError(
            f"output has rows for partitions outside this run {sorted(expected)}: {stray[:5]}"
        )


def _write_empty(frame: SparkDataFrame, location: str) -> None:
    # A day without rows is still a materialized (empty) partition with the right schema.
    frame.sparkSession.createDataFrame([], frame.schema).coalesce(1).write.parquet(location)


def _write_split(frame: SparkDataFrame, datasets: DatasetStore, table: str, keys: list[str]) -> dict[str, int]:
    """Write and publish every partition of frame; returns rows per partition ("all" if unpartitioned)."""
    if datasets.shared:
        return _write_in_store(frame, datasets, table, keys)
    return _write_via_driver(frame, datasets, table, keys)


def _write_in_store(frame: SparkDataFrame, datasets: DatasetStore, table: str, keys: list[str]) -> dict[str, int]:
    """Executors write into a staging prefix of the store; each partition is then published from it."""
    staging = datasets.new_staging(table)
    uri = datasets.spark_uri(staging)
    try:
        frame.withColumn(_SPLIT_COLUMN, _split(frame, keys)).write.partitionBy(_SPLIT_COLUMN).parquet(
            uri, mode="overwrite"
        )
        staged = _staged_by_key(datasets, staging)
        _check_no_strays(set(staged), keys)
        missing = [key or "all" for key in keys if (key or "all") not in staged]
        if missing:
            _stage_empty(frame, datasets, table, staging, missing)
            staged = _staged_by_key(datasets, staging)
        rows = _count_staged(frame, datasets, uri, staged, keys, set(missing))
        datasets.publish_staged_many(table, {key: staged[key or "all"] for key in keys})
    finally:
        datasets.discard(staging)
    return rows


def _staged_by_key(datasets: DatasetStore, staging: str) -> dict[str, list[str]]:
    return {folder.split("=", 1)[1]: files for folder, files in datasets.staged_files(staging).items()}


def _stage_empty(frame: SparkDataFrame, datasets: DatasetStore, table: str, staging: str, missing: list[str]) -> None:
    """Stage an empty file (the output's schema) for every day without rows: ONE Spark job writes
    it once, the driver copies it into each day's folder (a year of empty days is not 365 jobs)."""
    side = datasets.new_staging(table)
    scratch = Path(tempfile.mkdtemp(prefix="empty-", dir=_scratch(datasets)))
    try:
        _write_empty(frame, datasets.spark_uri(side))
        written = [
            k for k in datasets.blobs.list_keys(f"{side}/")
            if k.endswith(".parquet") and not k.rsplit("/", 1)[1].startswith(("_", "."))
        ]
        if not written:
            raise RuntimeError(f"Spark wrote no Parquet file for an empty frame under {side}")
        local = scratch / "empty.parquet"
        datasets.blobs.download_file(written[0], local)
        for key in missing:
            datasets.blobs.put_file(f"{staging}/{_split_dirname(key)}/part-00000-empty.parquet", local)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        datasets.discard(side)


def _scratch(datasets: DatasetStore) -> Path:
    scratch = datasets.cache_dir / "spark-out"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _count_staged(
    frame: SparkDataFrame, datasets: DatasetStore, uri: str, staged: dict[str, list[str]],
    keys: list[str], empty: set[str],
) -> dict[str, int]:
    """Rows per staged partition: Parquet footers on the driver (local store), else ONE grouped
    count by Spark over the whole staging folder (one row per day comes back, not one job per day)."""
    counts: dict[str, int] | None = None
    rows = {}
    for key in keys:
        name = key or "all"
        if name in empty:
            rows[name] = 0
            continue
        counted = datasets.footer_rows(staged[name])
        if counted is None:  # a remote store: Spark reads the footers on the executors
            if counts is None:
                counts = _spark_counts(frame.sparkSession, uri)
            counted = counts.get(name, 0)
        rows[name] = counted
    return rows


def _spark_counts(spark, uri: str) -> dict[str, int]:
    from pyspark.sql import functions as F

    # Partition discovery may type "2024-01-01" as a date: cast back to the folder's text.
    day = F.col(_SPLIT_COLUMN).cast("string")
    grouped = spark.read.parquet(uri).groupBy(day.alias("day")).count()
    return {row["day"]: row["count"] for row in grouped.collect()}


def _write_via_driver(frame: SparkDataFrame, datasets: DatasetStore, table: str, keys: list[str]) -> dict[str, int]:
    """local[*] with a store executors cannot reach: write to a driver-local folder, then upload."""
    import pyarrow.parquet as pq

    staging = Path(tempfile.mkdtemp(prefix=f"{table}-", dir=_scratch(datasets)))
    try:
        frame.withColumn(_SPLIT_COLUMN, _split(frame, keys)).write.partitionBy(_SPLIT_COLUMN).parquet(
            str(staging), mode="overwrite"
        )
        _check_no_strays({p.name.split("=", 1)[1] for p in staging.glob(f"{_SPLIT_COLUMN}=*")}, keys)
        rows = {}
        for key in keys:
            folder = staging / _split_dirname(key)
            if not folder.exists():
                _write_empty(frame, str(folder))
            rows[key or "all"] = sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))
        for key in keys:
            datasets.publish(table, key, staging / _split_dirname(key))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows
