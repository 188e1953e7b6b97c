"""The promotion gate: a blocking check on the candidate, so a worse model never reaches deployment."""

import dagster as dg
from pydantic import Field

from ml_assets.defs.assets.evaluation import candidate_model, evaluation_blob, latest_version
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import STORE_RETRY
from ml_assets.ml.gate import decide
from ml_assets.resources.blob_store import BlobStoreResource

PROMOTION_GATE = "promotion_gate"


def verdict_blob(version: int) -> str:
    return f"artifacts/verdicts/{MODEL_NAME}/v{version}.json"


def _selected_on(selection: dict | None) -> str:
    if not selection:
        return "highest holdout roc_auc"
    return (f"{selection['metric']} on {selection['rows']} pooled rows of {selection.get('folds', 1)} fold(s)"
            f" ({'lead established' if selection['established'] else 'lead not established'})")


def _judged_on(document: dict) -> str:
    judged = document["candidate"].get("judged_on")
    if not judged:
        return f"holdout ({document.get('holdout_rows', '?')} rows)"
    champion = (document.get("comparisons") or {}).get("champion")
    return (f"{judged['rows']} pooled rows of {judged['folds']} fold(s), {len(judged['days'])} days"
            + ("" if not champion else f"; the champion on the {len(champion.get('days', []))} it did not train on"))


class GateConfig(dg.Config):
    force_reason: str | None = Field(
        None, description="Promote even if rules fail; the written reason is kept in the history and the report"
    )


@dg.asset_check(asset=candidate_model, name=PROMOTION_GATE, blocking=True, retry_policy=STORE_RETRY,
                description="Absolute bars, beats the champion and the baseline (paired intervals), no significant slice "
                "regression, serves within budget")
def promotion_gate(context: dg.AssetCheckExecutionContext, config: GateConfig,
                   blob_store: BlobStoreResource) -> dg.AssetCheckResult:
    from ml_assets.serving.validation import validate_serving

    version = latest_version(context.instance, candidate_model.key)
    document = blob_store.get_json(evaluation_blob(version))
    infra = validate_serving(blob_store.models(), MODEL_NAME, version,
                             document["sample_records"][: SPEC.promotion.infra.sample_requests])
    champion = document["champion"]
    comparisons = document.get("comparisons") or {}  # absent from documents written before issue 12: fails closed
    verdict = decide(SPEC.promotion, document["candidate"]["evaluation"],
                     champion["evaluation"] if champion else None, infra, force_reason=config.force_reason,
                     vs_champion=comparisons.get("champion"), vs_baseline=comparisons.get("baseline"))
    blob_store.put_json(verdict_blob(version), {
        "version": version, "passed": verdict.passed, "forced": verdict.forced,
        "forced_reason": verdict.forced_reason, "summary": verdict.summary,
        "champion_version": champion["version"] if champion else None,
        "rows": verdict.rows_as_dicts(), "run_id": context.run.run_id,
    })
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description=verdict.summary,
        metadata={
            "candidate_version": version,
            "champion_version": champion["version"] if champion else "none",
            "verdict": dg.MetadataValue.md(verdict.markdown()),
            "forced_reason": verdict.forced_reason or "",
            # How the candidate was chosen among the frameworks (pooled folds; absent before issue 12's folds).
            "selected_on": _selected_on(document.get("selection")),
            # The rows the verdict judged: the pooled folds (training.folds.k), the holdout when k is 1.
            "judged_on": _judged_on(document),
            "p95_latency_ms": infra.p95_latency_ms if infra.p95_latency_ms is not None else -1.0,
        },
    )
