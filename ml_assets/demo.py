"""The main job on embedded defaults: land days, let the platform bring every asset up to date."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import dagster as dg

from ml_assets.defs.dataset import SPEC
from ml_assets.defs.sensors.landed_blobs import landed_blobs_sensor
from ml_assets.examples import load_example
from ml_assets.landing import days_between, land

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Every event stays in the run history (and the UI); the terminal gets the demo's own summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class DemoReport:
    days: list[str] = field(default_factory=list)
    failed_days: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class CycleOutcome:
    as_of: str
    run_id: str
    status: str
    candidate: str
    deployed_version: int | None
    champion_after: int | None
    verdict: str
    report_sent_to: str
    seconds: float


@dataclass
class TimelineRow:
    day: str
    drift: str = "-"
    live: str = "-"
    action: str = "-"
    verdict: str = "-"
    champion: int | None = None
    seconds_to_serving: float | None = None
    note: str = ""


def contiguous_ranges(keys: list[str]) -> list[tuple[str, str]]:
    """Sorted day keys grouped into runs of consecutive days."""
    ranges: list[tuple[str, str]] = []
    for key in sorted(keys):
        day = dt.date.fromisoformat(key)
        if ranges and dt.date.fromisoformat(ranges[-1][1]) + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], key)
        else:
            ranges.append((key, key))
    return ranges


class Demo:
    """Drives the platform in process, the way the daemon's sensors and automation would."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, log=print):
        self.defs, self.instance, self.log = defs, instance, log
        self.resources = defs.resources
        self.job = defs.resolve_implicit_global_asset_job_def()
        self.report = DemoReport()
        self.sensor_cursor: str | None = None
        self.sensor_cursors: dict[str, str | None] = {}
        self.cycles: list[CycleOutcome] = []
        self.serving_url: str | None = None
        self._frames = None

    def land_and_materialize(self, start: dt.date, end: dt.date, refit_clusters: bool = True) -> list[str]:
        """Land [start, end], then raw (per day, as the sensor requests), features, labels, clusters.

        Returns the days whose raw data passed its checks. Without ``refit_clusters`` the existing
        cluster model assigns the new days only (it is fitted anyway when there is none yet).
        """
        store = self.resources["blob_store"].blob_store()
        days = [d.isoformat() for d in days_between(start, end)]
        self.report.days += days
        began = time.perf_counter()
        if self._frames is None:
            self._frames = load_example(SPEC.example_data) if SPEC.example_data else {}
        landed = land(store, SPEC, self._frames, days_between(start, end), progress=True)
        self._add_seconds("land", began)
        self.log(f"landed {len(landed)} blobs for {start}..{end} into {store.location}")

        began = time.perf_counter()
        with dg.build_sensor_context(instance=self.instance, resources=self.resources, definitions=self.defs,
                                     cursor=self.sensor_cursor) as context:
            tick = landed_blobs_sensor(context)
        self.sensor_cursor = tick.cursor
        ok_days = []
        for request in tick.run_requests or []:
            result = self.job.execute_in_process(
                run_config=QUIET, instance=self.instance, partition_key=request.partition_key,
                asset_selection=list(request.asset_selection), tags=request.tags, raise_on_error=False,
            )
            if result.success:
                ok_days.append(request.partition_key)
            else:
                self.report.failed_days[request.partition_key] = _failure_message(result)
        self._add_seconds("raw", began)
        self.log(f"raw: {len(ok_days)} day(s) materialized, {len(self.report.failed_days)} held back in total")
        for day, message in sorted(self.report.failed_days.items()):
            self.log(f"  {day}: {message}")

        began = time.perf_counter()
        for first, last in contiguous_ranges(ok_days):
            result = self._run_range(["features", "labels"], first, last, raise_on_error=False)
            if not result.success:
                # A range run records one check result for all its days: find the failing days.
                for day in (d for d in ok_days if first <= d <= last):
                    single = self.job.execute_in_process(
                        run_config=QUIET, instance=self.instance, partition_key=day, raise_on_error=False,
                        asset_selection=[dg.AssetKey("features"), dg.AssetKey("labels")])
                    if not single.success:
                        self.report.failed_days[day] = _failure_message(single)
                        self.log(f"  {day}: {self.report.failed_days[day]}")
        ok_days = [d for d in ok_days if d not in self.report.failed_days]
        self._add_seconds("features_labels", began)

        began = time.perf_counter()
        if refit_clusters or self.instance.get_latest_materialization_event(dg.AssetKey("cluster_model")) is None:
            # A refitted cluster model reassigns every day, so that slices stay comparable across days.
            result = self.job.execute_in_process(run_config=QUIET, instance=self.instance,
                                                 asset_selection=[dg.AssetKey("cluster_model")])
            _raise_unless(result, "cluster_model")
            to_assign = self.resources["blob_store"].datasets().partitions("features")
        else:
            to_assign = ok_days
        for first, last in contiguous_ranges(to_assign):
            self._run_range(["clusters"], first, last)
        self._add_seconds("clusters", began)
        return ok_days

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
        self._add_seconds("training", began)
        self.log(f"training cycle as of {as_of}: {outcome.status}; candidate {outcome.candidate}; "
                 f"champion now v{outcome.champion_after}; {outcome.verdict}")
        return outcome

    # --- the continuous-training loop ------------------------------------------------------

    def run_loop(self, start: dt.date, end: dt.date, step_days: int = 7, on_row=None) -> list[TimelineRow]:
        """Land [start, end] `step_days` at a time; judge every day, tick the retraining sensors after it,
        run what they request, and serve the champion over HTTP throughout (hot-swapped on deploy)."""
        from ml_assets.defs.assets.training import MODEL_NAME
        from ml_assets.serving.app import create_app
        from ml_assets.serving.registry import ModelRegistry
        from ml_assets.serving.threaded import running_in_thread

        rows: list[TimelineRow] = []
        store = self.resources["blob_store"].models()
        with running_in_thread(create_app(ModelRegistry(store, MODEL_NAME), poll_interval=0.2)) as url:
            self.serving_url = url
            batch_start = start
            while batch_start <= end:
                batch_end = min(batch_start + dt.timedelta(days=step_days - 1), end)
                landed_at = time.perf_counter()
                ok_days = set(self.land_and_materialize(batch_start, batch_end, refit_clusters=False))
                for day in days_between(batch_start, batch_end):
                    row = self.judge_day(day.isoformat(), landed_at, ok=day.isoformat() in ok_days)
                    rows.append(row)
                    if on_row:
                        on_row(row)
                batch_start = batch_end + dt.timedelta(days=1)
        return rows

    def judge_day(self, day: str, landed_at: float, ok: bool = True) -> TimelineRow:
        """Drift of `day`, live performance of the day whose labels just settled, then the sensors."""
        from ml_assets.defs.assets.training import MODEL_NAME
        from ml_assets.defs.dataset import SPEC

        row = TimelineRow(day=day)
        blob_store = self.resources["blob_store"]
        champion = blob_store.models().champion(MODEL_NAME).version
        began = time.perf_counter()
        if not ok:
            row.note = "held back by its checks: " + self.report.failed_days.get(day, "?")
        elif champion is not None:
            self._ensure_reference(champion)
            drift = self._run_partition("feature_drift", day)
            if drift is not None:
                row.drift = str(drift["summary"].value).split(" (")[0] + f" ({drift['drifted_share'].value:.0%})"
            settled = (dt.date.fromisoformat(day) - dt.timedelta(days=SPEC.monitoring.performance.label_lag_days))
            datasets = blob_store.datasets()
            if all(datasets.current("labels", d) is not None for d in (settled.isoformat(), day)):
                live = self._run_partition("live_performance", settled.isoformat())
                if live is not None and live["judged"].value:
                    row.live = f"{settled.strftime('%m-%d')} {live['live'].value:.3f} ({-live['drop'].value:+.3f})"
        self._add_seconds("monitoring", began)
        self._tick_retraining(row, landed_at)
        row.champion = blob_store.models().champion(MODEL_NAME).version
        return row

    def _ensure_reference(self, champion: int) -> None:
        event = self.instance.get_latest_materialization_event(dg.AssetKey("reference_stats"))
        if event is None or event.asset_materialization.metadata["champion_version"].value != champion:
            result = self.job.execute_in_process(run_config=QUIET, instance=self.instance,
                                                 asset_selection=[dg.AssetKey("reference_stats")])
            _raise_unless(result, "reference_stats")

    def _run_partition(self, asset: str, day: str):
        result = self.job.execute_in_process(run_config=QUIET, instance=self.instance, partition_key=day,
                                             asset_selection=[dg.AssetKey(asset)], raise_on_error=False)
        if not result.success:
            self.log(f"  {asset} {day} failed: {_failure_message(result)}")
            return None
        (materialization,) = result.asset_materializations_for_node(asset)
        return materialization.metadata

    def _tick_retraining(self, row: TimelineRow, landed_at: float) -> None:
        from ml_assets.defs.sensors.retraining import (
            AS_OF_TAG,
            TRIGGER_TAG,
            retrain_on_drift_sensor,
            retrain_on_performance_sensor,
        )

        requests, skips = [], []
        for sensor in (retrain_on_drift_sensor, retrain_on_performance_sensor):
            with dg.build_sensor_context(instance=self.instance, resources=self.resources, definitions=self.defs,
                                         cursor=self.sensor_cursors.get(sensor.name)) as context:
                tick = sensor(context)
            self.sensor_cursors[sensor.name] = tick.cursor
            if tick.run_requests:
                requests += tick.run_requests
            elif tick.skip_reason:
                skips.append(tick.skip_reason.skip_message)
            if requests:
                break  # one retrain per day; the other sensor sees it (and its cooldown) on the next tick
        if not requests:
            row.action = "; ".join(filter(None, map(_waiting_for, skips))) or "-"
            return
        request = requests[0]
        row.action = f"retrain ({request.tags[TRIGGER_TAG]}, as of {request.tags[AS_OF_TAG]})"
        outcome = self.training_cycle(request.tags[AS_OF_TAG], run_config=request.run_config,
                                      tags=request.tags)
        row.verdict = {"deployed": f"passed: deployed v{outcome.deployed_version}",
                       "kept_champion": "failed: kept champion", "failed": "run failed"}[outcome.status]
        row.verdict += f" - {outcome.verdict}"[:160]
        if outcome.deployed_version is not None:
            self._ensure_reference(outcome.deployed_version)
            row.seconds_to_serving = self._wait_until_served(outcome.deployed_version, landed_at)
        self.cycles.append(outcome)

    def _wait_until_served(self, version: int, since: float, timeout: float = 60.0) -> float:
        from ml_assets.defs.assets.training import MODEL_NAME

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.serving_url}/v1/models/{MODEL_NAME}", timeout=10) as response:
                    status = json.loads(response.read())["model_version_status"]
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # 404: no version loaded yet
                    raise
                status = []
            if any(int(s["version"]) == version and s["state"] == "AVAILABLE" for s in status):
                return time.perf_counter() - since
            time.sleep(0.05)
        raise RuntimeError(f"the server did not pick up v{version} within {timeout:.0f} s")

    def probe_serving(self, rows: int = 50) -> dict:
        """Serve the champion over HTTP, predict sample holdout rows, compare with batch scoring."""
        from ml_assets.defs.assets.training import MODEL_NAME
        from ml_assets.ml.models import FeatureColumns, load_model
        from ml_assets.serving.app import create_app
        from ml_assets.serving.registry import ModelRegistry
        from ml_assets.serving.threaded import running_in_thread

        blob_store = self.resources["blob_store"]
        store = blob_store.models()
        champion = store.champion(MODEL_NAME).version
        if champion is None:
            raise RuntimeError("no champion to serve: every training cycle was rejected")
        evaluated = self.instance.get_latest_materialization_event(dg.AssetKey("candidate_model"))
        document = evaluated.asset_materialization.metadata["evaluation_blob"].value
        records = blob_store.get_json(document)["sample_records"][:rows]
        manifest = store.get(MODEL_NAME, champion).manifest
        batch = load_model(store.fetch(MODEL_NAME, champion), manifest["flavor"],
                           FeatureColumns(**manifest["columns"])).predict_proba(records)
        with running_in_thread(create_app(ModelRegistry(store, MODEL_NAME))) as url:
            latencies = []
            served = []
            for record in records:
                began = time.perf_counter()
                served += _post_json(f"{url}/v1/models/{MODEL_NAME}:predict", {"instances": [record]})["predictions"]
                latencies.append((time.perf_counter() - began) * 1000)
        return {"url": url, "version": champion, "rows": len(records),
                "max_abs_diff": float(max(abs(a - b) for a, b in zip(served, batch, strict=True))),
                "p50_ms": sorted(latencies)[len(latencies) // 2]}

    def _add_seconds(self, stage: str, began: float) -> None:
        self.report.seconds[stage] = self.report.seconds.get(stage, 0.0) + time.perf_counter() - began

    def _run_range(self, assets: list[str], first: str, last: str,
                   raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        result = self.job.execute_in_process(
            run_config=QUIET,
            instance=self.instance,
            asset_selection=[dg.AssetKey(a) for a in assets],
            tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
            raise_on_error=False,
        )
        if raise_on_error:
            _raise_unless(result, f"{assets} {first}..{last}")
        return result


_STREAK = re.compile(r"(feature drift|live performance): (\d+) of (\d+) consecutive")
_COOLDOWN = re.compile(r"(feature drift|live performance): flagged .* cooldown lasts until (\S+?);")


_SIGNAL = {"feature drift": "drift", "live performance": "performance"}


def _waiting_for(skip_message: str) -> str:
    """A sensor's skip reason, shortened for the timeline: a streak under way, or a cooldown."""
    if match := _COOLDOWN.search(skip_message):
        return f"{_SIGNAL[match[1]]} flagged, cooldown to {match[2][5:]}"
    if (match := _STREAK.search(skip_message)) and match[2] != "0":
        return f"{_SIGNAL[match[1]]} streak {match[2]}/{match[3]}"
    return ""


def _raise_unless(result: dg.ExecuteInProcessResult, what: str) -> None:
    if not result.success:
        raise RuntimeError(f"run for {what} failed: {_failure_message(result)}")


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failed_checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
    if failed_checks:
        return "; ".join(
            f"check {e.asset_key.to_user_string()}.{e.check_name} failed: {e.description}" for e in failed_checks
        )
    for event in result.all_events:
        if event.is_step_failure:
            user_failure = event.step_failure_data.user_failure_data
            if user_failure is not None and user_failure.description:
                return user_failure.description
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "run failed"


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
