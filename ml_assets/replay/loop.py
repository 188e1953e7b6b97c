"""The continuous-training loop, driven in process the way the daemon's sensors and automation would."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence

import dagster as dg

from ml_assets.defs.assets.raw import raw_asset_key
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.sensors.landed_blobs import landed_blobs_sensor
from ml_assets.landing import days_between
from ml_assets.replay.serving import ReplayError, probe_serving, wait_until_served
from ml_assets.replay.timeline import (
    CycleOutcome,
    ReplayReport,
    TimelineRow,
    contiguous_ranges,
    failure_message,
    waiting_for,
)

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Every event stays in the run history (and the UI); the terminal gets the replay's own summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
FEATURES, LABELS, CLUSTERS = dg.AssetKey("features"), dg.AssetKey("labels"), dg.AssetKey("clusters")
CLUSTER_MODEL = dg.AssetKey("cluster_model")
DRIFT, LIVE = dg.AssetKey("feature_drift"), dg.AssetKey("live_performance")
ESTIMATED = dg.AssetKey("estimated_performance")
LAG = SPEC.monitoring.performance.label_lag_days


class Replay:
    """Lands days batch by batch and brings every asset up to date; judges each day and ticks the sensors."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, log=print,
                 lander: Callable[[Sequence[dt.date]], list] | None = None, per_day: bool = False):
        self.defs, self.instance, self.log = defs, instance, log
        self.resources = defs.resources
        self.job = defs.resolve_implicit_global_asset_job_def()
        self.report = ReplayReport()
        self.sensor_cursor: str | None = None
        self.sensor_cursors: dict[str, str | None] = {}
        self.cycles: list[CycleOutcome] = []
        self.serving_url: str | None = None
        self._lander = lander
        # per_day: raw and monitoring as one run per day (the slower path; same decisions, for comparison).
        self.per_day = per_day
        self._reports: dict[tuple[dg.AssetKey, str], dict] = {}  # (monitoring asset, day) -> latest metadata
        self._live_judged: dict[str, tuple[int, str]] = {}  # label feed: day -> (champion, labels version) judged

    # --- landing and materializing ------------------------------------------------------------

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
            _raise_unless(result, "cluster_model")
            if self.instance.get_latest_materialization_event(CLUSTER_MODEL) is None:
                return  # too few features days for the cluster model: the asset said so and skipped
            # A refitted cluster model reassigns every day, so that slices stay comparable across days.
            ok_days = datasets.partitions("features")
        elif not fitted:
            return
        for first, last in contiguous_ranges(ok_days):
            _raise_unless(self._run_range([CLUSTERS], first, last), f"clusters {first}..{last}")

    def _run_range(self, assets: list[dg.AssetKey], first: str, last: str) -> dg.ExecuteInProcessResult:
        tags = {RANGE_START_TAG: first, RANGE_END_TAG: last}
        return self.job.execute_in_process(run_config=QUIET, instance=self.instance, asset_selection=assets,
                                           tags=tags, raise_on_error=False)

    # --- training -----------------------------------------------------------------------------

    def training_cycle(self, as_of: str, run_config: dict | None = None, tags: dict | None = None) -> CycleOutcome:
        """Train, evaluate, gate and deploy as one run, then email the report (as the sensors would)."""
        from ml_assets.defs.assets.training import MODEL_NAME
        from ml_assets.defs.sensors.reports import compose_cycle_report, send_cycle_report

        began = time.perf_counter()
        run_config = run_config or {"ops": {"training_set": {"config": {"as_of": as_of}}}}
        result = self.defs.resolve_job_def("training_job").execute_in_process(
            run_config={**QUIET, **run_config}, instance=self.instance, raise_on_error=False, tags=tags,
        )
        blob_store = self.resources["blob_store"]
        report = compose_cycle_report(self.instance, result.run_id, blob_store)
        sent_to = send_cycle_report(self.instance, result.run_id, blob_store, self.resources["email"])
        outcome = CycleOutcome(
            as_of=as_of, run_id=result.run_id, status=report.status,
            candidate=f"{report.candidate['flavor']} v{report.candidate['version']}" if report.candidate else "-",
            deployed_version=report.deployed_version,
            champion_after=blob_store.models().champion(MODEL_NAME).version,
            verdict=report.reason or (report.error or ""), report_sent_to=sent_to,
            seconds=time.perf_counter() - began,
        )
        self.report.add_seconds("training", began)
        self.log(f"training cycle as of {as_of}: {outcome.status}; candidate {outcome.candidate}; "
                 f"champion now v{outcome.champion_after}; {outcome.verdict}")
        return outcome

    # --- the continuous-training loop ---------------------------------------------------------

    def run_loop(self, start: dt.date, end: dt.date, step_days: int = 7, on_row=None) -> list[TimelineRow]:
        """Land [start, end] `step_days` at a time; judge every day, tick the retraining sensors after it,
        run what they request, and serve the champion over HTTP throughout (hot-swapped on deploy)."""
        from ml_assets.defs.assets.training import MODEL_NAME
        from ml_assets.serving.app import create_app
        from ml_assets.serving.registry import ModelRegistry
        from ml_assets.serving.threaded import running_in_thread

        if step_days < 1:
            raise ReplayError(f"step_days must be at least 1, not {step_days}")
        rows: list[TimelineRow] = []
        store = self.resources["blob_store"].models()
        with running_in_thread(create_app(ModelRegistry(store, MODEL_NAME), poll_interval=0.2)) as url:
            self.serving_url = url
            batch_start = start
            while batch_start <= end:
                batch_end = min(batch_start + dt.timedelta(days=step_days - 1), end)
                landed_at = time.perf_counter()
                self.land_and_materialize(batch_start, batch_end, refit_clusters=False)
                batch = [d.isoformat() for d in days_between(batch_start, batch_end)]
                monitored = None
                for index, day in enumerate(batch):
                    # The batch's monitoring runs as ranges with the champion of the moment; a deploy
                    # during the batch re-runs its remaining days with the new champion.
                    champion = store.champion(MODEL_NAME).version
                    if champion is not None and (self.per_day or champion != monitored):
                        stale = self._latest_reports() if monitored is not None and not self.per_day else None
                        self._monitor(champion, [day] if self.per_day else batch[index:])
                        if stale:
                            self._skip_reports(stale)
                        monitored = champion
                    row = self.judge_day(day, landed_at)
                    rows.append(row)
                    if on_row:
                        on_row(row)
                batch_start = batch_end + dt.timedelta(days=1)
        return rows

    def day_status(self, day: str) -> tuple[str, str]:
        """passed / held back (with the checks' message) / no data, from what the store and checks say."""
        if day in self.report.failed_days:
            return "held back", "held back by its checks: " + self.report.failed_days[day]
        if self.resources["blob_store"].datasets().current("features", day) is not None:
            return "passed", ""
        if day in self.report.empty_days:
            return "no data", "no data landed for this day"
        return "no data", "no features for this day (a source landed no rows)"

    def _monitor(self, champion: int, days: list[str]) -> None:
        """Drift (and the CBPE estimate when the performance sensor counts it) of the passed days, and the
        live performance of the days their labels settle, as range runs: one materialization per day."""
        began = time.perf_counter()
        self._ensure_reference(champion)
        datasets = self.resources["blob_store"].datasets()
        passed = [d for d in days if self.day_status(d)[0] == "passed"]
        settled = self._feed_settled(champion, days) if SPEC.label_feed else [
            _shift(d, -LAG) for d in passed
            if all(datasets.current("labels", x) is not None for x in (_shift(d, -LAG), d))]
        daily = [DRIFT] + ([ESTIMATED] if SPEC.monitoring.performance.use_estimate else [])
        for assets, keys in ((daily, passed), ([LIVE], settled)):
            for first, last in contiguous_ranges(keys):
                result = self._run_range(assets, first, last)
                if not result.success:
                    self.log(f"  {', '.join(a.to_user_string() for a in assets)} {first}..{last} failed: "
                             f"{failure_message(result)}")
                    continue
                for asset in assets:
                    for materialization in result.asset_materializations_for_node(asset.to_python_identifier()):
                        self._reports[asset, materialization.partition or first] = materialization.metadata
        self.report.add_seconds("monitoring", began)

    def _feed_settled(self, champion: int, days: list[str]) -> list[str]:
        """With a label feed: the passed days within the feed's reach of the batch whose own labels settled
        and whose trailing window (the labels of its settled days) changed since this champion last judged
        it: a late label on day X re-judges every window holding X, not only X's (as the daemon does)."""
        from ml_assets.defs.assets.performance import window_keys

        reach = [d.isoformat() for d in days_between(dt.date.fromisoformat(_shift(days[0], -SPEC.label_feed.max_delay_days)),
                                                     dt.date.fromisoformat(days[-1]))]
        passed = [d for d in reach if self.day_status(d)[0] == "passed"]
        fresh = []
        for day, window in window_keys(self.resources["blob_store"], passed).items():
            if self._live_judged.get(day) != (champion, window):
                self._live_judged[day] = (champion, window)
                fresh.append(day)
        return fresh

    # The sensors read reports in storage order and stop at the first day after the one they judge, so
    # the previous champion's reports of the batch's later days (kept in the history, ignored by the
    # sensors since they belong to another champion) would hide the new champion's reports of the
    # same days until the batch's last day: after a re-run the sensors' cursors move past them.
    _SENSOR_SLOTS = {"retrain_on_drift": {"after": DRIFT},
                     "retrain_on_performance": {"after": LIVE, "after_estimated": ESTIMATED}}

    def _latest_reports(self) -> dict[dg.AssetKey, int]:
        latest = {}
        for key in (DRIFT, LIVE, ESTIMATED):
            records = self.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1,
                                                           ascending=False).records
            if records:
                latest[key] = records[0].storage_id
        return latest

    def _skip_reports(self, stale: dict[dg.AssetKey, int]) -> None:
        for name, slots in self._SENSOR_SLOTS.items():
            if self.sensor_cursors.get(name) is None:
                continue
            state = json.loads(self.sensor_cursors[name])
            for slot, key in slots.items():
                if key in stale and slot in state:
                    state[slot] = max(state[slot] or 0, stale[key])
            self.sensor_cursors[name] = json.dumps(state, sort_keys=True)

    def judge_day(self, day: str, landed_at: float) -> TimelineRow:
        """The day's drift and the live performance of the day whose labels just settled (from the
        batch's monitoring runs), then a tick of the retraining sensors as of the day."""
        from ml_assets.defs.assets.training import MODEL_NAME

        status, note = self.day_status(day)
        row = TimelineRow(day=day, status=status, note=note)
        if status == "passed":
            if (drift := self._reports.get((DRIFT, day))) is not None:
                row.drift = str(drift["summary"].value).split(" (")[0] + f" ({drift['drifted_share'].value:.0%})"
            settled = self._latest_live(day) if SPEC.label_feed else _shift(day, -LAG)
            live = self._reports.get((LIVE, settled))
            if live is not None and "judged" in live and live["judged"].value:
                row.live = f"{settled[5:]} {live['live'].value:.3f} ({-live['drop'].value:+.3f})"
        self._tick_retraining(row, landed_at)
        row.champion = self.resources["blob_store"].models().champion(MODEL_NAME).version
        return row

    def _latest_live(self, day: str) -> str:
        """With a label feed, the latest day up to `day` with a live-performance report."""
        judged = [d for key, d in self._reports if key == LIVE and d <= day]
        return max(judged, default=day)

    def _ensure_reference(self, champion: int) -> None:
        event = self.instance.get_latest_materialization_event(dg.AssetKey("reference_stats"))
        if event is None or event.asset_materialization.metadata["champion_version"].value != champion:
            result = self.job.execute_in_process(run_config=QUIET, instance=self.instance,
                                                 asset_selection=[dg.AssetKey("reference_stats")])
            _raise_unless(result, "reference_stats")

    def _tick_retraining(self, row: TimelineRow, landed_at: float) -> None:
        from ml_assets.defs.sensors.retraining import (
            AS_OF_TAG,
            TRIGGER_TAG,
            drift_tick,
            performance_tick,
        )

        requests, skips = [], []
        blob_store = self.resources["blob_store"]
        # As of the day: drift reports up to the day, performance reports up to the day whose labels settled.
        for name, tick_as_of, until in (("retrain_on_drift", drift_tick, row.day),
                                        ("retrain_on_performance", performance_tick,
                                         row.day if SPEC.label_feed else _shift(row.day, -LAG))):
            with dg.build_sensor_context(instance=self.instance, resources=self.resources, definitions=self.defs,
                                         cursor=self.sensor_cursors.get(name)) as context:
                tick = tick_as_of(context, blob_store, until_day=until)
            self.sensor_cursors[name] = tick.cursor
            if tick.run_requests:
                requests += tick.run_requests
            elif tick.skip_reason:
                skips.append(tick.skip_reason.skip_message)
            if requests:
                break  # one retrain per day; the other sensor sees it (and its cooldown) on the next tick
        if not requests:
            row.action = "; ".join(filter(None, map(waiting_for, skips))) or "-"
            return
        request = requests[0]
        row.action = f"retrain ({request.tags[TRIGGER_TAG]}, as of {request.tags[AS_OF_TAG]})"
        outcome = self.training_cycle(request.tags[AS_OF_TAG], run_config=request.run_config, tags=request.tags)
        row.verdict = {"deployed": f"passed: deployed v{outcome.deployed_version}",
                       "kept_champion": "failed: kept champion", "failed": "run failed"}[outcome.status]
        row.verdict += f" - {outcome.verdict}"[:160]
        if outcome.deployed_version is not None:
            began = time.perf_counter()
            self._ensure_reference(outcome.deployed_version)
            self.report.add_seconds("monitoring", began)
            began = time.perf_counter()
            row.seconds_to_serving = self._wait_until_served(outcome.deployed_version, landed_at)
            self.report.add_seconds("serving", began)
        self.cycles.append(outcome)

    def _wait_until_served(self, version: int, since: float) -> float:
        return wait_until_served(self.serving_url, version, since)

    def probe_serving(self, rows: int = 50) -> dict:
        """Serve the champion over HTTP, predict sample holdout rows, compare with batch scoring."""
        began = time.perf_counter()
        try:
            return probe_serving(self.instance, self.resources["blob_store"], rows)
        finally:
            self.report.add_seconds("serving", began)


def _shift(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def _raise_unless(result: dg.ExecuteInProcessResult, what: str) -> None:
    if not result.success:
        raise RuntimeError(f"run for {what} failed: {failure_message(result)}")
