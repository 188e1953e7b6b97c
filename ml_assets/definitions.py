"""The code location: every asset, check, sensor and job, with the resources of this environment."""

import dagster as dg

from ml_assets.defs.assets import (
    clusters,
    deployment,
    evaluation,
    features,
    monitoring,
    raw,
    training,
)
from ml_assets.defs.automation import data_automation_sensor
from ml_assets.defs.celery import executor_for_environment
from ml_assets.defs.checks import data_quality, promotion
from ml_assets.defs.gc import store_gc_job, store_gc_schedule
from ml_assets.defs.jobs import feature_job, raw_job, training_job
from ml_assets.defs.resources import resources_for_environment
from ml_assets.defs.sensors.freshness import freshness_alerts_sensor
from ml_assets.defs.sensors.landed_blobs import landed_blobs_sensor
from ml_assets.defs.sensors.reports import training_report_on_failure, training_report_on_success
from ml_assets.defs.sensors.retraining import (
    retrain_fallback_schedule,
    retrain_on_drift_sensor,
    retrain_on_performance_sensor,
)

defs = dg.Definitions(
    assets=[
        *raw.raw_assets,
        *dg.load_assets_from_modules([features, clusters, training, evaluation, deployment, monitoring]),
    ],
    asset_checks=dg.load_asset_checks_from_modules([data_quality, promotion]),
    sensors=[
        landed_blobs_sensor,
        data_automation_sensor,
        retrain_on_drift_sensor,
        retrain_on_performance_sensor,
        freshness_alerts_sensor,
        training_report_on_success,
        training_report_on_failure,
    ],
    schedules=[retrain_fallback_schedule, store_gc_schedule],
    jobs=[raw_job, feature_job, training_job, store_gc_job],
    resources=resources_for_environment(),
    # in_process_executor (one Spark session per run), or Celery workers when
    # ML_ASSETS_EXECUTOR=celery (the cluster profile): ml_assets/defs/celery.py.
    executor=executor_for_environment(),
)
