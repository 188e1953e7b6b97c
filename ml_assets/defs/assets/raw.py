"""Raw sources: each landed day parsed against the spec and kept as typed Parquet."""

import datetime as dt
import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from ml_assets.defs.dataset import SPEC
from ml_assets.defs.freshness import data_freshness
from ml_assets.defs.partitions import daily_partitions
from ml_assets.ml.raw import MalformedBlobError, parse_blob
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import BlobStore

if TYPE_CHECKING:
    import pyarrow as pa

RAW_GROUP = "raw"
ROW_COUNT_CHECK = "row_count"
NULL_RATES_CHECK = "null_rates"


def raw_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{source}")


def day_version(blobs) -> str:
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(f"{blob.key}:{blob.sha256}\n".encode())
    return digest.hexdigest()[:16]


def _read_day(store: BlobStore, source: str, day: dt.date) -> tuple["pa.Table", list]:
    prefix = SPEC.blob_prefix(source, day) + "/"
    blobs = list(store.list(prefix))
    if not blobs:
        raise dg.Failure(
            description=f"no blob landed under {store.describe(prefix)}: {source} is missing {day}",
            allow_retries=False,
        )
    tables = []
    for blob in blobs:
        try:
            tables.append(
                parse_blob(store.get(blob.key), SPEC.sources[source], store.describe(blob.key), day, SPEC.zone)
            )
        except MalformedBlobError as exc:
            raise dg.Failure(description=str(exc), metadata={"blob": store.describe(blob.key)},
                             allow_retries=False) from exc
    import pyarrow as pa  # imported here: the code location loads this module

    return pa.concat_tables(tables), blobs


def _quality_checks(source: str, table: "pa.Table") -> list[dg.AssetCheckResult]:
    rows = table.num_rows
    null_rates = {name: table.column(name).null_count / rows for name in SPEC.sources[source].columns}
    over = {
        name: rate for name, rate in null_rates.items()
        if rate > SPEC.quality.null_bound(f"{source}.{name}")
    }
    return [
        dg.AssetCheckResult(
            check_name=ROW_COUNT_CHECK,
            passed=rows >= SPEC.sources[source].min_rows,
            metadata={"rows": rows, "min_rows": SPEC.sources[source].min_rows},
            description=None if rows >= SPEC.sources[source].min_rows else f"{rows} rows < {SPEC.sources[source].min_rows}",
        ),
        dg.AssetCheckResult(
            check_name=NULL_RATES_CHECK,
            passed=not over,
            metadata={
                "null_rates": dg.MetadataValue.json({k: round(v, 4) for k, v in null_rates.items()}),
                "over_bound": dg.MetadataValue.json(
                    {k: {"rate": round(v, 4), "bound": SPEC.quality.null_bound(f"{source}.{k}")}
                     for k, v in over.items()}
                ),
            },
            description=f"null rate over bound: {sorted(over)}" if over else None,
        ),
    ]


def build_raw_asset(source: str) -> dg.AssetsDefinition:
    key = raw_asset_key(source)
    source_spec = SPEC.sources[source]

    @dg.asset(
        key=key,
        group_name=RAW_GROUP,
        partitions_def=daily_partitions,
        io_manager_key="spark_io",
        code_version="1",
        kinds={"azure", "parquet"},
        freshness_policy=data_freshness,
        description=f"Landed `{source_spec.prefix}` blobs of one day, parsed against the spec.",
        check_specs=[
            dg.AssetCheckSpec(ROW_COUNT_CHECK, asset=key, blocking=True,
                              description="The day has at least quality.min_rows rows"),
            dg.AssetCheckSpec(NULL_RATES_CHECK, asset=key, blocking=True,
                              description="Each column's null rate is within its bound"),
        ],
    )
    def raw_source(context: dg.AssetExecutionContext, blob_store: BlobStoreResource) -> dg.MaterializeResult:
        import pyarrow.parquet as pq  # imported here: the code location loads this module

        day = dt.date.fromisoformat(context.partition_key)
        store = blob_store.blob_store()
        table, blobs = _read_day(store, source, day)
        with tempfile.TemporaryDirectory() as staging:
            pq.write_table(table, Path(staging) / "part-00000.parquet")
            version = blob_store.datasets().publish(key.path[-1], context.partition_key, Path(staging))
        return dg.MaterializeResult(
            data_version=dg.DataVersion(day_version(blobs)),
            metadata={
                "rows": table.num_rows,
                "blobs": dg.MetadataValue.json([store.describe(b.key) for b in blobs]),
                "bytes": sum(b.size for b in blobs),
                "sha256": dg.MetadataValue.json({b.key: b.sha256 for b in blobs}),
                "stored_version": version.version,
            },
            check_results=_quality_checks(source, table),
        )

    return raw_source


raw_assets = [build_raw_asset(source) for source in SPEC.sources]
