"""Raw sources: each landed day parsed against the spec and kept as typed Parquet."""

import datetime as dt
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ml_assets.defs.checks.per_day import day_evaluations, range_days
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import STORE_RETRY
from ml_assets.defs.freshness import data_freshness
from ml_assets.defs.partitions import daily_partitions
from ml_assets.defs.raw_state import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    earlier_run_executing,
    earlier_runs_executing,
    latest_check_results,
    stored_versions,
    stored_versions_by_day,
)
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
    # Oldest first, so the later arrival is named as the copy. Azure's Last-Modified has whole
    # seconds: on a tie the shorter name comes first, since copies get longer names ("x (1).csv").
    contents = {key: store.get(key) for key in sorted(keys, key=lambda k: (arrived[k], len(k), k))}
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


def _restated(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> tuple[dict, list[dg.AssetCheckResult]]:
    """The day's latest materialization metadata, marked unchanged, and its check verdicts again."""
    [latest] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1).records
    stored = latest.asset_materialization.metadata
    metadata = {**{k: v for k, v in stored.items() if k != "unchanged"}, "unchanged": True,
                "restated_from_run": dg.MetadataValue.dagster_run(latest.run_id)}
    return metadata, latest_check_results(instance, key, check_names(key.path[-1].removeprefix("raw_")), day)


def restatement(context: dg.AssetExecutionContext, key: dg.AssetKey, version: str) -> dg.MaterializeResult:
    """The day's latest materialization again, marked unchanged, with its check verdicts restated."""
    metadata, checks = _restated(context.instance, key, context.partition_key)
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=metadata, check_results=checks)


def _publish(blob_store: BlobStoreResource, key: dg.AssetKey, day: str, table: "pa.Table") -> str:
    """The day's table as one Parquet file, published atomically; returns the stored version."""
    import pyarrow.parquet as pq  # imported here: the code location loads this module

    with tempfile.TemporaryDirectory() as staging:
        pq.write_table(table, Path(staging) / "part-00000.parquet")
        return blob_store.datasets().publish(key.path[-1], day, Path(staging)).version


def _stored_metadata(store: BlobStore, table: "pa.Table", blobs: list, data_keys: list[str],
                     stored_version: str) -> dict:
    return {
        "rows": table.num_rows,
        "blobs": dg.MetadataValue.json([store.describe(k) for k in data_keys]),
        "ignored": dg.MetadataValue.json([store.describe(b.key) for b in blobs if b.key not in data_keys]),
        "bytes": sum(b.size for b in blobs),
        "sha256": dg.MetadataValue.json({b.key: b.sha256 for b in blobs}),
        "stored_version": stored_version,
    }


def _day_materialization(key: dg.AssetKey, day: str, version: str, code_version: str,
                         metadata: dict) -> dg.AssetMaterialization:
    """What Dagster records for a one-day MaterializeResult (same version tags), for one day of a range."""
    return dg.AssetMaterialization(
        asset_key=key, partition=day, metadata=metadata,
        tags={DATA_VERSION_TAG: version, CODE_VERSION_TAG: code_version,
              "dagster/data_version_is_user_provided": "true"},
    )


def _not_stored(key: dg.AssetKey, day: dt.date, failed: list[dg.AssetCheckResult]) -> str:
    return f"{key.to_user_string()} {day} not stored: " + "; ".join(f"{r.check_name}: {r.description}" for r in failed)


def _range_run(context: dg.AssetExecutionContext, config: "RawConfig", blob_store: BlobStoreResource,
               key: dg.AssetKey, days: list[str]) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Many days in one run, each judged and stored on its own: a bad day (missing, malformed, failing
    its keys or clock) is not stored, the good days are, every day gets its own check verdicts, and
    the run then fails naming the bad days (so nothing downstream runs on top of this run)."""
    source = key.path[-1].removeprefix("raw_")
    store = blob_store.blob_store()
    code_version = context.assets_def.code_versions_by_key[key]
    stored = stored_versions_by_day(context.instance, key, days)
    held = earlier_runs_executing(context.instance, key, days, context.run_id)
    backfill = BACKFILL_TAG in context.run.tags
    checks: dict[str, list[dg.AssetCheckResult]] = {}
    bad: dict[str, str] = {}
    for day in days:
        date = dt.date.fromisoformat(day)
        try:
            blobs, data_keys = _list_day(store, source, date)
            version = day_version(blobs)
            same = not config.force and stored.get(day) == (version, code_version)
            if same and backfill:  # restated, as in a one-day backfill run
                metadata, checks[day] = _restated(context.instance, key, day)
                yield _day_materialization(key, day, version, code_version, metadata)
                continue
            if not config.force and (same or day in held):
                context.log.info(f"skipped: {key.to_user_string()} {day} "
                                 + (f"held by run {held[day]}" if day in held else f"unchanged at {version}"))
                checks[day] = latest_check_results(context.instance, key, check_names(source), day)
                continue
            table, _ = _read_day(store, source, date, (blobs, data_keys))
        except dg.Failure as exc:
            bad[day] = exc.description or str(exc)
            continue
        integrity = _integrity_checks(source, table)
        if failed := [r for r in integrity if not r.passed]:
            checks[day], bad[day] = integrity, _not_stored(key, date, failed)
            continue
        metadata = _stored_metadata(store, table, blobs, data_keys, _publish(blob_store, key, day, table))
        yield _day_materialization(key, day, version, code_version, metadata)
        checks[day] = _quality_checks(source, table) + integrity
    # After the materializations: each verdict then points at its day's new (or kept) version.
    yield from day_evaluations(context.instance, key, checks)
    if bad:
        raise dg.Failure(
            description=f"{key.to_user_string()}: {len(bad)} of {len(days)} day(s) not stored "
                        f"({sorted(bad)}); the other days are stored. " + " | ".join(
                            f"{day}: {why}" for day, why in sorted(bad.items())),
            metadata={"failed_days": dg.MetadataValue.json(sorted(bad))},
            allow_retries=False,
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
        # A range of days is one run (CLI --partition-range, `ml-assets backfill`, the UI), each
        # day still judged and stored on its own (see _range_run).
        backfill_policy=dg.BackfillPolicy.single_run(),
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
                   blob_store: BlobStoreResource) -> Iterator:
        if (days := range_days(context)) is not None:
            yield from _range_run(context, config, blob_store, key, days)
            return
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
            raise dg.Failure(description=_not_stored(key, day, failed), allow_retries=False)
        stored_version = _publish(blob_store, key, context.partition_key, table)
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(version),
            metadata=_stored_metadata(store, table, blobs, data_keys, stored_version),
            check_results=_quality_checks(source, table) + integrity,
        )

    return raw_source


raw_assets = [build_raw_asset(source) for source in SPEC.sources]
