"""Training: the labelled window, and the two candidate models trained on it."""

import threading
import time
from dataclasses import asdict
from pathlib import Path
from tempfile import TemporaryDirectory

import dagster as dg
from pydantic import Field

from ml_assets.defs.assets.clusters import clusters
from ml_assets.defs.assets.features import features, labels
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY, TRAINING_POOL, permanent_failure
from ml_assets.ml.folds import rolling_folds
from ml_assets.ml.labels import settled_days
from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.ml.training_set import HOLDOUT, SPLIT_COLUMN, TRAIN, labelled_examples
from ml_assets.ml.values import feature_value_types
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import LazySparkResource, SparkDataFrame
from ml_assets.resources.spark_io import read_tables
from ml_assets.versioning import code_version

TRAINING_GROUP = "training"
MODEL_NAME = SPEC.name


_IN_PROCESS_EXECUTORS = {"in_process", "execute_in_process_executor"}


def _import_tensorflow_meanwhile(context: dg.AssetExecutionContext) -> None:
    """keras_candidate needs TensorFlow (~7 s to import) and this step mostly waits on Spark: when
    the next steps run in this process, import it meanwhile (a multiprocess run: each step is its own)."""
    if context.job_def.executor_def.name in _IN_PROCESS_EXECUTORS:
        from ml_assets.ml.models_keras import import_tensorflow_in_background

        import_tensorflow_in_background()


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
    _import_tensorflow_meanwhile(context)
    datasets = blob_store.datasets()
    # With a label feed, only days whose outcomes have settled: a day still filling up is a biased sample.
    labelled = settled_days(SPEC, datasets, sorted(set(datasets.partitions("labels")) & set(datasets.partitions("features"))))
    try:
        folds = rolling_folds(labelled, config.as_of, SPEC.training.window_days, SPEC.training.holdout_days,
                              SPEC.training.folds.k, config.min_train_days)
    except ValueError as exc:  # too few labelled days: waiting, not retrying, brings more
        raise permanent_failure(str(exc)) from exc
    window = folds[-1]  # the published models' window; earlier folds only judge the frameworks
    days = sorted({day for fold in folds for day in fold.train_days + fold.holdout_days})
    spark = pyspark.spark_session

    def read(table: str, wanted: list[str]) -> SparkDataFrame:
        return read_tables(spark, blob_store, table, wanted)

    with_clusters = set(datasets.partitions("clusters"))  # listed once, not once per day
    clustered = [d for d in days if d in with_clusters]
    frame = labelled_examples(SPEC, read("features", days), read("labels", days),
                              read("clusters", clustered) if clustered else None, window)
    context.add_output_metadata({
        "window": window.description,
        "train_days": dg.MetadataValue.json(window.train_days),
        "holdout_days": dg.MetadataValue.json(window.holdout_days),
        "days_without_clusters": dg.MetadataValue.json(sorted(set(days) - set(clustered))),
        "folds": dg.MetadataValue.json([fold.description for fold in folds]),
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


# The pandas copies of ONE training set's splits, keyed by the files Spark reads (a dataset version's
# files are immutable): a training cycle run in one process (the replay, execute_in_process) converts
# each split once instead of once per step (both candidates, their holdout metrics, the evaluation).
_FRAMES: dict[tuple, object] = {}
_FRAMES_LOCK = threading.Lock()


def _pandas(training: SparkDataFrame, split: str | None):
    """The rows of ``split`` (every row if None) as pandas: a copy of the one conversion per version."""
    files = tuple(sorted(training.inputFiles()))
    with _FRAMES_LOCK:
        frame = _FRAMES.get((files, split))
        if frame is None:
            frame = (training if split is None else training.where(f"{SPLIT_COLUMN} = '{split}'")).toPandas()
            if any(key[0] != files for key in _FRAMES):
                _FRAMES.clear()  # another training set: keep one version's frames only
            _FRAMES[(files, split)] = frame
    return frame.copy()


def training_frame(training: SparkDataFrame):
    """Every row of the training set as pandas (see ``_pandas``)."""
    return _pandas(training, None)


def split_frame(training: SparkDataFrame, split: str):
    """The rows of one split as pandas (see ``_pandas``); a split without rows is a permanent failure."""
    examples = _pandas(training, split)
    if examples.empty:
        raise permanent_failure(f"the {split} split has no rows")
    return examples


def _holdout_metrics(model, training: SparkDataFrame) -> dict:
    from ml_assets.ml.evaluation import compute_metrics

    holdout = split_frame(training, HOLDOUT)
    return compute_metrics(holdout[SPEC.label.name].to_numpy(), model.predict_proba(holdout),
                           threshold=SPEC.promotion.decision_threshold).as_dict()


def _publish(context: dg.AssetExecutionContext, blob_store: BlobStoreResource, model, flavor: str,
             params: dict, seconds: float, rows: int, metrics: dict, extra: dict | None = None) -> dg.MaterializeResult:
    from ml_assets.ml.models import save_model

    window = context.instance.get_latest_materialization_event(training_set.key)
    window_meta = window.asset_materialization.metadata if window else {}
    with TemporaryDirectory() as staging:
        files = save_model(model, Path(staging))
        size = sum(f.stat().st_size for f in files)
        version = blob_store.models().publish(MODEL_NAME, Path(staging), {
            "flavor": flavor,
            "columns": {"numeric": model.columns.numeric, "categorical": model.columns.categorical},
            # How batch read each feature's raw values: the server reads requests the same way.
            "value_types": feature_value_types(SPEC),
            "label": SPEC.label.name,
            "dataset": SPEC.name,
            "data_window": {
                "train_days": window_meta["train_days"].value if "train_days" in window_meta else None,
                "holdout_days": window_meta["holdout_days"].value if "holdout_days" in window_meta else None,
            },
            "metrics": {"holdout": metrics},
            "calibration": model.calibration_info(),
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
        **(extra or {}),
    })


def fold_blob(version: int) -> str:
    """Predictions of a candidate's framework on the earlier folds' validation rows."""
    return f"artifacts/folds/{MODEL_NAME}/v{version}.json"


def _earlier_folds(training: SparkDataFrame, fit) -> list[dict]:
    """Refit on each earlier fold's window and score its validation rows (training.folds.k > 1)."""
    from ml_assets.ml.evaluation import compute_metrics
    from ml_assets.ml.folds import earlier_fold_frames, frame_folds

    frame = training_frame(training)
    folds = frame_folds(frame, PARTITION_COLUMN, SPEC.training.window_days, SPEC.training.holdout_days,
                        SPEC.training.folds.k)
    scored = []
    for fold, (train, validation) in zip(folds, earlier_fold_frames(frame, folds, PARTITION_COLUMN,
                                                                    SPEC.key_columns), strict=False):
        y = validation[SPEC.label.name].to_numpy()
        p = fit(train).predict_proba(validation)
        roc_auc = compute_metrics(y, p, threshold=SPEC.promotion.decision_threshold).roc_auc
        scored.append({"window": fold.description, "rows": len(validation), "positives": int(y.sum()),
                       "roc_auc": roc_auc, "p": [float(v) for v in p]})
    return scored


def _train_and_publish(context: dg.AssetExecutionContext, blob_store: BlobStoreResource,
                       training_set: SparkDataFrame, flavor: str, trainer, params, seed: int) -> dg.MaterializeResult:
    from ml_assets.ml.models import FeatureColumns

    columns = FeatureColumns.from_spec(SPEC)

    def fit(examples):
        from ml_assets.ml.calibration import CalibrationParams

        # Calibrated on held-out training days (spec training.calibration*), inside the saved artifact.
        return trainer(examples, examples[SPEC.label.name].to_numpy(), columns, params, seed,
                       calibration=CalibrationParams.from_spec(SPEC.training),
                       days=examples[PARTITION_COLUMN].to_numpy())

    examples = split_frame(training_set, TRAIN)
    started = time.perf_counter()
    model = fit(examples)
    seconds = time.perf_counter() - started
    # Same configuration refitted on each earlier fold: the evaluation step chooses the framework on all folds.
    folds = _earlier_folds(training_set, fit) if SPEC.training.folds.k > 1 else []
    extra = {"earlier_folds_roc_auc": dg.MetadataValue.json([f["roc_auc"] for f in folds])} if folds else {}
    result = _publish(context, blob_store, model, flavor, {**asdict(params), "seed": seed}, seconds,
                      len(examples), _holdout_metrics(model, training_set), extra)
    if folds:
        blob_store.put_json(fold_blob(result.metadata["version"]), {"flavor": flavor, "folds": folds})
    return result


@dg.asset(group_name=TRAINING_GROUP, kinds={"tensorflow"}, code_version="1", pool=TRAINING_POOL,
          retry_policy=STORE_RETRY)
def keras_candidate(context: dg.AssetExecutionContext, config: KerasConfig, training_set: SparkDataFrame,
                    blob_store: BlobStoreResource) -> dg.MaterializeResult:
    """A Keras network with its preprocessing inside, saved as a TF Serving SavedModel."""
    from ml_assets.ml.models import KerasParams, train_keras

    params = KerasParams(hidden_units=tuple(config.hidden_units), epochs=config.epochs,
                         batch_size=config.batch_size, learning_rate=config.learning_rate)
    return _train_and_publish(context, blob_store, training_set, "keras", train_keras, params, config.seed)


@dg.asset(group_name=TRAINING_GROUP, kinds={"scikitlearn"}, code_version="1", pool=TRAINING_POOL,
          retry_policy=STORE_RETRY)
def sklearn_candidate(context: dg.AssetExecutionContext, config: SklearnConfig, training_set: SparkDataFrame,
                      blob_store: BlobStoreResource) -> dg.MaterializeResult:
    """A histogram gradient-boosting pipeline with its encoders inside, saved with skops."""
    from ml_assets.ml.models import SklearnParams, train_sklearn

    params = SklearnParams(max_iter=config.max_iter, learning_rate=config.learning_rate,
                           max_leaf_nodes=config.max_leaf_nodes, l2_regularization=config.l2_regularization)
    return _train_and_publish(context, blob_store, training_set, "sklearn", train_sklearn, params, config.seed)
