"""Clusters: k-means over a trailing window of features, and each row's cluster id."""

import datetime as dt

import dagster as dg
from pydantic import Field

from ml_assets.defs.assets.features import features
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.freshness import data_freshness
from ml_assets.defs.partitions import daily_partitions
from ml_assets.ml.clustering import ClusterModel, assign_clusters, fit_kmeans
from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import LazySparkResource, SparkDataFrame

CLUSTER_MODEL_BLOB = "artifacts/cluster_model/model.json"


class ClusterModelConfig(dg.Config):
    as_of: str | None = Field(
        None, description="Last day of the fitting window (YYYY-MM-DD); default: latest features day"
    )


def trailing_window(available: list[str], as_of: str | None, days: int) -> list[str]:
    """The last `days` calendar days ending at as_of that have features."""
    if not available:
        raise dg.Failure("features has no materialized partitions to fit clusters on")
    end = dt.date.fromisoformat(as_of) if as_of else dt.date.fromisoformat(available[-1])
    start = end - dt.timedelta(days=days - 1)
    window = [key for key in available if start <= dt.date.fromisoformat(key) <= end]
    if not window:
        raise dg.Failure(f"no features partitions between {start} and {end}")
    return window


@dg.asset(group_name="clusters", deps=[features], kinds={"spark"}, code_version="1")
def cluster_model(
    context: dg.AssetExecutionContext,
    config: ClusterModelConfig,
    blob_store: BlobStoreResource,
    pyspark: LazySparkResource,
) -> dg.MaterializeResult:
    """k-means centroids fitted on the trailing window of features."""
    datasets = blob_store.datasets()
    window = trailing_window(datasets.partitions("features"), config.as_of, SPEC.clustering.window_days)
    frame = pyspark.spark_session.read.parquet(*datasets.local_paths("features", window))
    model = fit_kmeans(
        frame, SPEC.clustering.features, SPEC.clustering.k, SPEC.clustering.seed,
        SPEC.clustering.max_iterations, window,
    )
    blob_store.blob_store().put(CLUSTER_MODEL_BLOB, model.to_json().encode())
    context.log.info(f"fitted k={SPEC.clustering.k} on {sum(model.sizes)} rows, {window[0]}..{window[-1]}")
    return dg.MaterializeResult(
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
)
def clusters(features: SparkDataFrame, blob_store: BlobStoreResource) -> SparkDataFrame:
    """Each example's cluster id under the current cluster model (an evaluation slice)."""
    model = ClusterModel.from_json(blob_store.blob_store().get(CLUSTER_MODEL_BLOB).decode())
    return assign_clusters(model, features, keep=[*SPEC.key_columns, PARTITION_COLUMN])
