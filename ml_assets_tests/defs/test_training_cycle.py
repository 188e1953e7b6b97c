"""Training cycles as Dagster runs on real data: train, evaluate, gate, deploy, report."""

import email
import email.policy
import shutil
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.defs.assets.evaluation import evaluation_blob
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.checks.promotion import PROMOTION_GATE, verdict_blob
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.sensors.reports import compose_cycle_report, send_cycle_report
from ml_assets.resources.email import EmailResource
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import (
    ALL_ASSETS,
    land_days,
    local_store_resource,
    make_resources,
    materialize,
    materialize_raw,
)

pytestmark = [pytest.mark.spark, pytest.mark.integration]

DAYS = [f"2013-01-{d:02d}" for d in range(1, 15)]
TRAINING = ["training_set", "keras_candidate", "sklearn_candidate", "candidate_model"]
FAST = {
    "training_set": {"config": {"min_train_days": 5}},
    "keras_candidate": {"config": {"epochs": 2, "hidden_units": [8]}},
    "sklearn_candidate": {"config": {"max_iter": 40}},
}
LENIENT = SPEC.promotion.model_copy(update={"absolute": {"roc_auc": 0.55}, "min_slice_size": 300,
                                            "slice_dimensions": ["cluster_id", "origin"]})
IMPOSSIBLE = LENIENT.model_copy(update={"absolute": {"roc_auc": 0.99}})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, spark_resource, example_frames):
    """Two weeks landed and materialized up to clusters, once for the module."""
    root = tmp_path_factory.mktemp("prepared")
    store = local_store_resource(root)
    land_days(store, example_frames, FIRST_DAY, FIRST_DAY.replace(day=14))
    resources = make_resources(store, spark_resource)
    with dg.instance_for_test() as instance:
        materialize_raw(resources, instance, DAYS)
        assert materialize(resources, instance, ["features", "labels"], partition_range=(DAYS[0], DAYS[-1])).success
        assert materialize(resources, instance, ["cluster_model"]).success
        assert materialize(resources, instance, ["clusters"], partition_range=(DAYS[0], DAYS[-1])).success
    return root


@pytest.fixture
def cycle(prepared, tmp_path, spark_resource, instance, monkeypatch):
    """A private copy of the prepared store, resources over it, and a runner for training runs."""
    shutil.copytree(prepared / "store", tmp_path / "store")
    store = local_store_resource(tmp_path)
    outbox = tmp_path / "outbox"
    resources = make_resources(store, spark_resource, EmailResource(outbox_dir=str(outbox)))
    monkeypatch.setattr("ml_assets.defs.checks.promotion.SPEC", SPEC.model_copy(update={"promotion": LENIENT}))

    def run(selection, promotion=LENIENT, force_reason=None, raise_on_error=False):
        monkeypatch.setattr("ml_assets.defs.checks.promotion.SPEC", SPEC.model_copy(update={"promotion": promotion}))
        config = {op: value for op, value in FAST.items() if op in selection}
        if force_reason:
            config[f"candidate_model_{PROMOTION_GATE}"] = {"config": {"force_reason": force_reason}}
        return dg.materialize(ALL_ASSETS, selection=selection, resources=resources, instance=instance,
                              run_config={"ops": config}, raise_on_error=raise_on_error)

    return run, store, resources, outbox


def _gate(result):
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == PROMOTION_GATE)


def _only_eml(outbox: Path):
    (path,) = outbox.glob("*.eml")
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def test_first_cycle_deploys_and_reports(cycle, instance):
    run, store, resources, outbox = cycle
    result = run([*TRAINING, "deployed_model"])
    assert result.success

    models = store.models()
    assert models.versions(MODEL_NAME) == [1, 2]  # keras and sklearn candidates
    candidate = result.asset_materializations_for_node("candidate_model")[0].metadata
    deployed = result.asset_materializations_for_node("deployed_model")[0].metadata
    assert models.champion(MODEL_NAME).version == deployed["version"].value == candidate["version"].value
    assert candidate["champion_version"].value == "none"
    assert "roc_auc" in candidate["metrics"].value and "cluster_id" in candidate["slices_by_cluster_id"].value
    gate = _gate(result)
    assert gate.passed
    assert "skipped: no champion yet" in gate.metadata["verdict"].value
    # The LogisticRegression baseline was trained on the same window and beaten on the same rows.
    assert "| beats baseline | roc_auc | overall |" in gate.metadata["verdict"].value
    assert "baseline (logistic regression)" in candidate["metrics"].value
    document = store.get_json(evaluation_blob(candidate["version"].value))
    versus = document["comparisons"]["baseline"]["overall"]["roc_auc"]
    # Non-inferior within the spec's margin (calibrated candidates fit on the window minus its calibration day,
    # the baseline on all of it: on this 7-day window "significantly better" does not hold every time).
    assert versus["method"] == "delong" and versus["n"] == document["holdout_rows"]
    assert versus["low"] > LENIENT.baseline_margin["roc_auc"]
    manifest = models.get(MODEL_NAME, deployed["version"].value).manifest
    assert manifest["data_window"]["holdout_days"] == DAYS[-7:]
    assert manifest["metrics"]["holdout"]["roc_auc"] > 0.5
    assert set(manifest["files"]) and manifest["code_version"]

    where = send_cycle_report(instance, result.run_id, resources["blob_store"], resources["email"])
    message = _only_eml(outbox)
    assert where.endswith(".eml")
    assert f"deployed version {deployed['version'].value}" in message["subject"]
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "absolute" in html and "roc_auc" in html
    assert any(part.get_content_type() == "image/png" for part in message.walk())


def test_a_retrain_of_the_same_configuration_keeps_the_champion(cycle, instance):
    run, store, resources, _ = cycle
    assert run([*TRAINING, "deployed_model"]).success
    champion = store.models().champion(MODEL_NAME).version
    result = run([*TRAINING, "deployed_model"])  # same data, same seeds: no established improvement
    gate = _gate(result)
    assert not gate.passed and store.models().champion(MODEL_NAME).version == champion
    verdict = store.get_json(verdict_blob(int(gate.metadata["candidate_version"].value)))
    failed = {(r["rule"], r["slice"]) for r in verdict["rows"] if not r["passed"]}
    assert failed == {("beats champion", "overall")}
    beats = next(r for r in verdict["rows"] if r["rule"] == "beats champion")
    assert beats["low"] <= 0 <= beats["high"]
    slices = [r for r in verdict["rows"] if r["rule"] == "slice regression"]
    assert slices and all(r["n"] >= LENIENT.min_slice_size for r in slices)
    assert any(r["p_value"] is not None for r in slices)
    assert compose_cycle_report(instance, result.run_id, resources["blob_store"]).status == "kept_champion"


def test_failed_gate_blocks_deployment_in_the_same_run(cycle, instance):
    run, store, resources, _ = cycle
    result = run([*TRAINING, "deployed_model"], promotion=IMPOSSIBLE)
    assert not result.success
    assert not _gate(result).passed
    assert not result.asset_materializations_for_node("deployed_model")
    assert store.models().champion(MODEL_NAME).version is None
    version = result.asset_materializations_for_node("candidate_model")[0].metadata["version"].value
    assert store.get_json(verdict_blob(version))["passed"] is False

    report = compose_cycle_report(instance, result.run_id, resources["blob_store"])
    assert report.status == "kept_champion" and report.deployed_version is None
    assert "absolute roc_auc" in report.reason


def test_deployment_under_automation_follows_the_gate(cycle, instance):
    run, store, resources, _ = cycle
    defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
    selection = dg.AssetSelection.assets("deployed_model")
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)

    run(TRAINING, promotion=IMPOSSIBLE)
    rejected = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                                 cursor=baseline.cursor)
    assert rejected.total_requested == 0

    assert run(TRAINING).success
    accepted = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                                 cursor=rejected.cursor)
    assert accepted.total_requested == 1
    assert run(["deployed_model"]).success
    assert store.models().champion(MODEL_NAME).version is not None


def test_deployed_model_refuses_a_candidate_without_a_passing_verdict(cycle):
    run, store, _, _ = cycle
    run(TRAINING, promotion=IMPOSSIBLE)
    result = run(["deployed_model"])  # materialized by hand, outside the gate's run
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert "did not pass its promotion gate" in failure.user_failure_data.description
    assert store.models().champion(MODEL_NAME).version is None


def test_concurrent_promotion_loses_the_compare_and_swap(cycle):
    run, store, _, _ = cycle
    assert run(TRAINING).success
    models = store.models()
    candidate = max(models.versions(MODEL_NAME))
    other = min(models.versions(MODEL_NAME))
    models.promote(MODEL_NAME, other, expected=None, reason="another deployment won the race")

    result = run(["deployed_model"])
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    assert "PromotionConflictError" in (error.cause or error).cls_name or "PromotionConflict" in error.message
    assert models.champion(MODEL_NAME).version == other != candidate


def test_forced_promotion_needs_a_reason_and_is_recorded(cycle, instance):
    run, store, resources, outbox = cycle
    result = run([*TRAINING, "deployed_model"], promotion=IMPOSSIBLE, force_reason="INC-42: roll forward")
    assert result.success
    assert _gate(result).metadata["forced_reason"].value == "INC-42: roll forward"
    (entry,) = store.models().history(MODEL_NAME)
    assert entry["forced"] is True and "INC-42" in entry["reason"]
    send_cycle_report(instance, result.run_id, resources["blob_store"], resources["email"])
    message = _only_eml(outbox)
    assert "forced" in message["subject"]
    assert "INC-42: roll forward" in message.get_body(preferencelist=("plain",)).get_content()


def test_failed_cycle_reports_where_it_failed(cycle, instance):
    _, store, resources, outbox = cycle
    result = dg.materialize(ALL_ASSETS, selection=[*TRAINING, "deployed_model"], resources=resources,
                            instance=instance, raise_on_error=False,
                            run_config={"ops": {"training_set": {"config": {"as_of": "2013-01-03"}}}})
    assert not result.success
    send_cycle_report(instance, result.run_id, resources["blob_store"], resources["email"])
    message = _only_eml(outbox)
    assert "FAILED at training_set" in message["subject"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "labelled day(s) in the training window" in text
    assert store.models().versions(MODEL_NAME) == []


def test_rolling_folds_choose_the_framework_on_pooled_predictions(cycle, monkeypatch):
    run, store, _, _ = cycle
    # Two folds of 3 days, 6-day windows: fold 1 validates 01-09..11 trained on 01-03..08, the published
    # models validate 01-12..14 trained on 01-06..11 (01-03..05 are read for fold 1 only).
    folded = SPEC.model_copy(update={"training": SPEC.training.model_copy(update={
        "window_days": 6, "holdout_days": 3, "folds": SPEC.training.folds.model_copy(update={"k": 2})})})
    for module in ("training", "evaluation"):
        monkeypatch.setattr(f"ml_assets.defs.assets.{module}.SPEC", folded)
    result = run(TRAINING)  # the gate's verdict on a 3-day holdout is not what this test is about
    window = result.asset_materializations_for_node("training_set")[0].metadata
    assert window["folds"].value == [
        "train 2013-01-03..2013-01-08 (6 days), holdout 2013-01-09..2013-01-11 (3 days)",
        "train 2013-01-06..2013-01-11 (6 days), holdout 2013-01-12..2013-01-14 (3 days)"]
    candidate = result.asset_materializations_for_node("candidate_model")[0].metadata
    document = store.get_json(evaluation_blob(candidate["version"].value))
    selection = document["selection"]
    fold_documents = {v: store.get_json(f"artifacts/folds/{MODEL_NAME}/v{v}.json") for v in (1, 2)}
    (fold,) = fold_documents[1]["folds"]
    assert fold["window"] == window["folds"].value[0] and len(fold["p"]) == fold["rows"]
    assert fold_documents[2]["folds"][0]["rows"] == fold["rows"]  # both frameworks scored the same rows
    assert selection["folds"] == 2 and selection["rows"] == document["holdout_rows"] + fold["rows"]
    assert selection["chosen"] == document["candidate"]["label"] == max(selection["scores"],
                                                                        key=selection["scores"].get)
    assert selection["comparison"]["overall"]["roc_auc"]["n"] == selection["rows"]
    # The gate judges the same pooled rows: the baseline refitted on fold 1, the candidate's fold-1 refit.
    assert document["candidate"]["judged_on"] == {"folds": 2, "rows": selection["rows"], "days": DAYS[8:14]}
    assert document["comparisons"]["baseline"]["overall"]["roc_auc"]["n"] == selection["rows"]
    assert document["candidate"]["evaluation"]["overall"]["n"] == selection["rows"]
    assert document["candidate"]["evaluation"]["intervals"]["roc_auc"]["n"] == selection["rows"]
    # The published model never saw an earlier fold's extra days, nor its own holdout.
    manifest = store.models().get(MODEL_NAME, candidate["version"].value).manifest
    assert manifest["data_window"]["train_days"] == DAYS[5:11]
    assert "chosen on roc_auc" in candidate["selection"].value
    gate = _gate(result).metadata["selected_on"].value
    assert gate.startswith(f"roc_auc on {selection['rows']} pooled rows of 2 fold(s)")
    assert _gate(result).metadata["judged_on"].value == f"{selection['rows']} pooled rows of 2 fold(s), 6 days"
