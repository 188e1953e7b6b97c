"""The candidate: both trained models and the champion scored on the same holdout days."""

import base64
import json

import dagster as dg

from ml_assets.defs.assets.training import (
    MODEL_NAME,
    TRAINING_GROUP,
    fold_blob,
    keras_candidate,
    sklearn_candidate,
    split_frame,
    training_frame,
)
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY, permanent_failure
from ml_assets.defs.freshness import evaluation_freshness
from ml_assets.ml.clustering import CLUSTER_COLUMN
from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.ml.training_set import HOLDOUT, TRAIN
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import SparkDataFrame

PRIMARY_METRIC = "roc_auc"
SAMPLE_RECORDS = 256


def evaluation_blob(version: int) -> str:
    return f"artifacts/evaluations/{MODEL_NAME}/v{version}.json"


def plot_blob(version: int) -> str:
    return f"artifacts/evaluations/{MODEL_NAME}/v{version}.png"


def latest_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    event = instance.get_latest_materialization_event(key)
    if event is None or "version" not in event.asset_materialization.metadata:
        raise permanent_failure(f"{key.to_user_string()} has no trained version yet")
    return int(event.asset_materialization.metadata["version"].value)


def as_gate_input(result) -> dict:
    """An EvaluationResult as the plain dict the gate and the report read."""
    return {
        "overall": result.overall.as_dict(),
        "slices": {dim: {value: m.as_dict() for value, m in values.items()} for dim, values in result.slices.items()},
    }


def _comparisons(pooled, best: str, champion: str | None, baseline: str) -> dict:
    """Paired differences of the chosen candidate against the champion (with slices) and the baseline.

    On the pooled rows of all folds; against the champion only where it was scored (days it did not train on).
    """
    from ml_assets.ml.comparison import compare

    promotion = SPEC.promotion
    champion_metrics = sorted({*promotion.min_improvement, *promotion.min_relative_improvement, PRIMARY_METRIC})
    out = {"baseline": compare(promotion, pooled.y, pooled.scores[best], pooled.scores[baseline], reference=baseline,
                               metrics=sorted({*promotion.baseline_margin, PRIMARY_METRIC}), days=pooled.days,
                               gate_slices=False),
           "champion": None}
    if champion is not None:
        rows = pooled.scored(best, champion)
        out["champion"] = compare(promotion, pooled.y[rows], pooled.scores[best][rows], pooled.scores[champion][rows],
                                  reference=champion, metrics=champion_metrics,
                                  slices=pooled.slices[rows].reset_index(drop=True), days=pooled.days[rows])
        out["champion"]["days"] = pooled.days_of(rows)
    out["baseline"]["days"] = pooled.days_of(pooled.scored(best))
    return out


def _slice_frame(frame, dimensions: list[str]):
    """The slice columns of `frame` (cluster ids as integers, not floats)."""
    slices = frame[dimensions].copy()
    if CLUSTER_COLUMN in slices:
        slices[CLUSTER_COLUMN] = slices[CLUSTER_COLUMN].astype("Int64")
    return slices


def _pooled(training_set: SparkDataFrame, holdout, predictions: dict, fresh: dict[str, int], champion,
            slices, blob_store: BlobStoreResource):
    """Every contender's scores on the validation rows of all training.folds.k folds (the latest: the holdout).

    Earlier folds: the fresh frameworks' refits scored by their training steps, the baseline refitted
    here, and the champion - a fixed model - scored on the days it did not train on (NaN elsewhere).
    """
    import numpy as np

    from ml_assets.ml.baseline import BASELINE_LABEL, train_baseline
    from ml_assets.ml.folds import (
        FoldScores,
        earlier_fold_frames,
        frame_folds,
        pool_folds,
        unseen_scores,
    )
    from ml_assets.ml.models import FeatureColumns

    latest = FoldScores(holdout[SPEC.label.name].to_numpy(), holdout[PARTITION_COLUMN].astype(str).to_numpy(),
                        predictions, slices)
    if SPEC.training.folds.k == 1:
        return pool_folds([latest])
    frame = training_frame(training_set)
    folds = frame_folds(frame, PARTITION_COLUMN, SPEC.training.window_days, SPEC.training.holdout_days,
                        SPEC.training.folds.k)
    stored = {label: blob_store.get_json(fold_blob(version)) for label, version in fresh.items()}
    earlier = []
    for index, (train, validation) in enumerate(earlier_fold_frames(frame, folds, PARTITION_COLUMN, SPEC.key_columns)):
        days = validation[PARTITION_COLUMN].astype(str).to_numpy()
        scores = {}
        for label, document in stored.items():
            p = document["folds"][index]["p"] if index < len(document["folds"]) else []
            if len(p) != len(validation):
                raise permanent_failure(f"{label}: {len(p)} stored scores for fold {index + 1}'s "
                                        f"{len(validation)} validation rows (trained on another training set?)")
            scores[label] = np.asarray(p, dtype=float)
        scores[BASELINE_LABEL] = train_baseline(train, train[SPEC.label.name].to_numpy(), FeatureColumns.from_spec(SPEC),
                                                seed=SPEC.promotion.seed).predict_proba(validation)
        if champion is not None:
            label, model, train_days = champion
            # Unknown training days (older manifests): the champion is judged on the holdout only.
            scores[label] = unseen_scores(days, train_days, model.predict_proba(validation))
        earlier.append(FoldScores(validation[SPEC.label.name].to_numpy(), days, scores,
                                  _slice_frame(validation, list(slices.columns))))
    return pool_folds([*earlier, latest])


def _selection_markdown(selection, folds: int) -> str:
    scores = ", ".join(f"{label} {score:.4f}" if score is not None else f"{label} n/a"
                       for label, score in selection.scores.items())
    lead = ""
    if selection.comparison is not None:
        difference = selection.comparison["overall"][selection.metric]
        if "error" not in difference:
            lead = (f"; lead {difference['estimate']:+.4f} [{difference['low']:+.4f}, {difference['high']:+.4f}]"
                    f" ({'established' if selection.established else 'not established'})")
    return (f"**{selection.chosen}** chosen on {selection.metric} over {selection.rows} rows of {folds} "
            f"fold(s): {scores}{lead}")


@dg.asset(group_name=TRAINING_GROUP, deps=[keras_candidate, sklearn_candidate], kinds={"python"},
          code_version="1", freshness_policy=evaluation_freshness, pool=SPARK_POOL, retry_policy=STORE_RETRY)
def candidate_model(context: dg.AssetExecutionContext, training_set: SparkDataFrame,
                    blob_store: BlobStoreResource) -> dg.MaterializeResult:
    """The better of the fresh candidates, judged beside the champion and a baseline on the same holdout days."""
    from ml_assets.ml.baseline import BASELINE_LABEL, train_baseline
    from ml_assets.ml.evaluation import (
        evaluate,
        metrics_table_markdown,
        plot_evaluation,
        slice_table_markdown,
    )
    from ml_assets.ml.folds import select_candidate
    from ml_assets.ml.gate import absolute_intervals
    from ml_assets.ml.models import FeatureColumns, load_model

    holdout = split_frame(training_set, HOLDOUT)
    store = blob_store.models()
    champion = store.champion(MODEL_NAME).version
    keras_version = latest_version(context.instance, keras_candidate.key)
    sklearn_version = latest_version(context.instance, sklearn_candidate.key)
    contenders = {f"keras v{keras_version}": keras_version, f"sklearn v{sklearn_version}": sklearn_version}
    if champion is not None:
        contenders[f"champion v{champion}"] = champion
    y = holdout[SPEC.label.name].to_numpy()
    dimensions = [d for d in SPEC.promotion.slice_dimensions if d in holdout.columns]
    slices = _slice_frame(holdout, dimensions)
    predictions, manifest_digests, champion_model = {}, {}, None
    for label, version in contenders.items():
        stored = store.get(MODEL_NAME, version)
        manifest_digests[version] = stored.manifest_sha256
        model = load_model(store.fetch(MODEL_NAME, version, manifest_sha256=stored.manifest_sha256),
                           stored.manifest["flavor"], FeatureColumns(**stored.manifest["columns"]))
        predictions[label] = model.predict_proba(holdout)
        if version == champion:
            champion_model = (label, model, (stored.manifest.get("data_window") or {}).get("train_days"))
    # The baseline: trained here on the same window, never published (a yardstick, not a servable model).
    train = split_frame(training_set, TRAIN)
    baseline = train_baseline(train, train[SPEC.label.name].to_numpy(), FeatureColumns.from_spec(SPEC),
                              seed=SPEC.promotion.seed)
    predictions[BASELINE_LABEL] = baseline.predict_proba(holdout)
    results = {label: evaluate(label, y, p, slices=slices, threshold=SPEC.promotion.decision_threshold,
                               min_slice_size=SPEC.promotion.min_slice_size) for label, p in predictions.items()}
    fresh = [label for label in contenders if not label.startswith("champion")]
    # Selection and the gate judge the same rows: the pooled validation rows of training.folds.k folds.
    pooled = _pooled(training_set, holdout, predictions, {label: contenders[label] for label in fresh},
                     champion_model, slices, blob_store)
    selection = select_candidate(SPEC.promotion, pooled.y, {label: pooled.scores[label] for label in fresh},
                                 days=pooled.days, metric=PRIMARY_METRIC)
    best = selection.chosen
    version = contenders[best]
    comparisons = _comparisons(pooled, best, None if champion is None else f"champion v{champion}", BASELINE_LABEL)
    judged = results[best] if pooled.folds == 1 else evaluate(
        best, pooled.y, pooled.scores[best], slices=pooled.slices, threshold=SPEC.promotion.decision_threshold,
        min_slice_size=SPEC.promotion.min_slice_size)
    document = {
        "model": MODEL_NAME,
        # The manifest these metrics were computed from: deployment promotes only that manifest.
        "candidate": {"label": best, "version": version, "flavor": store.get(MODEL_NAME, version).manifest["flavor"],
                      "manifest_sha256": manifest_digests[version], "evaluation": {
                          # judged on the pooled fold rows (the holdout alone when training.folds.k is 1)
                          **as_gate_input(judged),
                          # the absolute bars (e.g. ece) are judged on the candidate's own interval
                          "intervals": absolute_intervals(SPEC.promotion, pooled.y, pooled.scores[best],
                                                          pooled.days)},
                      "judged_on": {"folds": pooled.folds, "rows": int(pooled.y.size),
                                    "days": pooled.days_of(pooled.scored(best))}},
        "champion": None if champion is None else {
            "label": f"champion v{champion}", "version": champion,
            "flavor": store.get(MODEL_NAME, champion).manifest["flavor"],
            "evaluation": as_gate_input(results[f"champion v{champion}"]),
        },
        "baseline": {"label": BASELINE_LABEL, "train_rows": len(train),
                     "evaluation": as_gate_input(results[BASELINE_LABEL])},
        "comparisons": comparisons,
        # The framework was chosen by the gate's paired criterion on the pooled rows of training.folds.k folds.
        "selection": {**selection.as_dict(), "folds": SPEC.training.folds.k},
        "others": {label: as_gate_input(results[label]) for label in fresh if label != best},
        "holdout_rows": len(holdout),
        "holdout_days": sorted({str(d) for d in holdout["date"]}),
        "sample_records": json.loads(holdout.head(SAMPLE_RECORDS).to_json(orient="records", date_format="iso")),
        "run_id": context.run_id,
    }
    ordered = list(results.values())
    document["tables"] = {"metrics": metrics_table_markdown(ordered),
                          **{f"slices by {d}": slice_table_markdown(ordered, d) for d in dimensions}}
    plot = plot_evaluation(ordered)
    blob_store.blob_store().put(plot_blob(version), plot)
    blob_store.put_json(evaluation_blob(version), document)
    return dg.MaterializeResult(metadata={
        "version": version,
        "flavor": document["candidate"]["flavor"],
        "champion_version": champion if champion is not None else "none",
        "holdout_rows": len(holdout),
        "baseline_roc_auc": results[BASELINE_LABEL].overall.roc_auc or float("nan"),
        "selection": dg.MetadataValue.md(_selection_markdown(selection, SPEC.training.folds.k)),
        "evaluation_blob": evaluation_blob(version),
        **{name.replace(" ", "_"): dg.MetadataValue.md(table) for name, table in document["tables"].items()},
        "plot": dg.MetadataValue.md(f"![evaluation](data:image/png;base64,{base64.b64encode(plot).decode()})"),
    })
