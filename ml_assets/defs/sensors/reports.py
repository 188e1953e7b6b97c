"""Email a report after every training cycle, whether it deployed, kept the champion or failed."""

import contextlib

import dagster as dg

from ml_assets.defs.assets.deployment import deployed_model
from ml_assets.defs.assets.evaluation import candidate_model, evaluation_blob, plot_blob
from ml_assets.defs.assets.monitoring import (
    drift_blob,
    drift_plot_blob,
    estimated_performance,
    live_performance,
)
from ml_assets.defs.assets.training import MODEL_NAME, TRAINING_GROUP
from ml_assets.defs.checks.promotion import PROMOTION_GATE, verdict_blob
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.sensors.retraining import AS_OF_TAG, REASON_TAG, TRIGGER_DAYS_TAG, TRIGGER_TAG
from ml_assets.reporting.performance import performance_trigger_table
from ml_assets.reporting.report import CycleReport, build_message
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.email import EmailResource
from ml_assets.storage import BlobNotFoundError


def _materialized(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetMaterialization]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    found = {}
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None:
            found[materialization.asset_key.to_user_string()] = materialization
    return found


def _first_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str | None, str | None]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data
        message = data.user_failure_data.description if data.user_failure_data else None
        if not message and data.error is not None:
            message = (data.error.cause or data.error).message.strip().splitlines()[0]
        return event.step_key, message
    return None, None


def _summary(evaluation: dict | None) -> dict | None:
    if evaluation is None:
        return None
    return {"name": evaluation.get("label"), "version": evaluation["version"], "flavor": evaluation["flavor"],
            "metrics": evaluation["evaluation"]["overall"]}


def compose_cycle_report(instance: dg.DagsterInstance, run_id: str, blob_store: BlobStoreResource) -> CycleReport:
    """What happened in one training run, from its events and the artifacts it stored."""
    materialized = _materialized(instance, run_id)
    failed_step, error = _first_failure(instance, run_id)
    report = CycleReport(dataset=SPEC.name, cycle_id=run_id, status="failed")
    candidate = materialized.get(candidate_model.key.to_user_string())
    if candidate is not None:
        version = int(candidate.metadata["version"].value)
        document = blob_store.get_json(evaluation_blob(version))
        report.candidate = _summary(document["candidate"])
        report.champion = _summary(document["champion"])
        report.slice_tables_markdown = document.get("tables", {})
        try:
            report.plots = {"evaluation": blob_store.blob_store().get(plot_blob(version))}
            verdict = blob_store.get_json(verdict_blob(version))
        except BlobNotFoundError:
            verdict = None
        if verdict is not None and verdict.get("run_id") == run_id:
            report.verdict_rows = verdict["rows"]
            report.verdict_passed = verdict["passed"]
            report.forced_reason = verdict["forced_reason"]
            report.reason = verdict["summary"]
    _explain_trigger(instance, run_id, blob_store, report)
    deployed = materialized.get(deployed_model.key.to_user_string())
    if deployed is not None:
        report.status = "deployed"
        report.deployed_version = int(deployed.metadata["version"].value)
    elif report.verdict_passed is False and failed_step and PROMOTION_GATE in failed_step:
        report.status = "kept_champion"  # the gate did its job: not a failure of the cycle
    else:
        report.failed_stage = failed_step or "unknown"
        report.error = error or "the run failed before any step reported an error"
        report.reason = report.reason or f"failed at {report.failed_stage}"
    return report


def _explain_trigger(instance: dg.DagsterInstance, run_id: str, blob_store: BlobStoreResource,
                     report: CycleReport) -> None:
    """The trigger tags of a retraining run, with the figures of the days that triggered it."""
    run = instance.get_run_by_id(run_id)
    if run is None or TRIGGER_TAG not in run.tags:
        return
    trigger = run.tags[TRIGGER_TAG]
    days = [d for d in run.tags.get(TRIGGER_DAYS_TAG, "").split(",") if d]
    report.trigger = f"{trigger} (as of {run.tags.get(AS_OF_TAG)}): {run.tags.get(REASON_TAG, '')}"
    if trigger == "drift" and days:
        lines = ["| day | drifted features |", "|---|---|"]
        last = None
        for day in days:
            try:
                last = blob_store.get_json(drift_blob(day))
            except BlobNotFoundError:
                lines.append(f"| {day} | (drift report missing) |")
                last = None
                continue
            lines.append(f"| {day} | {last['summary']}: {', '.join(last['report']['drifted_features'])} |")
        if last is not None:  # the latest day's report, read once above
            lines += ["", f"Per feature on {days[-1]} (window {last['window'][0]}..{last['window'][-1]}, "
                          f"reference of champion v{last['reference_version']}):", "", last["table"]]
            with contextlib.suppress(BlobNotFoundError):
                report.plots["drift"] = blob_store.blob_store().get(drift_plot_blob(days[-1]))
        report.trigger_details = "\n".join(lines)
    elif trigger == "performance" and days:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=live_performance.key, asset_partitions=days), limit=1000).records
        latest = {}
        for record in records:  # newest first: keep each day's latest judgement
            latest.setdefault(record.asset_materialization.partition, record.asset_materialization.metadata)
        plain = {day: {k: v.value for k, v in m.items()} for day, m in latest.items()}
        if missing := [d for d in days if d not in plain]:  # days counted on their CBPE estimate
            for record in instance.fetch_materializations(dg.AssetRecordsFilter(
                    asset_key=estimated_performance.key, asset_partitions=missing), limit=1000).records:
                m = {k: v.value for k, v in record.asset_materialization.metadata.items()}
                plain.setdefault(record.asset_materialization.partition,
                                 {**m, "live": m.get("expected"), "window": "CBPE estimate (no labels yet)"})
        lines = [performance_trigger_table(days, plain)]
        report.trigger_details = "\n".join(lines)


def send_cycle_report(instance: dg.DagsterInstance, run_id: str, blob_store: BlobStoreResource,
                      email: EmailResource) -> str:
    report = compose_cycle_report(instance, run_id, blob_store)
    return email.mailer().send(build_message(report, email.sender, email.recipients))


def _is_training_run(run: dg.DagsterRun) -> bool:
    from ml_assets.defs.assets.training import keras_candidate, sklearn_candidate, training_set

    training_keys = {training_set.key, keras_candidate.key, sklearn_candidate.key, candidate_model.key}
    return bool(run.asset_selection and run.asset_selection & training_keys) or run.job_name == "training_job"


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="training_report_on_success",
                      default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
                      description=f"Emails the report of a finished {TRAINING_GROUP} run.")
def training_report_on_success(context: dg.RunStatusSensorContext, blob_store: BlobStoreResource,
                               email: EmailResource):
    # None, never a SkipReason, for a run that trained nothing: Dagster fails a tick that has both a
    # skip and a reported run (a training run and another run ending in the same 30 s), keeps its old
    # cursor, and the next tick would email the training run's report again.
    if not _is_training_run(context.dagster_run):
        return
    where = send_cycle_report(context.instance, context.dagster_run.run_id, blob_store, email)
    context.log.info(f"report for {MODEL_NAME} run {context.dagster_run.run_id} sent to {where}")


@dg.run_failure_sensor(name="training_report_on_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                       minimum_interval_seconds=30,
                       description=f"Emails the report of a failed {TRAINING_GROUP} run, naming where it failed.")
def training_report_on_failure(context: dg.RunFailureSensorContext, blob_store: BlobStoreResource,
                               email: EmailResource):
    if not _is_training_run(context.dagster_run):
        return
    where = send_cycle_report(context.instance, context.dagster_run.run_id, blob_store, email)
    context.log.info(f"failure report for run {context.dagster_run.run_id} sent to {where}")
