"""Freshness alert emails: what is worth an alert, how it reads, and its delivery over real SMTP."""

import datetime as dt
import subprocess
import sys

import dagster as dg
import pytest

from ml_assets.reporting.alerts import (
    AssetFreshness,
    alert_subject,
    build_alert_message,
    describe_cron,
    describe_time_window,
    format_duration,
    state_counts,
    transitions,
)
from ml_assets_tests.fixtures import freshness_location as location
from ml_assets_tests.fixtures.freshness import freshness_daemon, materialize_at
from ml_assets_tests.fixtures.smtp import RECIPIENTS, SENDER

T0 = dt.datetime(2025, 3, 3, 6, 0, tzinfo=dt.UTC)
DATA_POLICY = describe_time_window(dt.timedelta(hours=48), dt.timedelta(hours=30))


def _row(asset, state, before=None, age_hours=49.0, policy=DATA_POLICY) -> AssetFreshness:
    return AssetFreshness(asset=asset, state=state, before=before, policy=policy,
                          last_materialization=T0, age=dt.timedelta(hours=age_hours))


def _text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_module_does_not_import_dagster():
    code = (
        "import sys, ml_assets.reporting.alerts; "
        "sys.exit(any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- what is worth an email ------------------------------------------------------------------


def test_first_tick_reports_every_stale_asset_once():
    current = {"a": "PASS", "b": "WARN", "c": "FAIL", "d": "UNKNOWN"}
    change = transitions(None, current)
    assert change.stale == ["c", "b"]  # FAIL before WARN
    assert (change.recovered, change.quiet, change.still_stale) == ([], [], [])
    assert bool(change)
    assert not transitions(current, current)
    assert transitions(current, current).still_stale == ["c", "b"]


def test_turning_stale_escalating_and_recovering():
    assert transitions({"a": "PASS"}, {"a": "WARN"}).stale == ["a"]
    assert transitions({"a": "WARN"}, {"a": "FAIL"}).stale == ["a"]
    assert transitions({"a": "FAIL"}, {"a": "WARN"}).stale == ["a"]  # still stale, and changed
    back = transitions({"a": "FAIL", "b": "WARN", "c": "UNKNOWN"}, {"a": "PASS", "b": "PASS", "c": "PASS"})
    assert (back.stale, back.recovered, back.quiet) == ([], ["a", "b"], ["c"])
    assert not transitions({"a": "UNKNOWN"}, {"a": "PASS"})  # a first materialization is no news
    assert not transitions({}, {"a": "PASS"})  # a newly watched asset neither


def test_state_counts():
    assert state_counts({"a": "PASS", "b": "UNKNOWN", **{f"p{i}": "PASS" for i in range(5)}}) == (
        "7 assets watched: 6 PASS, 1 UNKNOWN"
    )
    assert state_counts({"a": "FAIL"}) == "1 asset watched: 1 FAIL"
    assert state_counts({}) == "0 assets watched"


def test_durations_and_policies():
    assert format_duration(dt.timedelta(hours=49)) == "2d 1h"
    assert format_duration(dt.timedelta(days=14)) == "14d"
    assert format_duration(dt.timedelta(hours=5, minutes=3, seconds=9)) == "5h 3m"
    assert format_duration(dt.timedelta(minutes=42)) == "42m"
    assert format_duration(dt.timedelta(seconds=12)) == "12s"
    assert format_duration(None) == "n/a"
    assert DATA_POLICY == "fail 2d / warn 1d 6h"
    assert describe_time_window(dt.timedelta(days=30)) == "fail 30d"
    assert describe_cron("0 10 * * *", dt.timedelta(hours=1), "Europe/Berlin") == "by 0 10 * * * (Europe/Berlin), within 1h"


# --- the message -----------------------------------------------------------------------------


def test_subjects():
    stale = [_row("features", "FAIL"), _row("deployed_model", "WARN")]
    assert alert_subject("flights", stale, []) == "[ml_assets] flights: 2 assets stale (features FAIL, deployed_model WARN)"
    assert alert_subject("flights", [], [_row("labels", "PASS", "FAIL")]) == (
        "[ml_assets] flights: 1 asset back to PASS (labels)"
    )
    assert alert_subject("flights", stale[:1], [_row("labels", "PASS", "FAIL")]) == (
        "[ml_assets] flights: 1 asset stale (features FAIL); 1 back to PASS (labels)"
    )
    many = [_row(f"raw_{i}", "WARN") for i in range(6)]
    assert alert_subject("flights", many, []).endswith("(raw_0 WARN, raw_1 WARN, raw_2 WARN, raw_3 WARN, +2 more)")
    with pytest.raises(ValueError, match="at least one"):
        alert_subject("flights", [], [])


def test_message_body():
    message = build_alert_message(
        "flights",
        stale=[_row("features", "FAIL", "PASS"), _row("deployed_model", "WARN", None, 24 * 31, "fail 30d")],
        recovered=[_row("labels", "PASS", "WARN", 0.5)],
        still_stale=[_row("raw_weather", "FAIL", "FAIL", 72)],
        sender=SENDER, recipients=RECIPIENTS, checked_at=T0 + dt.timedelta(hours=49),
        counts="7 assets watched: 4 PASS, 1 WARN, 2 FAIL",
    )
    assert message["Subject"] == "[ml_assets] flights: 2 assets stale (features FAIL, deployed_model WARN); 1 back to PASS (labels)"
    assert message["From"] == SENDER and message["To"] == ", ".join(RECIPIENTS)
    assert message["X-ML-Assets-Dataset"] == "flights"
    text = _text(message)
    assert "| asset | state | policy | last materialization (UTC) | age |" in text
    assert "| features | PASS -> FAIL | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 2d 1h |" in text
    assert "| deployed_model | new -> WARN | fail 30d | 2025-03-03 06:00:00 | 31d |" in text
    rest = text.split("## Back to PASS")[1]
    assert "| labels | WARN -> PASS | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 30m |" in rest
    assert "| raw_weather | FAIL | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 3d |" in rest.split("## Still stale")[1]
    assert "Checked at: 2025-03-05 07:00:00 UTC" in text
    assert "7 assets watched: 4 PASS, 1 WARN, 2 FAIL" in text
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "<table" in html and "PASS -&gt; FAIL" in html and "<h2" in html


def test_never_materialized_reads_never():
    row = AssetFreshness(asset="x", state="FAIL", before="PASS", policy="fail 2d")
    message = build_alert_message("flights", [row], [], SENDER, RECIPIENTS)
    assert "| x | PASS -> FAIL | fail 2d | never | n/a |" in _text(message)


def test_needs_recipients():
    with pytest.raises(ValueError, match="recipient"):
        build_alert_message("flights", [_row("a", "FAIL")], [], SENDER, [])


# --- states from the real FreshnessDaemon, delivered over SMTP -----------------------------


def test_real_daemon_states_alert_over_smtp(instance, smtp_sink, tmp_path):
    materialize_at(location.ASSETS, instance, T0)
    watched = ["tiny_day", "tiny_model"]
    with freshness_daemon(instance) as evaluate:
        before = {k: v for k, v in evaluate(T0 + dt.timedelta(hours=1)).items() if k in watched}
        now = {k: v for k, v in evaluate(T0 + dt.timedelta(hours=31)).items() if k in watched}
    assert before == {"tiny_day": "PASS", "tiny_model": "PASS"}
    assert now == {"tiny_day": "WARN", "tiny_model": "PASS"}
    last = instance.get_latest_materialization_event(dg.AssetKey("tiny_day"))
    assert last.timestamp == T0.timestamp()

    change = transitions(before, now)
    assert change.stale == ["tiny_day"]
    row = AssetFreshness("tiny_day", now["tiny_day"], before["tiny_day"], DATA_POLICY, T0, dt.timedelta(hours=31))
    where = smtp_sink.mailer(tmp_path / "outbox").send(build_alert_message("flights", [row], [], SENDER, RECIPIENTS))
    assert where == f"smtp://127.0.0.1:{smtp_sink.port}"
    [received] = smtp_sink.messages
    assert received["Subject"] == "[ml_assets] flights: 1 asset stale (tiny_day WARN)"
    assert "| tiny_day | PASS -> WARN | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 1d 7h |" in _text(received)
    assert smtp_sink.envelopes == [RECIPIENTS]
