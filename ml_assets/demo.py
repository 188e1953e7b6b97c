"""The main job on embedded defaults: land days, let the platform bring every asset up to date."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from dataclasses import dataclass, field

import dagster as dg

from ml_assets.defs.assets.raw import raw_asset_key
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.sensors.landed_blobs import landed_blobs_sensor
from ml_assets.examples import load_example
from ml_assets.landing import days_between, land
from ml_assets.storage import DatasetStore

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Every event stays in the run history (and the UI); the terminal gets the demo's own summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class DemoReport:
    days: list[str] = field(default_factory=list)
    raw_failed: dict[str, str] = field(default_factory=dict)
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
        self._frames = None

    def land_and_materialize(self, start: dt.date, end: dt.date) -> None:
        """Land [start, end], then raw (per day, as the sensor requests), features, labels, clusters."""
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
                self.report.raw_failed[request.partition_key] = _failure_message(result)
        self._add_seconds("raw", began)
        self.log(f"raw: {len(ok_days)} day(s) materialized, {len(self.report.raw_failed)} failed in total")
        for day, message in sorted(self.report.raw_failed.items()):
            self.log(f"  {day}: {message}")

        began = time.perf_counter()
        for first, last in contiguous_ranges(ok_days):
            self._run_range(["features", "labels"], first, last)
        self._add_seconds("features_labels", began)

        # A refitted cluster model reassigns every day, so that slices stay comparable across days.
        began = time.perf_counter()
        result = self.job.execute_in_process(run_config=QUIET, instance=self.instance,
                                             asset_selection=[dg.AssetKey("cluster_model")])
        _raise_unless(result, "cluster_model")
        featured = self.resources["blob_store"].datasets().partitions("features")
        for first, last in contiguous_ranges(featured):
            self._run_range(["clusters"], first, last)
        self._add_seconds("clusters", began)

    def training_cycle(self, as_of: str) -> CycleOutcome:
        """Train, evaluate, gate and deploy as one run, then email the report (as the sensors would)."""
        from ml_assets.defs.assets.training import MODEL_NAME
        from ml_assets.defs.sensors.reports import compose_cycle_report, send_cycle_report

        began = time.perf_counter()
        result = self.defs.resolve_job_def("training_job").execute_in_process(
            run_config={**QUIET, "ops": {"training_set": {"config": {"as_of": as_of}}}},
            instance=self.instance, raise_on_error=False,
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

    def _run_range(self, assets: list[str], first: str, last: str) -> None:
        result = self.job.execute_in_process(
            run_config=QUIET,
            instance=self.instance,
            asset_selection=[dg.AssetKey(a) for a in assets],
            tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
        )
        _raise_unless(result, f"{assets} {first}..{last}")


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


def summary_rows(datasets: DatasetStore, days: list[str]) -> list[dict]:
    """Per day: rows stored by each daily asset, read from the stored tables."""
    tables = [*(raw_asset_key(s).to_user_string() for s in SPEC.sources), "features", "labels", "clusters"]
    return [{"day": day, **{table: datasets.row_count(table, day) for table in tables}} for day in days]


def month_bounds(first_month: dt.date, offset: int) -> tuple[dt.date, dt.date]:
    """First and last day of the month `offset` months after first_month."""
    index = first_month.year * 12 + first_month.month - 1 + offset
    first = dt.date(index // 12, index % 12 + 1, 1)
    following = dt.date((index + 1) // 12, (index + 1) % 12 + 1, 1)
    return first, following - dt.timedelta(days=1)


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
