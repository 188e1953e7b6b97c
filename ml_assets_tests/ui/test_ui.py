"""The UI as users use it, in a real browser against the webserver, daemon and code server.

Against an instance with ten days materialized and one training cycle run (see conftest.py):
the lineage shows the seven groups and their assets, the promotion gate shows its verdict table,
a backfill of three landed raw days launched from the UI succeeds (each day materialized once),
the sensors run, and `features` passes its freshness policy. Screenshots go to the artefacts folder.
"""

from __future__ import annotations

import os
import re
import shutil

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from playwright.sync_api import expect

from ml_assets_tests.ui.conftest import README_SHOT, README_SHOT_VAR, UI_TIMEOUT_MS, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

GROUPS = {
    "raw": ["raw_flights", "raw_weather"],
    "features": ["features"],
    "labels": ["labels"],
    "clusters": ["cluster_model", "clusters"],
    "training": ["training_set", "keras_candidate", "sklearn_candidate", "candidate_model"],
    "deployment": ["deployed_model"],
    "monitoring": ["reference_stats", "feature_drift", "live_performance"],
}
SENSORS = ["landed_blobs", "data_automation", "retrain_on_drift", "retrain_on_performance", "freshness_alerts"]
RAW_KEYS = [dg.AssetKey("raw_flights"), dg.AssetKey("raw_weather")]
# A sensor's page names its latest tick by date and time once the daemon has evaluated it.
TICK_TIME = re.compile(r"\w{3} \d{1,2}, \d{1,2}:\d{2}")


def _graph(page):
    """The lineage graph (an SVG), as opposed to the group list beside it."""
    return page.locator("svg").filter(has=page.locator("foreignObject")).first


def _expand_all_groups(page):
    search = page.get_by_text("Search and filter assets", exact=True).bounding_box()
    # Right-click an empty corner of the canvas, below the search bar: the graph's own menu. It
    # offers "Collapse all groups" instead when they are expanded (the browser remembers).
    page.mouse.click(search["x"] + 40, search["y"] + search["height"] + 60, button="right")
    expand = page.get_by_role("menuitem", name="Expand all groups")
    collapse = page.get_by_role("menuitem", name="Collapse all groups")
    expand.or_(collapse).first.wait_for()
    if expand.count():
        expand.click()
    else:
        page.keyboard.press("Escape")


def test_lineage_shows_the_seven_groups_and_their_assets(ui_site, page, shot):
    page.goto(f"{ui_site.url}/asset-groups")
    graph = _graph(page)
    for group in GROUPS:
        graph.get_by_text(group, exact=True).wait_for()
    shot(page, "01-lineage-groups")

    _expand_all_groups(page)
    for assets in GROUPS.values():
        for asset in assets:
            names = graph.get_by_text(asset, exact=True)
            names.last.wait_for()
            # features, labels and clusters name both a group (its frame) and an asset (a node).
            assert names.count() >= (2 if asset in GROUPS else 1), f"no node for the asset {asset}"
    shot(page, "02-lineage-assets")

    # A clean picture for the README: the graph's canvas alone, every group expanded, laid out
    # again (reload) to fit the canvas once the navigation is hidden.
    clean = page.context.new_page()
    clean.set_viewport_size({"width": 1600, "height": 820})
    skip = clean.get_by_role("button", name="Skip", exact=True)
    clean.add_locator_handler(clean.get_by_text("Join the Dagster community"), lambda: skip.click())
    clean.goto(f"{ui_site.url}/asset-groups")
    _graph(clean).get_by_text("raw", exact=True).wait_for()
    clean.get_by_role("button", name="Hide navigation").click()
    _expand_all_groups(clean)
    clean.reload()
    for assets in GROUPS.values():
        _graph(clean).get_by_text(assets[-1], exact=True).last.wait_for()
    clean.wait_for_timeout(2000)  # the zoom to fit is animated
    picture = ui_site.artifacts / "asset-graph.png"
    _graph(clean).locator("xpath=../..").screenshot(path=str(picture), animations="disabled")
    clean.close()
    if os.environ.get(README_SHOT_VAR) == "1":
        README_SHOT.parent.mkdir(exist_ok=True)
        shutil.copy(picture, README_SHOT)


def test_promotion_gate_shows_its_verdict_table(ui_site, page, shot):
    key = dg.AssetCheckKey(dg.AssetKey("candidate_model"), "promotion_gate")
    with ui_site.instance() as instance:
        (record,) = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    evaluation = record.event.dagster_event.event_specific_data
    markdown = evaluation.metadata["verdict"].value
    expected_rows = [
        # The UI renders Markdown: "**FAIL** (...)" shows as "FAIL (...)".
        [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]
        for line in markdown.splitlines() if line.startswith("|")
    ]
    header, rows = expected_rows[0], expected_rows[2:]  # [1] is the |---| separator
    assert rows, markdown

    page.goto(f"{ui_site.url}/assets/candidate_model?view=checks")
    page.get_by_text("promotion_gate", exact=True).first.wait_for()
    outcome = "Passed" if evaluation.passed else "Failed"
    page.get_by_text(outcome, exact=True).first.wait_for()
    page.get_by_text(evaluation.description, exact=True).first.wait_for()
    page.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has_text="verdict")
    table = dialog.get_by_role("table")
    table.wait_for()
    shot(page, "03-promotion-gate-verdict")

    assert [h.inner_text().strip() for h in table.get_by_role("columnheader").all()] == header
    shown = [[c.inner_text().strip() for c in row.get_by_role("cell").all()]
             for row in table.get_by_role("row").all()[1:]]
    assert shown == rows
    assert all(row[-1].lower().startswith(("pass", "fail")) for row in shown)


def test_backfill_of_three_raw_days_from_the_ui(ui_site, page, shot, request):
    days = ui_site.built["backfill_days"]
    page.goto(f"{ui_site.url}/locations/ml_assets/asset-groups/raw")
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize 2 assets")
    dialog.get_by_placeholder(re.compile("^ex: ")).fill(f"[{days[0]}...{days[-1]}]")
    dialog.get_by_placeholder(re.compile("^ex: ")).press("Enter")
    dialog.get_by_text("3 partitions", exact=True).wait_for()
    shot(page, "04-backfill-dialog")
    dialog.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text(re.compile(r"Created backfill"))
    toast.wait_for()
    backfill_id = re.search(r"Created backfill\s+(\w+)", toast.inner_text())[1]

    # Only now the daemon: its landed_blobs sensor leaves the days of a requested backfill to it.
    request.getfixturevalue("daemon")

    page.goto(f"{ui_site.url}/runs/b/{backfill_id}")

    def finished():
        page.reload()
        page.get_by_text("Partition selection", exact=True).wait_for()
        text = page.locator("body").inner_text()
        status = re.search(r"\nStatus\s*\n\s*(\w[\w ]*)", text)
        return status and status[1].strip() in ("Succeeded", "Failed", "Canceled", "Completed") and status[1].strip()

    status = wait_until(finished, f"backfill {backfill_id} to finish", timeout=900, interval=10)
    shot(page, "05-backfill-finished")
    assert status in ("Succeeded", "Completed"), f"backfill {backfill_id} ended {status}"
    text = page.locator("body").inner_text()
    for key in RAW_KEYS:
        # Per asset: partitions targeted, in progress, succeeded, failed (a grid of divs, no table roles).
        name = key.path[-1]
        assert re.search(rf"{name}\s+(?:{name}\s+)?100% completed\s+3\s+0\s+3\s+0\b", text), text

    with ui_site.instance() as instance:
        backfill = instance.get_backfill(backfill_id)
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        assert backfill.tags.get("dagster/from_ui") == "true"
        runs = {r.run_id for r in instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))}
        for key in RAW_KEYS:
            for day in days:
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=10).records
                assert len(records) == 1, f"{key.to_user_string()} {day} materialized {len(records)} times"
                assert records[0].run_id in runs, f"{key.to_user_string()} {day} was not materialized by the backfill"


def test_sensors_are_running(ui_site, daemon, page, shot):
    page.goto(f"{ui_site.url}/automation")
    for sensor in SENSORS:
        row = page.locator("[data-index]").filter(has=page.locator(f'a[href$="/sensors/{sensor}"]'))
        expect(row.get_by_role("checkbox").last).to_be_checked(timeout=UI_TIMEOUT_MS)  # its on/off switch
    shot(page, "06-automation")

    for sensor in SENSORS:
        page.goto(f"{ui_site.url}/locations/ml_assets/sensors/{sensor}")
        running = page.get_by_role("row").filter(has=page.get_by_role("cell", name="Running", exact=True))
        expect(running.get_by_role("checkbox")).to_be_checked(timeout=UI_TIMEOUT_MS)
        # The page refreshes itself; the daemon's first evaluation may take a while on a busy machine.
        latest = page.get_by_role("row").filter(has=page.get_by_role("cell", name="Latest tick", exact=True))
        expect(latest).to_contain_text(TICK_TIME, timeout=600_000)
        shot(page, f"07-sensor-{sensor}")


def test_features_freshness_passes(ui_site, daemon, page, shot):
    page.goto(f"{ui_site.url}/assets/features")

    def passing():
        page.get_by_text("Freshness policy", exact=True).first.wait_for()
        if re.search(r"Freshness policy\s+Passing", page.locator("body").inner_text()):
            return True
        page.reload()
        return False

    wait_until(passing, "the freshness of features to show as passing", timeout=600, interval=10)
    page.get_by_text("Fails if more than 2 days since last materialization").wait_for(timeout=UI_TIMEOUT_MS)
    shot(page, "08-features-freshness", full_page=True)
    with ui_site.instance() as instance:
        state = instance.get_freshness_state_records([dg.AssetKey("features")])[dg.AssetKey("features")]
    assert state.freshness_state.value == "PASS"
