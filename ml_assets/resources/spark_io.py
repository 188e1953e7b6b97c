"""IO manager storing Spark DataFrames as one versioned Parquet dataset per daily partition."""

import shutil
import tempfile
from pathlib import Path

import dagster as dg

from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import LazySparkResource, SparkDataFrame

_SPLIT_COLUMN = "__partition"


def table_name(asset_key: dg.AssetKey) -> str:
    return "__".join(asset_key.path)


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
        datasets = self.blob_store.datasets()
        staging = Path(tempfile.mkdtemp(prefix=f"{table}-", dir=_scratch_dir(datasets.cache_dir)))
        try:
            rows = _write_split(obj, staging, keys)
            for key in keys:
                datasets.publish(table, key, staging / _split_dirname(key))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
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
        datasets = self.blob_store.datasets()
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
        else:
            keys = datasets.partitions(table) or [""]
        paths = datasets.local_paths(table, keys)
        return self.pyspark.spark_session.read.parquet(*paths)


def _split_dirname(key: str) -> str:
    return f"{_SPLIT_COLUMN}={key or 'all'}"


def _scratch_dir(cache_dir: Path) -> Path:
    scratch = cache_dir / "spark-out"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _write_split(frame: SparkDataFrame, staging: Path, keys: list[str]) -> dict[str, int]:
    """Write frame under staging/__partition=<key>/ for every key; returns rows per key."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    if keys == [""]:
        split = F.lit("all")
    elif PARTITION_COLUMN not in frame.columns:
        raise ValueError(f"a partitioned output needs a {PARTITION_COLUMN!r} column; got {frame.columns}")
    else:
        split = F.date_format(F.col(PARTITION_COLUMN), "yyyy-MM-dd")
    frame.withColumn(_SPLIT_COLUMN, split).write.partitionBy(_SPLIT_COLUMN).parquet(
        str(staging), mode="overwrite"
    )
    written = {p.name.split("=", 1)[1] for p in staging.glob(f"{_SPLIT_COLUMN}=*")}
    expected = {key or "all" for key in keys}
    stray = sorted(written - expected)
    if stray:
        raise ValueError(
            f"output has rows for partitions outside this run {sorted(expected)}: {stray[:5]}"
        )
    spark = frame.sparkSession
    rows = {}
    for key in keys:
        folder = staging / _split_dirname(key)
        if not folder.exists():
            # A day without rows is still a materialized (empty) partition with the right schema.
            spark.createDataFrame([], frame.schema).coalesce(1).write.parquet(str(folder))
        rows[key or "all"] = sum(
            pq.ParquetFile(part).metadata.num_rows for part in folder.glob("*.parquet")
        )
    return rows
