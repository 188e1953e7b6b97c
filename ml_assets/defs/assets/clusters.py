"""Clusters: k-means over a trailing window of features, and each row's cluster id."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from ml_assets.defs.assets.features import features
from ml_assets.defs.automation import on_upstream_day_changed
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY, permanent_failure
from ml_assets.defs.freshness import data_freshness
from ml_assets.defs.partitions import daily_partitions
from ml_assets.ml.clustering import ClusterModel, assign_clusters, fit_kmeans
from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import LazySparkResource, SparkDataFrame
from ml_assets.resources.spark_io import read_tables

CLUSTER_MODEL_BLOB = "artifacts/cluster_model/model.json"
# Set by Dagster on every run the automation sensor launches.
AUTOMATION_TAG = "dagster/from_automation_condition"


# Refit on a full trailing window at the spec's refit_cron (weekly by default), and only if
# feature days arrived since the last fit: centroids move slowly and every refit re-labels every
# day's clusters.
CLUSTER_REFIT_CRON = SPEC.clustering.refit_cron

_refit_tick = dg.AutomationCondition.cron_tick_passed(CLUSTER_REFIT_CRON, SPEC.timezone)
# The first fit is attempted on each new features day until a full window exists (the asset skips
# until then); after that, the weekly refit, or a new code version of the asset.
fit_cluster_model = (
    (
        (dg.AutomationCondition.missing() & dg.AutomationCondition.any_deps_updated().since_last_handled())
        | (
            _refit_tick.since_last_handled()
            & dg.AutomationCondition.any_deps_updated().since(dg.AutomationCondition.newly_updated())
        )
        | (dg.AutomationCondition.code_version_changed() & ~dg.AutomationCondition.missing())
    )
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label(f"first full window of features, then weekly ({CLUSTER_REFIT_CRON}) if new days arrived")


class ClusterModelConfig(dg.Config):
    as_of: str | None = Field(
        None, description="Last day of the fitting window (YYYY-MM-DD); default: latest features day"
    )
    min_days: int | None = Field(
        None, description="Fewest stored features days to fit on; default: clustering.window_days (a full "
                          "window) in runs launched by automation, 1 in runs launched by hand or by a job",
    )


def trailing_window(available: list[str], as_of: str | None, days: int) -> list[str]:
    """The last `days` calendar days ending at as_of that have features."""
    if not available:
        raise permanent_failure("features has no materialized partitions to fit clusters on")
    end = dt.date.fromisoformat(as_of) if as_of else dt.date.fromisoformat(available[-1])
    start = end - dt.timedelta(days=days - 1)
    window = [key for key in available if start <= dt.date.fromisoformat(key) <= end]
    if not window:
        raise permanent_failure(f"no features partitions between {start} and {end}")
    return window


@dg.asset(group_name="clusters", deps=[features], kinds={"spark"}, code_version="1", pool=SPARK_POOL,
          retry_policy=STORE_RETRY, automation_condition=fit_cluster_model, output_required=False)
def cluster_model(
    context: dg.AssetExecutionContext,
    config: ClusterModelConfig,
    blob_store: BlobStoreResource,
    pyspark: LazySparkResource,
) -> Iterator[dg.MaterializeResult]:
    """k-means centroids fitted on the trailing window of features (skipped until enough days exist)."""
    datasets = blob_store.datasets()
    available = datasets.partitions("features")
    automated = context.run.tags.get(AUTOMATION_TAG) == "true"
    needed = config.min_days or (SPEC.clustering.window_days if automated else 1)
    if len(available) < needed:
        # Not a failure: automation asks on every new day until the first window is complete.
        context.log.info(f"not fitted: {len(available)} of {needed} features days stored")
        return
    window = trailing_window(available, config.as_of, SPEC.clustering.window_days)
    frame = read_tables(pyspark.spark_session, blob_store, "features", window)
    model = fit_kmeans(
        frame, SPEC.clustering.features, SPEC.clustering.k, SPEC.clustering.seed,
        SPEC.clustering.max_iterations, window,
    )
    blob_store.blob_store().put(CLUSTER_MODEL_BLOB, model.to_json().encode())
    context.log.info(f"fitted k={SPEC.clustering.k} on {sum(model.sizes)} rows, {window[0]}..{window[-1]}")
    yield dg.MaterializeResult(
        metadata={
            "window": f"{window[0]}..{window[-1]} ({len(window)} days)",
            "rows": sum(model.sizes),
            "cluster_sizes": dg.MetadataValue.json(model.sizes),
            "training_cost": model.training_cost,
            "features": dg.MetadataValue.json(model.features),
        }
    )


@dg.asset(
    group_name="clusters",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    io_manager_key="spark_io",
    deps=[cluster_model],
    kinds={"spark", "parquet"},
    code_version="1",
    freshness_policy=data_freshness,
    pool=SPARK_POOL,
    retry_policy=STORE_RETRY,
    # Each new features day, and every stored day when cluster_model is (re)fitted: the update of
    # the unpartitioned cluster_model reaches every partition, and days without features are
    # left out by the condition's "no dependency missing".
    automation_condition=on_upstream_day_changed,
)
def clusters(features: SparkDataFrame, blob_store: BlobStoreResource) -> SparkDataFrame:
    """Each example's cluster id under the current cluster model (an evaluation slice)."""
    model = ClusterModel.from_json(blob_store.blob_store().get(CLUSTER_MODEL_BLOB).decode())
    return assign_clusters(model, features, keep=[*SPEC.key_columns, PARTITION_COLUMN])
