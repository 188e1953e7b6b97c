"""Training: the labelled window, and the two candidate models trained on it."""

import time
from dataclasses import asdict
from pathlib import Path
from tempfile import TemporaryDirectory

import dagster as dg
from pydantic import Field

from ml_assets.defs.assets.clusters import clusters
from ml_assets.defs.assets.features import features, labels
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY, permanent_failure
from ml_assets.ml.training_set import HOLDOUT, SPLIT_COLUMN, TRAIN, choose_window, labelled_examples
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import LazySparkResource, SparkDataFrame
from ml_assets.resources.spark_io import read_tables
from ml_assets.versioning import code_version

TRAINING_GROUP = "training"
MODEL_NAME = SPEC.name


class TrainingSetConfig(dg.Config):
    as_of: str | None = Field(
        None, description="Last holdout day (YYYY-MM-DD); default: the latest labelled day"
    )
    min_train_days: int = Field(7, description="Refuse to train on fewer labelled days than this")


@dg.asset(group_name=TRAINING_GROUP, deps=[features, labels, clusters], io_manager_key="spark_io",
          kinds={"spark", "parquet"}, code_version="1", pool=SPARK_POOL, retry_policy=STORE_RETRY)
def training_set(context: dg.AssetExecutionContext, config: TrainingSetConfig, blob_store: BlobStoreResource,
                 pyspark: LazySparkResource) -> SparkDataFrame:
    """Labelled examples of the training window and the holdout days after it."""
    datasets = blob_store.datasets()
    labelled = sorted(set(datasets.partitions("labels")) & set(datasets.partitions("features")))
    try:
        window = choose_window(labelled, config.as_of, SPEC.training.window_days, SPEC.training.holdout_days,
                               config.min_train_days)
    except ValueError as exc:  # too few labelled days: waiting, not retrying, brings more
        raise permanent_failure(str(exc)) from exc
    days = window.train_days + window.holdout_days
    spark = pyspark.spark_session

    def read(table: str, wanted: list[str]) -> SparkDataFrame:
        return read_tables(spark, blob_store, table, wanted)

    clustered = [d for d in days if d in set(datasets.partitions("clusters"))]
    frame = labelled_examples(SPEC, read("features", days), read("labels", days),
                              read("clusters", clustered) if clustered else None, window)
    context.add_output_metadata({
        "window": window.description,
        "train_days": dg.MetadataValue.json(window.train_days),
        "holdout_days": dg.MetadataValue.json(window.holdout_days),
        "days_without_clusters": dg.MetadataValue.json(sorted(set(days) - set(clustered))),
    })
    return frame


class KerasConfig(dg.Config):
    hidden_units: list[int] = Field([32, 16], description="Units of each hidden dense layer")
    epochs: int = Field(8, description="Most passes over the training rows (early stopping may end sooner)")
    batch_size: int = Field(256, description="Rows per gradient step")
    learning_rate: float = Field(1e-3, description="Adam learning rate")
    seed: int = Field(13, description="Seed for weights, shuffling and the validation split")


class SklearnConfig(dg.Config):
    max_iter: int = Field(200, description="Most boosting iterations")
    learning_rate: float = Field(0.1, description="Shrinkage of each tree")
    max_leaf_nodes: int = Field(31, description="Leaves per tree")
    l2_regularization: float = Field(0.0, description="L2 penalty on leaf values")
    seed: int = Field(13, description="Seed for the early-stopping split")


def _split(training: SparkDataFrame, split: str):
    examples = training.where(f"{SPLIT_COLUMN} = '{split}'").toPandas()
    if examples.empty:
        raise permanent_failure(f"the {split} split has no rows")
    return examples


def _holdout_metrics(model, training: SparkDataFrame) -> dict:
    from ml_assets.ml.evaluation import compute_metrics

    holdout = _split(training, HOLDOUT)
    return compute_metrics(holdout[SPEC.label.name].to_numpy(), model.predict_proba(holdout),
                           threshold=SPEC.promotion.decision_threshold).as_dict()


def _publish(context: dg.AssetExecutionContext, blob_store: BlobStoreResource, model, flavor: str,
             params: dict, seconds: float, rows: int, metrics: dict) -> dg.MaterializeResult:
    from ml_assets.ml.models import save_model

    window = context.instance.get_latest_materialization_event(training_set.key)
    window_meta = window.asset_materialization.metadata if window else {}
    with TemporaryDirectory() as staging:
        files = save_model(model, Path(staging))
        size = sum(f.stat().st_size for f in files)
        version = blob_store.models().publish(MODEL_NAME, Path(staging), {
            "flavor": flavor,
            "columns": {"numeric": model.columns.numeric, "categorical": model.columns.categorical},
            "label": SPEC.label.name,
            "dataset": SPEC.name,
            "data_window": {
                "train_days": window_meta["train_days"].value if "train_days" in window_meta else None,
                "holdout_days": window_meta["holdout_days"].value if "holdout_days" in window_meta else None,
            },
            "metrics": {"holdout": metrics},
            "code_version": code_version(),
            "params": params,
            "train_rows": rows,
            "train_seconds": round(seconds, 2),
            "run_id": context.run_id,
        })
    return dg.MaterializeResult(metadata={
        "model": MODEL_NAME, "version": version.version, "flavor": flavor,
        "train_rows": rows, "train_seconds": round(seconds, 2), "size_bytes": size,
        "params": dg.MetadataValue.json(params),
        **{f"holdout_{name}": value for name, value in metrics.items() if isinstance(value, float)},
    })


def _train_and_publish(context: dg.AssetExecutionContext, blob_store: BlobStoreResource,
                       training_set: SparkDataFrame, flavor: str, trainer, params, seed: int) -> dg.MaterializeResult:
    from ml_assets.ml.models import FeatureColumns

    examples = _split(training_set, TRAIN)
    started = time.perf_counter()
    model = trainer(examples, examples[SPEC.label.name].to_numpy(), FeatureColumns.from_spec(SPEC), params, seed)
    seconds = time.perf_counter() - started
    return _publish(context, blob_store, model, flavor, {**asdict(params), "seed": seed}, seconds,
                    len(examples), _holdout_metrics(model, training_set))


@dg.asset(group_name=TRAINING_GROUP, kinds={"tensorflow"}, code_version="1", pool=SPARK_POOL,
          retry_policy=STORE_RETRY)
def keras_candidate(context: dg.AssetExecutionContext, config: KerasConfig, training_set: SparkDataFrame,
                    blob_store: BlobStoreResource) -> dg.MaterializeResult:
    """A Keras network with its preprocessing inside, saved as a TF Serving SavedModel."""
    from ml_assets.ml.models import KerasParams, train_keras

    params = KerasParams(hidden_units=tuple(config.hidden_units), epochs=config.epochs,
                         batch_size=config.batch_size, learning_rate=config.learning_rate)
    return _train_and_publish(context, blob_store, training_set, "keras", train_keras, params, config.seed)


@dg.asset(group_name=TRAINING_GROUP, kinds={"scikitlearn"}, code_version="1", pool=SPARK_POOL,
          retry_policy=STORE_RETRY)
def sklearn_candidate(context: dg.AssetExecutionContext, config: SklearnConfig, training_set: SparkDataFrame,
                      blob_store: BlobStoreResource) -> dg.MaterializeResult:
    """A histogram gradient-boosting pipeline with its encoders inside, saved with skops."""
    from ml_assets.ml.models import SklearnParams, train_sklearn

    params = SklearnParams(max_iter=config.max_iter, learning_rate=config.learning_rate,
                           max_leaf_nodes=config.max_leaf_nodes, l2_regularization=config.l2_regularization)
    return _train_and_publish(context, blob_store, training_set, "sklearn", train_sklearn, params, config.seed)
