"""How steps run: the Spark and training pools, and the retry policy for blob-store errors.

Spark pool. Every step that holds a SparkSession (it builds one, or loads or returns a Spark
DataFrame through ``spark_io``) declares ``pool=SPARK_POOL``, except the training steps below. The
run queue then starts at most ``concurrency.pools.default_limit`` (1 in dagster.yaml) run holding
that pool at a time, whatever launched it: a job, the automation sensor, a retrain sensor, a
backfill from the UI or the CLI. ``granularity: run`` in dagster.yaml makes a run hold the slot
from start to end, because the session lives as long as the run's process, not only while one
step computes.

Training pool. The candidate-training steps (keras_candidate, sklearn_candidate) declare
``pool=TRAINING_POOL`` instead (Dagster gives a step one pool): their cost is the CPU and memory
of a TensorFlow or scikit-learn fit in the process running them, while their Spark use is one
read of the training set. On the cluster profile (deploy/dagster.cluster.yaml, ``granularity:
op``, steps on Celery workers) each pool bounds steps at once across all runs: "spark" is sized
to the Spark cluster (ML_ASSETS_SPARK_POOL_LIMIT), "training" to the workers
(ML_ASSETS_TRAINING_POOL_LIMIT = Celery workers x training steps one worker can hold in memory).
Both limits are written into the instance by ``ensure_pool_limits``; unset, a pool gets the
instance's ``default_limit``. A pool bounds the cluster's total, not which worker gets a step: with
ML_ASSETS_CELERY_WORKER_CONCURRENCY=1 (the default) no worker ever holds two training steps; with
more, a worker may receive up to that many of them.

Store retries. Blob-store calls fail transiently (a restart, a throttled account, a network blip):
the blob-touching assets retry such a step ``STORE_RETRY`` times with exponential backoff and
jitter. Deterministic failures (a malformed blob, missing labels, no champion) raise
``dg.Failure(allow_retries=False)`` and are not retried. Crashed run workers are retried by the
instance's ``run_retries`` (dagster.yaml); raw days still unmaterialized after all that are
requested again by the ``landed_blobs`` sensor, with its own bound and backoff.
"""

import dagster as dg

SPARK_POOL = "spark"
TRAINING_POOL = "training"
POOLS = (SPARK_POOL, TRAINING_POOL)

# 3 retries, waits of ~10 s, ~30 s, ~70 s (EXPONENTIAL: (2^n - 1) x delay, +/- delay of jitter):
# about two minutes of outage are absorbed inside the step before it fails.
STORE_RETRY_MAX = 3
STORE_RETRY_DELAY_SECONDS = 10
STORE_RETRY = dg.RetryPolicy(
    max_retries=STORE_RETRY_MAX,
    delay=STORE_RETRY_DELAY_SECONDS,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)


def ensure_pool_limits(instance: dg.DagsterInstance, pools: tuple[str, ...] = POOLS,
                       configured: dict[str, int] | None = None) -> list[str]:
    """Write the limit of our pools before any run needing them is queued.

    A pool sized in config (`configured`, by default `pool_limits()` of defs/settings.py, i.e.
    ML_ASSETS_SPARK_POOL_LIMIT and ML_ASSETS_TRAINING_POOL_LIMIT) gets exactly that limit. Any
    other gets the instance's default limit if it has none yet: Dagster creates a pool's limit row
    the first time the queue sees a run using it, but the queue's first pass over such runs still
    reads the pool list from before that write, so on a fresh instance two Spark runs queued
    together would both start. Returns the pools that have no limit at all (no default_limit and
    none set by hand or in config), so the caller can warn.
    """
    if configured is None:
        from ml_assets.defs.settings import pool_limits  # reads the environment; imports no pool

        configured = pool_limits()
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return list(pools)
    current = {limit.name: limit.limit for limit in storage.get_pool_limits()}
    known = set(current)
    default = instance.global_op_concurrency_default_limit
    unlimited = []
    for pool in pools:
        if pool in configured:
            if current.get(pool) != configured[pool]:
                storage.set_concurrency_slots(pool, configured[pool])
            continue
        if pool in known:
            continue
        if default is None:
            unlimited.append(pool)  # never write: that would delete a limit an operator set
        else:
            storage.initialize_concurrency_limit_to_default(pool)
    return unlimited


def permanent_failure(description: str, **metadata) -> dg.Failure:
    """A failure that retrying cannot fix (bad input, a missing prerequisite): never retried."""
    return dg.Failure(description=description, metadata=metadata or None, allow_retries=False)
