"""k-means over numeric features in Spark; the fitted model is a small JSON document."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

CLUSTER_COLUMN = "cluster_id"


@dataclass(frozen=True)
class ClusterModel:
    """Standardization and centroids: everything needed to assign a row to a cluster."""

    features: list[str]
    means: list[float]
    stds: list[float]
    centers: list[list[float]]
    sizes: list[int]
    training_cost: float
    window: list[str]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterModel:
        return cls(**json.loads(text))


def _standardized(frame: DataFrame, features: list[str], means: list[float], stds: list[float]):
    from pyspark.sql import functions as F

    # Missing values sit at the mean, i.e. 0 after standardization.
    return [
        (F.coalesce(F.col(name).cast("double"), F.lit(mean)) - F.lit(mean)) / F.lit(std)
        for name, mean, std in zip(features, means, stds, strict=True)
    ]


def fit_kmeans(frame: DataFrame, features: list[str], k: int, seed: int, max_iterations: int,
               window: list[str]) -> ClusterModel:
    """Fit k-means on standardized features; raises if there are fewer rows than clusters."""
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    stats = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.avg(F.col(c)).alias(f"mean_{c}") for c in features],
        *[F.stddev_pop(F.col(c)).alias(f"std_{c}") for c in features],
    ).collect()[0]
    if stats["rows"] < k:
        raise ValueError(f"k-means needs at least k={k} rows, the window {window[0]}..{window[-1]} has {stats['rows']}")
    means = [float(stats[f"mean_{c}"] or 0.0) for c in features]
    stds = [float(stats[f"std_{c}"] or 0.0) or 1.0 for c in features]
    scaled = frame.select(
        *[expr.alias(name) for expr, name in zip(_standardized(frame, features, means, stds), features, strict=True)]
    )
    vectors = VectorAssembler(inputCols=features, outputCol="x").transform(scaled).select("x")
    model = KMeans(k=k, seed=seed, maxIter=max_iterations, featuresCol="x").fit(vectors)
    summary = model.summary
    return ClusterModel(
        features=features,
        means=means,
        stds=stds,
        centers=[[float(v) for v in center] for center in model.clusterCenters()],
        sizes=[int(size) for size in summary.clusterSizes],
        training_cost=float(summary.trainingCost),
        window=window,
    )


def assign_clusters(model: ClusterModel, frame: DataFrame, keep: list[str]) -> DataFrame:
    """keep columns plus the id of the nearest centroid, as column expressions (no Python UDF)."""
    from pyspark.sql import functions as F

    scaled = _standardized(frame, model.features, model.means, model.stds)
    distances = [
        sum(((value - F.lit(c)) ** 2 for value, c in zip(scaled, center, strict=True)), F.lit(0.0))
        for center in model.centers
    ]
    nearest = F.least(*distances) if len(distances) > 1 else distances[0]
    cluster = F.lit(0)
    # Walk backwards so that the lowest index wins a tie, as in Spark's own predict.
    for index in range(len(distances) - 1, -1, -1):
        cluster = F.when(distances[index] == nearest, F.lit(index)).otherwise(cluster)
    return frame.select(*keep, cluster.cast("int").alias(CLUSTER_COLUMN))
