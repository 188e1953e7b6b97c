"""The main job's timeline shortens sensor skip reasons to what the platform is waiting for."""

from ml_assets.demo import _waiting_for


def test_streak_under_way():
    message = "no new report; feature drift: 2 of 3 consecutive flagged day(s) needed; latest 2013-03-01: 6/14"
    assert _waiting_for(message) == "drift streak 2/3"


def test_no_streak_is_blank():
    assert _waiting_for("1 new report(s); live performance: 0 of 3 consecutive flagged day(s) needed") == ""


def test_cooldown():
    message = ("1 new report(s) (0 re-judged day(s)); live performance: flagged 4 day(s) in a row up to "
               "2013-03-03, but the previous retrain's cooldown lasts until 2013-03-05; latest 2013-03-03: x")
    assert _waiting_for(message) == "performance flagged, cooldown to 03-05"
