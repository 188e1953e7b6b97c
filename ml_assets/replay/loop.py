"""The continuous-training loop, driven in process the way the daemon's sensors and automation would.

The Replay's parts: landing and materializing (``replay.materialize``), monitoring and each day's
verdicts (``replay.monitor``); here the loop itself, the retraining ticks and training cycles.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Sequence

import dagster as dg

from ml_assets.defs.dataset import SPEC
from ml_assets.landing import days_between
from ml_assets.replay.materialize import QUIET, RANGE_END_TAG, RANGE_START_TAG, Materializing
from ml_assets.replay.monitor import LAG, Monitoring, shift_day
from ml_assets.replay.serving import ReplayError, probe_serving, wait_until_served
from ml_assets.replay.timeline import CycleOutcome, ReplayReport, TimelineRow, waiting_for
from ml_assets.replay.warm_up import start_spark, start_tensorflow

__all__ = ["QUIET", "RANGE_END_TAG", "RANGE_START_TAG", "Replay", "ReplayError"]

# Dagster reads it on every event: a run's planned events and a range output's per-partition
# materializations then reach the storage as batches, which the tuned SQLite storage writes in one
# transaction per database (Dagster's own storages write them one by one, as without it). 0 turns it off.
EVENT_BATCH_SIZE = ("DAGSTER_EVENT_BATCH_SIZE", "100")


class Replay(Materializing, Monitoring):
    """Lands days batch by batch and brings every asset up to date; judges each day and ticks the sensors."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, log=print,
                 lander: Callable[[Sequence[dt.date]], list] | None = None, per_day: bool = False):
        self.defs, self.instance, self.log = defs, instance, log
        os.environ.setdefault(*EVENT_BATCH_SIZE)
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
        start_spark(self.resources, self.log)
        with running_in_thread(create_app(ModelRegistry(store, MODEL_NAME), poll_interval=0.2)) as url:
            self.serving_url = url
            batch_start = start
            while batch_start <= end:
                batch_end = min(batch_start + dt.timedelta(days=step_days - 1), end)
                landed_at = time.perf_counter()
                self.land_and_materialize(batch_start, batch_end, refit_clusters=False)
                if batch_start == start:
                    start_tensorflow()
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
                                         row.day if SPEC.label_feed else shift_day(row.day, -LAG))):
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
