"""Deployment: the champion pointer moves to a candidate only after its gate passed."""

import dagster as dg

from ml_assets.defs.assets.evaluation import candidate_model, evaluation_blob, latest_version
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.checks.promotion import verdict_blob
from ml_assets.defs.execution import STORE_RETRY, permanent_failure
from ml_assets.defs.freshness import deployment_freshness
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import BlobNotFoundError

DEPLOYMENT_GROUP = "deployment"

on_gate_passed = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("new candidate whose promotion gate passed")


@dg.asset(group_name=DEPLOYMENT_GROUP, deps=[candidate_model], automation_condition=on_gate_passed,
          kinds={"tensorflow"}, code_version="1", freshness_policy=deployment_freshness,
          retry_policy=STORE_RETRY)
def deployed_model(context: dg.AssetExecutionContext, blob_store: BlobStoreResource) -> dg.MaterializeResult:
    """The model version serving traffic: the champion pointer, moved by compare-and-swap."""
    version = latest_version(context.instance, candidate_model.key)
    try:
        verdict = blob_store.get_json(verdict_blob(version))
    except BlobNotFoundError:
        raise permanent_failure(f"candidate v{version} has no promotion verdict: run its promotion_gate check") from None
    if not verdict["passed"]:
        raise permanent_failure(f"candidate v{version} did not pass its promotion gate: {verdict['summary']}")
    evaluation = blob_store.get_json(evaluation_blob(version))
    evaluated_against = evaluation["champion"]
    expected = evaluated_against["version"] if evaluated_against else None
    store = blob_store.models()
    if store.champion(MODEL_NAME).version == version:
        return _result(store, version, "already the champion")
    # Compare-and-swap: if the champion moved since this candidate was judged, the verdict is stale.
    # The manifest must be the one the candidate was evaluated from: an edit since is refused.
    pointer = store.promote(MODEL_NAME, version, expected=expected, reason=verdict["summary"],
                            forced=verdict["forced"], actor=f"dagster run {context.run_id}",
                            manifest_sha256=evaluation["candidate"].get("manifest_sha256"))
    return _result(store, pointer.version, verdict["summary"])


def _result(store, version: int, reason: str) -> dg.MaterializeResult:
    manifest = store.get(MODEL_NAME, version).manifest
    history = store.history(MODEL_NAME)
    rows = ["| at | version | previous | forced | reason |", "|---|---|---|---|---|"]
    rows += [f"| {h.get('at')} | {h.get('version')} | {h.get('previous')} | {h.get('forced')} | {h.get('reason')} |"
             for h in history[-10:]]
    return dg.MaterializeResult(metadata={
        "model": MODEL_NAME, "version": version, "flavor": manifest["flavor"], "reason": reason,
        "history": dg.MetadataValue.md("\n".join(rows)),
    })
