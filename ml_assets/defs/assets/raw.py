"""Raw sources: each landed day parsed against the spec and kept as typed Parquet."""

import datetime as dt
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import STORE_RETRY
from ml_assets.defs.freshness import data_freshness
from ml_assets.defs.partitions import daily_partitions
from ml_assets.defs.raw_state import earlier_run_executing, latest_check_results, stored_versions
from ml_assets.ml.raw import MalformedBlobError, parse_blob
from ml_assets.ml.raw_clock import clock_report
from ml_assets.ml.raw_folder import content_digest, duplicate_blobs, split_day_folder
from ml_assets.ml.unique_keys import duplicate_keys
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import BlobStore

if TYPE_CHECKING:
    import pyarrow as pa

RAW_GROUP = "raw"
ROW_COUNT_CHECK = "row_count"
NULL_RATES_CHECK = "null_rates"
UNIQUE_KEYS_CHECK = "unique_keys"
CLOCK_CHECK = "clock"


def raw_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{source}")


def day_version(blobs) -> str:
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(f"{blob.key}:{blob.sha256}\n".encode())
    return digest.hexdigest()[:16]


def check_names(source: str) -> list[str]:
    """The raw asset's checks for a source: keys and clock only where the spec declares them."""
    return [ROW_COUNT_CHECK, NULL_RATES_CHECK,
            *([UNIQUE_KEYS_CHECK] if SPEC.source_keys(source) else []),
            *([CLOCK_CHECK] if SPEC.sources[source].clock else [])]


def _list_day(store: BlobStore, source: str, day: dt.date) -> tuple[list, list[str]]:
    """Every blob of the day folder (its version covers them all, as the sensor's does) and the data keys."""
    prefix = SPEC.blob_prefix(source, day) + "/"
    blobs = list(store.list(prefix))
    folder = split_day_folder(SPEC.sources[source], prefix, [b.key for b in blobs])
    if not folder.data:
        ignored = f" (ignored: {[k[len(prefix):] for k in folder.ignored]}, patterns " \
                  f"{SPEC.sources[source].file_patterns})" if folder.ignored else ""
        raise dg.Failure(
            description=f"no blob landed under {store.describe(prefix)}{ignored}: {source} is missing {day}",
            allow_retries=False,
        )
    return blobs, folder.data


def _malformed(store: BlobStore, key: str, message: str) -> dg.Failure:
    return dg.Failure(description=message, metadata={"blob": store.describe(key)}, allow_retries=False)


def _read_day(store: BlobStore, source: str, day: dt.date,
              listed: tuple[list, list[str]] | None = None) -> tuple["pa.Table", list]:
    """The day's parsed data blobs and every blob listed (bench/ calls it without a listing)."""
    blobs, keys = listed or _list_day(store, source, day)
    arrived = {b.key: b.last_modified for b in blobs}
    contents = {key: store.get(key) for key in sorted(keys, key=lambda k: (arrived[k], k))}
    # A second copy of a file would double the day's rows: refuse it by content, naming both.
    if copies := duplicate_blobs({key: content_digest(data) for key, data in contents.items()}):
        first, copy = copies[0]
        raise _malformed(store, copy, f"{store.describe(copy)}: same content as {store.describe(first)} "
                                      f"(sha256 equal); remove one copy")
    tables = []
    for key, data in contents.items():
        try:
            tables.append(parse_blob(data, SPEC.sources[source], store.describe(key), day, SPEC.zone))
        except MalformedBlobError as exc:
            raise _malformed(store, key, str(exc)) from exc
    import pyarrow as pa  # imported here: the code location loads this module

    return pa.concat_tables(tables), blobs


def _integrity_checks(source: str, table: "pa.Table") -> list[dg.AssetCheckResult]:
    """Keys and clock: a day failing these is not stored, so the stored good version survives."""
    results = []
    if keys := SPEC.source_keys(source):
        report = duplicate_keys(table, keys)
        results.append(dg.AssetCheckResult(
            check_name=UNIQUE_KEYS_CHECK, passed=report.passed,
            description=None if report.passed else report.describe(),
            metadata={"key_columns": dg.MetadataValue.json(keys), "duplicated_keys": report.duplicated_keys,
                      "extra_rows": report.extra_rows, "first_duplicates": dg.MetadataValue.json(report.first)},
        ))
    source_spec = SPEC.sources[source]
    if (clock := clock_report(table, source_spec, SPEC.zone)) is not None:
        results.append(dg.AssetCheckResult(
            check_name=CLOCK_CHECK, passed=clock.passed,
            description=None if clock.passed else clock.describe(source_spec.timestamp_column),
            metadata={"rows": clock.rows, "max_bad_share": clock.max_bad_share,
                      "broken": dg.MetadataValue.json({rule: {"rows": n, "first_data_row": row, "example": ex}
                                                       for rule, (n, row, ex) in clock.broken.items()})},
        ))
    return results


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


class RawConfig(dg.Config):
    force: bool = Field(
        False, description="Parse and store the day even if its blobs and the parser are unchanged since "
                           "its latest materialization (by default such a run records nothing)",
    )


def unchanged(context: dg.AssetExecutionContext, key: dg.AssetKey, version: str) -> bool:
    day = context.partition_key
    return stored_versions(context.instance, key, day) == (version, context.assets_def.code_versions_by_key[key])


def skip_reason(context: dg.AssetExecutionContext, key: dg.AssetKey, version: str) -> str | None:
    """Why this run should not materialize the day again, if it should not."""
    day = context.partition_key
    if unchanged(context, key, version):
        return f"{key.to_user_string()} {day} is already stored at blob version {version} by this code version"
    if other := earlier_run_executing(context.instance, key, day, context.run_id):
        return f"run {other} is already materializing {key.to_user_string()} {day}"
    return None


BACKFILL_TAG = "dagster/backfill"


def restatement(context: dg.AssetExecutionContext, key: dg.AssetKey, version: str) -> dg.MaterializeResult:
    """The day's latest materialization again, marked unchanged, with its check verdicts restated."""
    [latest] = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1).records
    stored = latest.asset_materialization.metadata
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={**{k: v for k, v in stored.items() if k != "unchanged"}, "unchanged": True,
                  "restated_from_run": dg.MetadataValue.dagster_run(latest.run_id)},
        check_results=latest_check_results(context.instance, key, check_names(key.path[-1].removeprefix("raw_")),
                                           context.partition_key),
    )


def build_raw_asset(source: str) -> dg.AssetsDefinition:
    key = raw_asset_key(source)
    source_spec = SPEC.sources[source]

    # A multi_asset only so that the output and its blocking checks may be absent: a day whose
    # blobs are unchanged since its stored version yields nothing (no second materialization),
    # whichever of the sensor, a backfill or a retry asked for it.
    @dg.multi_asset(
        name=key.path[-1],
        outs={"raw": dg.AssetOut(
            key=key,
            group_name=RAW_GROUP,
            io_manager_key="spark_io",
            # 2: day folders filtered by pattern, compression, line limit, key and clock checks.
            code_version="2",
            kinds={"azure", "parquet"},
            freshness_policy=data_freshness,
            is_required=False,
            description=f"Landed `{source_spec.prefix}` blobs of one day, parsed against the spec.",
        )},
        partitions_def=daily_partitions,
        retry_policy=STORE_RETRY,
        can_subset=True,
        check_specs=[
            # Partitioned like the asset, so each verdict belongs to its day (and can be restated).
            dg.AssetCheckSpec(ROW_COUNT_CHECK, asset=key, blocking=True, partitions_def=daily_partitions,
                              description="The day has at least quality.min_rows rows"),
            dg.AssetCheckSpec(NULL_RATES_CHECK, asset=key, blocking=True, partitions_def=daily_partitions,
                              description="Each column's null rate is within its bound"),
            *([dg.AssetCheckSpec(UNIQUE_KEYS_CHECK, asset=key, blocking=True, partitions_def=daily_partitions,
                                 description=f"{SPEC.source_keys(source)} are unique within the day; "
                                             "a failing day is not stored")]
              if SPEC.source_keys(source) else []),
            *([dg.AssetCheckSpec(CLOCK_CHECK, asset=key, blocking=True, partitions_def=daily_partitions,
                                 description="Timestamps agree with the spec's clock rules; a failing day "
                                             "is not stored")]
              if source_spec.clock else []),
        ],
    )
    def raw_source(context: dg.AssetExecutionContext, config: RawConfig,
                   blob_store: BlobStoreResource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        import pyarrow.parquet as pq  # imported here: the code location loads this module

        day = dt.date.fromisoformat(context.partition_key)
        store = blob_store.blob_store()
        blobs, data_keys = _list_day(store, source, day)
        version = day_version(blobs)
        if not config.force and BACKFILL_TAG in context.run.tags and unchanged(context, key, version):
            # An explicit backfill of a stored day: restate it (same data version, nothing re-parsed or
            # re-published) so the backfill counts the day as done; automation ignores same versions.
            context.log.info(f"unchanged: {key.to_user_string()} {context.partition_key} is stored at blob version {version}")
            yield restatement(context, key, version)
            return
        if not config.force and (reason := skip_reason(context, key, version)):
            context.log.info(f"skipped: {reason}")
            yield from latest_check_results(context.instance, key, check_names(source), context.partition_key)
            return
        table, _ = _read_day(store, source, day, (blobs, data_keys))
        integrity = _integrity_checks(source, table)
        if failed := [r for r in integrity if not r.passed]:
            # Verdicts recorded for the day, nothing published: the stored version stays as it was.
            yield from integrity
            raise dg.Failure(
                description=f"{key.to_user_string()} {day} not stored: "
                            + "; ".join(f"{r.check_name}: {r.description}" for r in failed),
                allow_retries=False,
            )
        with tempfile.TemporaryDirectory() as staging:
            pq.write_table(table, Path(staging) / "part-00000.parquet")
            version = blob_store.datasets().publish(key.path[-1], context.partition_key, Path(staging))
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(day_version(blobs)),
            metadata={
                "rows": table.num_rows,
                "blobs": dg.MetadataValue.json([store.describe(k) for k in data_keys]),
                "ignored": dg.MetadataValue.json([store.describe(b.key) for b in blobs if b.key not in data_keys]),
                "bytes": sum(b.size for b in blobs),
                "sha256": dg.MetadataValue.json({b.key: b.sha256 for b in blobs}),
                "stored_version": version.version,
            },
            check_results=_quality_checks(source, table) + integrity,
        )

    return raw_source


raw_assets = [build_raw_asset(source) for source in SPEC.sources]
