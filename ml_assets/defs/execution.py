"""How steps run: the Spark pool, and the retry policy for blob-store errors.

Spark pool. Every step that holds a SparkSession (it builds one, or loads or returns a Spark
DataFrame through ``spark_io``) declares ``pool=SPARK_POOL``. The run queue then starts at most
``concurrency.pools.default_limit`` (1 in dagster.yaml) run holding that pool at a time, whatever
launched it: a job, the automation sensor, a retrain sensor, a backfill from the UI or the CLI.
``granularity: run`` in dagster.yaml makes a run hold the slot from start to end, because the
session lives as long as the run's process, not only while one step computes.

Store retries. Blob-store calls fail transiently (a restart, a throttled account, a network blip):
the blob-touching assets retry such a step ``STORE_RETRY`` times with exponential backoff and
jitter. Deterministic failures (a malformed blob, missing labels, no champion) raise
``dg.Failure(allow_retries=False)`` and are not retried. Crashed run workers are retried by the
instance's ``run_retries`` (dagster.yaml); raw days still unmaterialized after all that are
requested again by the ``landed_blobs`` sensor, with its own bound and backoff.
"""

import dagster as dg

SPARK_POOL = "spark"

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


def ensure_pool_limits(instance: dg.DagsterInstance, pools: tuple[str, ...] = (SPARK_POOL,)) -> list[str]:
    """Write the instance's default limit for our pools before any run needing them is queued.

    Dagster creates a pool's limit row the first time the queue sees a run using it, but the
    queue's first pass over such runs still reads the pool list from before that write, so on a
    fresh instance two Spark runs queued together would both start. Returns the pools that have
    no limit at all (no default_limit and none set by hand), so the caller can warn.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return list(pools)
    known = {limit.name for limit in storage.get_pool_limits()}
    default = instance.global_op_concurrency_default_limit
    unlimited = []
    for pool in pools:
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
