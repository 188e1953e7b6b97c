"""Batched event writes and remembered schema probes for the tuned SQLite event log (instance_storage).

With ``DAGSTER_EVENT_BATCH_SIZE`` > 0 Dagster hands a run's asset events (planned materializations and
checks at run creation, a range run's per-partition materializations) to ``store_event_batch``, which
Dagster's SQLite storage answers with one ``store_event`` per event: a transaction on the run's database
and two or three on the index database each. ``BatchWriter.store_event_batch`` writes the same rows in one
transaction per database: the run database's events, then on the index database the mirrored events (each
with its own index id, in the events' order), their asset event tags, the asset key rows and the asset
check rows, through Dagster's own row builders. A batch that fails stores nothing: its run database rows
are removed again before the error goes up (Dagster then stores each event of the batch alone). ``store_event``
is the batch of one event: the same rows as Dagster's, the index ones in one transaction instead of two or
three, and the event row passed as the parameters of one cached insert statement instead of an
``insert().values(...)`` built per event.

Dagster also asks the index database on every check event whether the checks table exists, and on every
asset event which columns the asset key table has (a schema read each). Tables and columns never go away
while the process runs, so ``KnownSchema`` remembers the positive answers (only those: a migration may
add a table or column later).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import dagster._check as check
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    DagsterEventType,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    AssetKeyTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import serialize_value
from sqlalchemy import exc as db_exc
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationPlanned,
    )

# Events SqliteEventLogStorage.store_event mirrors in the index database.
MIRRORED = ASSET_EVENTS | ASSET_CHECK_EVENTS | set(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)
RUN_ENDED = {DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED}


class KnownSchema(SqliteEventLogStorage):
    """Positive answers of Dagster's per-event schema probes, remembered (a wipe forgets them)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._tables_seen: set[str] = set()
        self._asset_key_cols_seen: set[str] = set()
        super().__init__(*args, **kwargs)

    def has_table(self, table_name: str) -> bool:
        if table_name in self._tables_seen:
            return True
        found = super().has_table(table_name)
        if found:
            self._tables_seen.add(table_name)
        return found

    def has_asset_key_col(self, column_name: str) -> bool:
        return column_name in self._asset_key_cols_seen or super().has_asset_key_col(column_name)

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        if column_name in self._asset_key_cols_seen:
            return True
        found = super()._has_asset_key_col_on_connection(conn, column_name)
        if found:
            self._asset_key_cols_seen.add(column_name)
        return found

    def forget_schema(self) -> None:
        self._tables_seen.clear()
        self._asset_key_cols_seen.clear()


def _event_type(event: EventLogEntry) -> DagsterEventType | None:
    return event.dagster_event_type if event.is_dagster_event else None


class BatchWriter(KnownSchema):
    """store_event(_batch) in one transaction per database. While the index transaction is open, this
    thread's index_connection()/index_transaction() get that same connection (see batch_connection):
    Dagster's check writers open their own, and _connect's lock is not reentrant."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._batch = threading.local()
        super().__init__(*args, **kwargs)

    def batch_connection(self) -> Connection | None:
        """The index connection of the batch this thread is writing, None outside a batch."""
        return getattr(self._batch, "conn", None)

    def run_ended(self, run_id: str) -> None:
        """Called after a run's last event is stored (the tuned storage closes the run's database)."""

    def store_event(self, event: EventLogEntry) -> None:
        # SqliteEventLogStorage.store_event's rows, with the row passed as parameters of one cached insert
        # statement (Dagster builds an insert().values(...) per event, ~0.3 ms) and the index rows in one
        # transaction instead of two or three.
        self.store_event_batch([event])

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        rows = [self._event_to_row(event) for event in events]  # serialized once for both databases
        by_run: dict[str, list[dict[str, Any]]] = {}
        for event, row in zip(events, rows, strict=True):
            by_run.setdefault(event.run_id, []).append(row)
        written: dict[str, list[int]] = {}
        try:
            for run_id, run_rows in by_run.items():
                with self.run_connection(run_id) as conn:
                    result = conn.execute(SqlEventLogStorageTable.insert().returning(
                        SqlEventLogStorageTable.c.id, sort_by_parameter_order=True), run_rows)
                    written[run_id] = [row[0] for row in result.all()]
            mirrored = [(e, row) for e, row in zip(events, rows, strict=True) if _event_type(e) in MIRRORED]
            if mirrored:
                self._store_index_batch([event for event, _ in mirrored], [row for _, row in mirrored])
        except Exception:
            # The index transaction rolled back; the run databases' rows go too, so that a failed batch
            # stores nothing: Dagster then stores the same events one by one, which would duplicate them.
            self._remove_run_rows(written)
            raise
        for run_id in dict.fromkeys(event.run_id for event in events if _event_type(event) in RUN_ENDED):
            self.run_ended(run_id)

    def _remove_run_rows(self, written: dict[str, list[int]]) -> None:
        for run_id, ids in written.items():
            with self.run_connection(run_id) as conn:
                conn.execute(SqlEventLogStorageTable.delete().where(SqlEventLogStorageTable.c.id.in_(ids)))

    def _store_index_batch(self, events: list[EventLogEntry], rows: list[dict[str, Any]]) -> None:
        with self.index_connection() as conn:
            self._batch.conn = conn
            try:
                # One index id per event, in the events' order (as store_event's one insert each gives).
                result = conn.execute(SqlEventLogStorageTable.insert().returning(
                    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True), rows)
                event_ids = [row[0] for row in result.all()]
                if len(event_ids) != len(events) or None in event_ids:
                    raise DagsterInvariantViolationError("Cannot store asset event tags for null event id.")
                assets = [(e, i) for e, i in zip(events, event_ids, strict=True) if _event_type(e) in ASSET_EVENTS]
                if assets:
                    self._store_asset_event_tags(conn, [e for e, _ in assets], [i for _, i in assets])
                    self._store_asset_entries(conn, assets)
                for event, event_id in zip(events, event_ids, strict=True):
                    if _event_type(event) in ASSET_CHECK_EVENTS:
                        self.store_asset_check_event(event, event_id)
            finally:
                self._batch.conn = None

    def _store_asset_entries(self, conn: Connection, assets: list[tuple[EventLogEntry, int]]) -> None:
        """The asset key rows store_event's _store_asset_event leaves after these events one by one:
        each event's values set in order (insert, else update), so per key the later values win. An
        event type always sets the same columns, so only each asset's last event of a type counts (its
        values are built once: a materialization's is a serialized record)."""
        has_index_cols = self._has_asset_key_index_cols_on_connection(conn)
        last: dict[tuple[str, DagsterEventType | None], int] = {}
        for n, (event, _) in enumerate(assets):
            if event.dagster_event is not None and event.dagster_event.asset_key is not None:
                last[event.dagster_event.asset_key.to_string(), _event_type(event)] = n
        merged: dict[str, dict[str, Any]] = {}
        for (asset_key, _), n in sorted(last.items(), key=lambda item: item[1]):
            if values := self._get_asset_entry_values(*assets[n], has_index_cols):
                merged.setdefault(asset_key, {}).update(values)
        for asset_key, values in merged.items():
            try:
                conn.execute(AssetKeyTable.insert().values(asset_key=asset_key, **values))
            except db_exc.IntegrityError:
                conn.execute(AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == asset_key))

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        # Dagster's rows (one per planned partition) with the event serialized once, not once per row.
        planned = cast("AssetCheckEvaluationPlanned", check.not_none(event.dagster_event).event_specific_data)
        partition_keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        shared = dict(asset_key=planned.asset_key.to_string(), check_name=planned.check_name, run_id=event.run_id,
                      execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                      evaluation_event=serialize_value(event),
                      evaluation_event_timestamp=self._event_insert_timestamp(event),
                      evaluation_event_storage_id=event_id)
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert().values(
                [dict(shared, partition=partition_key) for partition_key in partition_keys]))

    def wipe(self) -> None:
        self.forget_schema()
        super().wipe()
