"""freshness_alerts sensor: states from Dagster's real FreshnessDaemon, emails to a real SMTP server.

Each test materializes assets at a frozen time, runs one FreshnessDaemon iteration later on
(see ml_assets_tests.fixtures.freshness) and ticks the sensor at that time, so the ages in the
emails are exact.
"""

import datetime as dt
import json

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from ml_assets.defs.sensors.freshness import (
    FRESHNESS_SENSOR,
    freshness_alerts_sensor,
    watched_policies,
)
from ml_assets.reporting.mailer import MailDeliveryError
from ml_assets.resources.email import EmailResource
from ml_assets_tests.fixtures import freshness_location as location
from ml_assets_tests.fixtures.freshness import (
    freshness_daemon,
    materialize_at,
    report_materializations_at,
)
from ml_assets_tests.fixtures.smtp import RECIPIENTS

T0 = dt.datetime(2025, 3, 3, 6, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
WATCHED_REAL = {"raw_flights", "raw_weather", "features", "labels", "clusters", "candidate_model", "deployed_model"}


def _tick(instance, at, email: EmailResource, cursor=None, definitions=location.defs):
    with freeze_time(at), dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"email": email}, definitions=definitions,
        sensor_name=FRESHNESS_SENSOR,
    ) as context:
        return freshness_alerts_sensor(context)


def _text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def _html(message) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


@pytest.fixture
def daemon(instance):
    with freshness_daemon(instance) as evaluate:
        yield evaluate


def test_first_tick_reports_assets_already_stale(instance, daemon, smtp_sink):
    materialize_at(location.ASSETS, instance, T0)
    assert daemon(T0 + 49 * H) == {"tiny_day": "FAIL", "tiny_model": "PASS", "tiny_unwatched": "NOT_APPLICABLE"}

    first = _tick(instance, T0 + 49 * H, smtp_sink.resource())
    assert first.skip_reason.skip_message == (
        "2 assets watched: 1 PASS, 1 FAIL; emailed '[ml_assets] flights: 1 asset stale (tiny_day FAIL)' "
        f"to smtp://127.0.0.1:{smtp_sink.port}"
    )
    assert json.loads(first.cursor) == {"tiny_day": "FAIL", "tiny_model": "PASS"}  # only assets with a policy
    [message] = smtp_sink.messages
    assert message["Subject"] == "[ml_assets] flights: 1 asset stale (tiny_day FAIL)"
    assert smtp_sink.envelopes == [RECIPIENTS]
    assert message["X-ML-Assets-Alert"] == "freshness"
    text = _text(message)
    assert "| tiny_day | new -> FAIL | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 2d 1h |" in text
    assert "2 assets watched: 1 PASS, 1 FAIL" in text
    assert "tiny_model" not in text.split("## Summary")[0]  # passing, unchanged: not listed
    assert "<td" in _html(message) and "new -&gt; FAIL" in _html(message)

    # Nothing changed: no email, a skip reason with the counts, the same cursor.
    second = _tick(instance, T0 + 50 * H, smtp_sink.resource(), cursor=first.cursor)
    assert second.skip_reason.skip_message == "2 assets watched: 1 PASS, 1 FAIL; no change"
    assert json.loads(second.cursor) == json.loads(first.cursor)
    assert len(smtp_sink.messages) == 1

    # The same through the full tick (what the sensor daemon runs): cursor kept, a skip message.
    with freeze_time(T0 + 50 * H), dg.build_sensor_context(
        instance=instance, cursor=second.cursor, resources={"email": smtp_sink.resource()},
        definitions=location.defs,
    ) as context:
        tick = freshness_alerts_sensor.evaluate_tick(context)
    assert (tick.cursor, tick.skip_message, tick.run_requests) == (
        second.cursor, "2 assets watched: 1 PASS, 1 FAIL; no change", [],
    )
    assert len(smtp_sink.messages) == 1


def test_sensor_definition():
    assert freshness_alerts_sensor.name == FRESHNESS_SENSOR == "freshness_alerts"
    assert freshness_alerts_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert freshness_alerts_sensor.minimum_interval_seconds == 60
    assert freshness_alerts_sensor.required_resource_keys == {"email"}


def test_first_tick_with_nothing_stale_sends_nothing(instance, daemon, smtp_sink):
    materialize_at(location.ASSETS, instance, T0)
    daemon(T0 + H)
    result = _tick(instance, T0 + H, smtp_sink.resource())
    assert result.skip_reason.skip_message == "2 assets watched: 2 PASS; first check, none WARN or FAIL"
    assert json.loads(result.cursor) == {"tiny_day": "PASS", "tiny_model": "PASS"}
    assert smtp_sink.messages == []


def test_turning_stale_escalating_and_recovering(instance, daemon, smtp_sink):
    email = smtp_sink.resource()
    materialize_at([location.tiny_day], instance, T0)
    daemon(T0 + H)
    cursor = _tick(instance, T0 + H, email).cursor  # tiny_day PASS, tiny_model UNKNOWN (never materialized)
    assert json.loads(cursor) == {"tiny_day": "PASS", "tiny_model": "UNKNOWN"}

    # Past the warning window.
    assert daemon(T0 + 31 * H)["tiny_day"] == "WARN"
    result = _tick(instance, T0 + 31 * H, email, cursor)
    cursor = result.cursor
    [warned] = smtp_sink.messages
    assert warned["Subject"] == "[ml_assets] flights: 1 asset stale (tiny_day WARN)"
    assert "| tiny_day | PASS -> WARN | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 1d 7h |" in _text(warned)

    result = _tick(instance, T0 + 32 * H, email, cursor)
    assert result.skip_reason.skip_message == "2 assets watched: 1 WARN, 1 UNKNOWN; no change"

    # Past the failure window: WARN -> FAIL is a new alert.
    assert daemon(T0 + 48 * H)["tiny_day"] == "FAIL"
    cursor = _tick(instance, T0 + 48 * H, email, cursor).cursor
    failed = smtp_sink.messages[-1]
    assert failed["Subject"] == "[ml_assets] flights: 1 asset stale (tiny_day FAIL)"
    assert "| tiny_day | WARN -> FAIL | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 2d |" in _text(failed)

    # A new materialization: back to PASS, once.
    materialize_at([location.tiny_day], instance, T0 + 50 * H)
    assert daemon(T0 + 50 * H + dt.timedelta(minutes=5))["tiny_day"] == "PASS"
    result = _tick(instance, T0 + 50 * H + dt.timedelta(minutes=5), email, cursor)
    assert " emailed " in result.skip_reason.skip_message
    recovered = smtp_sink.messages[-1]
    assert recovered["Subject"] == "[ml_assets] flights: 1 asset back to PASS (tiny_day)"
    text = _text(recovered)
    assert "## Back to PASS" in text and "## Stale" not in text
    assert "| tiny_day | FAIL -> PASS | fail 2d / warn 1d 6h | 2025-03-05 08:00:00 | 5m |" in text
    assert len(smtp_sink.messages) == 3

    last = _tick(instance, T0 + 51 * H, email, result.cursor)
    assert last.skip_reason.skip_message == "2 assets watched: 1 PASS, 1 UNKNOWN; no change"
    assert len(smtp_sink.messages) == 3


def test_one_email_per_tick_for_stale_and_recovered_assets(instance, daemon, smtp_sink):
    email = smtp_sink.resource()
    materialize_at(location.ASSETS, instance, T0)
    daemon(T0 + 49 * H)
    cursor = _tick(instance, T0 + 49 * H, email).cursor  # tiny_day FAIL reported
    assert len(smtp_sink.messages) == 1

    # Thirty days on: tiny_day was rebuilt, tiny_model never was.
    later = T0 + dt.timedelta(days=31)
    materialize_at([location.tiny_day], instance, later - H)
    assert daemon(later) == {"tiny_day": "PASS", "tiny_model": "FAIL", "tiny_unwatched": "NOT_APPLICABLE"}
    _tick(instance, later, email, cursor)
    assert len(smtp_sink.messages) == 2
    message = smtp_sink.messages[-1]
    assert message["Subject"] == "[ml_assets] flights: 1 asset stale (tiny_model FAIL); 1 back to PASS (tiny_day)"
    text = _text(message)
    assert "| tiny_model | PASS -> FAIL | fail 30d | 2025-03-03 06:00:00 | 31d |" in text
    assert "| tiny_day | FAIL -> PASS | fail 2d / warn 1d 6h | 2025-04-03 05:00:00 | 1h |" in text


def test_still_stale_assets_are_listed_beside_a_new_alert(instance, daemon, smtp_sink):
    email = smtp_sink.resource()
    materialize_at(location.ASSETS, instance, T0)
    daemon(T0 + 49 * H)
    cursor = _tick(instance, T0 + 49 * H, email).cursor
    daemon(T0 + dt.timedelta(days=30))  # now tiny_model fails too
    _tick(instance, T0 + dt.timedelta(days=30), email, cursor)
    text = _text(smtp_sink.messages[-1])
    assert smtp_sink.messages[-1]["Subject"] == "[ml_assets] flights: 1 asset stale (tiny_model FAIL)"
    still = text.split("## Still stale (reported before)")[1]
    assert "| tiny_day | FAIL | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 30d |" in still


def test_first_materialization_is_quiet(instance, daemon, smtp_sink):
    email = smtp_sink.resource()
    daemon(T0)
    cursor = _tick(instance, T0, email).cursor
    assert json.loads(cursor) == {"tiny_day": "UNKNOWN", "tiny_model": "UNKNOWN"}
    materialize_at([location.tiny_day], instance, T0 + H)
    daemon(T0 + 2 * H)
    result = _tick(instance, T0 + 2 * H, email, cursor)
    assert result.skip_reason.skip_message == (
        "2 assets watched: 1 PASS, 1 UNKNOWN; no alert for tiny_day UNKNOWN -> PASS"
    )
    assert smtp_sink.messages == []


def test_failed_delivery_fails_the_tick(instance, daemon, tmp_path):
    materialize_at([location.tiny_day], instance, T0)
    daemon(T0 + 49 * H)
    unreachable = EmailResource(smtp_host="127.0.0.1", smtp_port=1, smtp_starttls=False)
    with pytest.raises(MailDeliveryError, match=r"127\.0\.0\.1:1 failed at connect"):
        _tick(instance, T0 + 49 * H, unreachable)


def test_without_smtp_the_alert_lands_in_the_outbox(instance, daemon, tmp_path):
    materialize_at([location.tiny_day], instance, T0)
    daemon(T0 + 49 * H)
    result = _tick(instance, T0 + 49 * H, EmailResource(outbox_dir=str(tmp_path / "outbox")))
    [written] = (tmp_path / "outbox").glob("*.eml")
    assert result.skip_reason.skip_message.endswith(f"to {written}")
    assert "tiny_day FAIL" in written.read_text()


def test_unreadable_cursor_counts_as_first_tick(instance, daemon, smtp_sink):
    materialize_at([location.tiny_day], instance, T0)
    daemon(T0 + 49 * H)
    result = _tick(instance, T0 + 49 * H, smtp_sink.resource(), cursor="not json")
    assert json.loads(result.cursor)["tiny_day"] == "FAIL"
    assert len(smtp_sink.messages) == 1


# --- the project's own code location ----------------------------------------------------------


def test_watches_every_asset_with_a_policy_of_the_real_code_location():
    from ml_assets.definitions import defs

    watched = watched_policies(defs.get_repository_def())
    assert {key.to_user_string() for key in watched} == WATCHED_REAL
    # Without a code location in the context it falls back to this package's assets.
    assert watched_policies(None) == watched


def test_real_code_location_with_the_real_daemon(instance, smtp_sink):
    """The FreshnessDaemon over ml_assets.definitions: data assets warn after 30 h."""
    from ml_assets.definitions import defs

    email = smtp_sink.resource()
    data = ["raw_flights", "raw_weather", "features", "labels", "clusters"]
    report_materializations_at(instance, data, T0, partition="2013-01-01")
    report_materializations_at(instance, ["candidate_model"], T0)
    with freshness_daemon(instance, "ml_assets.definitions") as evaluate:
        first_states = evaluate(T0 + H)
        assert {k: v for k, v in first_states.items() if k in WATCHED_REAL} == {
            **dict.fromkeys(data, "PASS"), "candidate_model": "PASS", "deployed_model": "UNKNOWN",
        }
        first = _tick(instance, T0 + H, email, definitions=defs)
        assert first.skip_reason.skip_message == (
            "7 assets watched: 6 PASS, 1 UNKNOWN; first check, none WARN or FAIL"
        )
        evaluate(T0 + 31 * H)
        second = _tick(instance, T0 + 31 * H, email, first.cursor, definitions=defs)
    assert " emailed " in second.skip_reason.skip_message
    [message] = smtp_sink.messages
    assert message["Subject"] == (
        "[ml_assets] flights: 5 assets stale "
        "(clusters WARN, features WARN, labels WARN, raw_flights WARN, +1 more)"
    )
    text = _text(message)
    for asset in data:
        assert f"| {asset} | PASS -> WARN | fail 2d / warn 1d 6h | 2025-03-03 06:00:00 | 1d 7h |" in text
    assert "7 assets watched: 1 PASS, 5 WARN, 1 UNKNOWN" in text
