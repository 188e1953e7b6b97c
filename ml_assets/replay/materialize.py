"""The replay's landing and materializing: land a batch, then raw, features, labels and clusters as range runs."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence

import dagster as dg

from ml_assets.defs.assets.raw import raw_asset_key
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.sensors.landed_blobs import landed_blobs_sensor
from ml_assets.landing import days_between
from ml_assets.replay.serving import ReplayError
from ml_assets.replay.timeline import ReplayReport, contiguous_ranges, failure_message

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Every event stays in the run history (and the UI); the terminal gets the replay's own summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
FEATURES, LABELS, CLUSTERS = dg.AssetKey("features"), dg.AssetKey("labels"), dg.AssetKey("clusters")
CLUSTER_MODEL = dg.AssetKey("cluster_model")


class Materializing:
    """The Replay's part that lands days and runs raw, features, labels and clusters over them."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    resources: dict
    job: dg.JobDefinition
    report: ReplayReport
    sensor_cursor: str | None
    per_day: bool
    log: Callable[[str], None]
    _lander: Callable[[Sequence[dt.date]], list] | None

    def _land(self, days: list[dt.date]) -> list:
        """Land the days (the `lander` given, else the spec's bundled example): the blobs written."""
        if self._lander is None:
            if not SPEC.example_data:
                raise ReplayError(f"spec {SPEC.name!r} names no example_data: pass --from PATH with its files")
            from ml_assets.examples import load_example
            from ml_assets.landing import land

            store = self.resources["blob_store"].blob_store()
            frames = load_example(SPEC.example_data)
            self._lander = lambda batch: land(store, SPEC, frames, batch, progress=True)
        return self._lander(days)

    def land_and_materialize(self, start: dt.date, end: dt.date, refit_clusters: bool = True) -> list[str]:
        """Land [start, end], then raw (as the landed_blobs sensor requests it), features, labels, clusters.

        Returns the days of [start, end] whose raw data and features passed their checks. Without
        ``refit_clusters`` the existing cluster model assigns the new days only (it is fitted as soon
        as features exist when there is none yet).
        """
        days = [d.isoformat() for d in days_between(start, end)]
        self.report.days += days
        began = time.perf_counter()
        landed = self._land(days_between(start, end))
        landed_days = {b.day.isoformat() for b in landed}
        self.report.empty_days += [d for d in days if d not in landed_days]
        self.report.add_seconds("land", began)
        self.log(f"landed {len(landed)} blobs for {start}..{end}")

        began = time.perf_counter()
        ok_days = self._materialize_raw(set(days))
        self.report.add_seconds("raw", began)
        self.log(f"raw: {len(ok_days)} day(s) materialized, {len(self.report.failed_days)} held back in total")

        began = time.perf_counter()
        clustered_with_features = (not refit_clusters
                                   and self.instance.get_latest_materialization_event(CLUSTER_MODEL) is not None)
        assets = [FEATURES, LABELS] + ([CLUSTERS] if clustered_with_features else [])
        ok_days = self._materialize_ranges(assets, ok_days)
        if SPEC.label_feed is not None:
            self._relabel_earlier_days(start)
        self.report.add_seconds("features_labels", began)

        if not clustered_with_features:
            began = time.perf_counter()
            self._fit_and_assign_clusters(ok_days, refit_clusters)
            self.report.add_seconds("clusters", began)
        return ok_days

    def _relabel_earlier_days(self, start: dt.date) -> None:
        """The labels of earlier days the batch's outcomes can reach (as the labels automation does in
        the daemon), so that those days settle as their outcomes land; unchanged days publish nothing."""
        reach = {d.isoformat() for d in days_between(start - dt.timedelta(days=SPEC.label_feed.max_delay_days),
                                                      start - dt.timedelta(days=1))}
        earlier = sorted(reach & set(self.resources["blob_store"].datasets().partitions("features")))
        for first, last in contiguous_ranges(earlier):
            result = self._run_range([LABELS], first, last)
            if not result.success:
                self.log(f"  labels {first}..{last} failed: {failure_message(result)}")

    def _materialize_raw(self, batch: set[str]) -> list[str]:
        """Run what the landed_blobs sensor requests for the batch's days: the days that passed."""
        with dg.build_sensor_context(instance=self.instance, resources=self.resources, definitions=self.defs,
                                     cursor=self.sensor_cursor) as context:
            tick = landed_blobs_sensor(context)
        self.sensor_cursor = tick.cursor
        # Days of earlier batches that failed are asked again by the sensor (with backoff); their
        # blobs have not changed in a replay, so only the batch's days are run.
        requests = [r for r in tick.run_requests or [] if r.partition_key in batch]
        raw_keys = sorted({key for r in requests for key in r.asset_selection}, key=str)
        if requests and not self.per_day and all(self._single_run(key) for key in raw_keys):
            # One range per set of sources the sensor asked for: a label feed day without outcomes
            # asks only the base source, and must not run (and fail) the feed's raw asset.
            groups: dict[tuple[dg.AssetKey, ...], list[str]] = {}
            for request in requests:
                groups.setdefault(tuple(sorted(request.asset_selection, key=str)), []).append(request.partition_key)
            base = raw_asset_key(SPEC.join.base)
            ok_days = []
            for keys, days in groups.items():
                good = self._materialize_ranges(list(keys), days)
                ok_days += good if base in keys else []
            return sorted(ok_days)
        ok_days = []
        for request in requests:
            result = self.job.execute_in_process(
                run_config=QUIET, instance=self.instance, partition_key=request.partition_key,
                asset_selection=list(request.asset_selection), tags=request.tags, raise_on_error=False,
            )
            self._record(request.partition_key, result, ok_days)
        return ok_days

    def _single_run(self, key: dg.AssetKey) -> bool:
        policy = self.defs.resolve_assets_def(key).backfill_policy
        return policy is not None and policy.max_partitions_per_run is None

    def _materialize_ranges(self, assets: list[dg.AssetKey], days: list[str]) -> list[str]:
        """`assets` over each contiguous range of `days` as one run; a failed range is narrowed down
        to its failing days (per-day check verdicts when the checks give them, else one run per day)."""
        ok_days: list[str] = []
        for first, last in contiguous_ranges(days):
            result = self._run_range(assets, first, last)
            in_range = [d for d in days if first <= d <= last]
            if result.success:
                ok_days += in_range
                for day in in_range:
                    self.report.failed_days.pop(day, None)
                continue
            failed = {e.partition for e in result.get_asset_check_evaluations() if not e.passed and e.partition}
            if failed and len(in_range) > 1:
                for day in sorted(failed):
                    self._fail(day, "; ".join(
                        f"check {e.asset_key.to_user_string()}.{e.check_name} failed: {e.description}"
                        for e in result.get_asset_check_evaluations() if not e.passed and e.partition == day))
                rest = [d for d in in_range if d not in failed]
                # Downstream steps of a failed blocking check were skipped for the whole range.
                ok_days += self._materialize_ranges(assets, rest) if rest else []
                continue
            for day in in_range:
                single = self.job.execute_in_process(run_config=QUIET, instance=self.instance, partition_key=day,
                                                     asset_selection=assets, raise_on_error=False)
                self._record(day, single, ok_days)
        return ok_days

    def _record(self, day: str, result: dg.ExecuteInProcessResult, ok_days: list[str]) -> None:
        if result.success:
            ok_days.append(day)
            self.report.failed_days.pop(day, None)
        else:
            self._fail(day, failure_message(result))

    def _fail(self, day: str, message: str) -> None:
        self.report.failed_days[day] = message
        self.log(f"  {day} held back: {message}")

    def _fit_and_assign_clusters(self, ok_days: list[str], refit: bool) -> None:
        """Fit the cluster model (when asked, or when there is none yet and features exist), then
        assign clusters; before any features day exists there is nothing to fit on yet."""
        datasets = self.resources["blob_store"].datasets()
        fitted = self.instance.get_latest_materialization_event(CLUSTER_MODEL) is not None
        if (refit or not fitted) and datasets.partitions("features"):
            result = self.job.execute_in_process(run_config=QUIET, instance=self.instance,
                                                 asset_selection=[CLUSTER_MODEL])
            raise_unless(result, "cluster_model")
            if self.instance.get_latest_materialization_event(CLUSTER_MODEL) is None:
                return  # too few features days for the cluster model: the asset said so and skipped
            # A refitted cluster model reassigns every day, so that slices stay comparable across days.
            ok_days = datasets.partitions("features")
        elif not fitted:
            return
        for first, last in contiguous_ranges(ok_days):
            raise_unless(self._run_range([CLUSTERS], first, last), f"clusters {first}..{last}")

    def _run_range(self, assets: list[dg.AssetKey], first: str, last: str) -> dg.ExecuteInProcessResult:
        tags = {RANGE_START_TAG: first, RANGE_END_TAG: last}
        return self.job.execute_in_process(run_config=QUIET, instance=self.instance, asset_selection=assets,
                                           tags=tags, raise_on_error=False)


def raise_unless(result: dg.ExecuteInProcessResult, what: str) -> None:
    if not result.success:
        raise RuntimeError(f"run for {what} failed: {failure_message(result)}")
