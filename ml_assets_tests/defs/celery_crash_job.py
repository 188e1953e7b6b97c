"""Jobs for the Celery delivery-limit test: a step whose process dies each time it runs, as an OOM kill does.

Loaded by the test's run process and, through dagster-celery's ReconstructableJob, by the worker; the
executor comes from the environment (ML_ASSETS_EXECUTOR=celery) as in ml_assets.definitions.
"""

import os

import dagster as dg

from ml_assets.defs.celery import executor_for_environment


@dg.op
def dies() -> int:
    os._exit(9)  # the pool process vanishes without a result: Celery's WorkerLostError


@dg.op
def after(value: int) -> int:
    return value


def define_crash_job() -> dg.JobDefinition:
    @dg.job(executor_def=executor_for_environment())
    def crash_job():
        after(dies())

    return crash_job
