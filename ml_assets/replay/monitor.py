"""The replay's monitoring: drift and live performance of a batch's days as range runs, and each day's verdicts."""

from __future__ import annotations

import datetime as dt
import json
import time

import dagster as dg

from ml_assets.defs.dataset import SPEC
from ml_assets.landing import days_between
from ml_assets.replay.materialize import QUIET, raise_unless
from ml_assets.replay.timeline import ReplayReport, TimelineRow, contiguous_ranges, failure_message

DRIFT, LIVE = dg.AssetKey("feature_drift"), dg.AssetKey("live_performance")
ESTIMATED = dg.AssetKey("estimated_performance")
LAG = SPEC.monitoring.performance.label_lag_days


class Monitoring:
    """The Replay's part that monitors the batch's days and reads each day's drift and live performance."""

    instance: dg.DagsterInstance
    resources: dict
    job: dg.JobDefinition
    report: ReplayReport
    sensor_cursors: dict[str, str | None]
    _reports: dict[tuple[dg.AssetKey, str], dict]
    _live_judged: dict[str, tuple[int, str]]

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
            shift_day(d, -LAG) for d in passed
            if all(datasets.current("labels", x) is not None for x in (shift_day(d, -LAG), d))]
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

        reach = [d.isoformat() for d in days_between(dt.date.fromisoformat(shift_day(days[0], -SPEC.label_feed.max_delay_days)),
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
            settled = self._latest_live(day) if SPEC.label_feed else shift_day(day, -LAG)
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
            raise_unless(result, "reference_stats")


def shift_day(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()
