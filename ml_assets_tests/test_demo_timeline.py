"""The replay's timeline: sensor skip reasons shortened, and the summary of passed / held-back days."""

from ml_assets.replay.timeline import ReplayReport, TimelineRow, summary_line, waiting_for


def test_streak_under_way():
    message = "no new report; feature drift: 2 of 3 consecutive flagged day(s) needed; latest 2013-03-01: 6/14"
    assert waiting_for(message) == "drift streak 2/3"


def test_no_streak_is_blank():
    assert waiting_for("1 new report(s); live performance: 0 of 3 consecutive flagged day(s) needed") == ""


def test_cooldown():
    message = ("1 new report(s) (0 re-judged day(s)); live performance: flagged 4 day(s) in a row up to "
               "2013-03-03, but the previous retrain's cooldown lasts until 2013-03-05; latest 2013-03-03: x")
    assert waiting_for(message) == "performance flagged, cooldown to 03-05"


def test_first_model_waits_for_labelled_days():
    message = "no new report; no champion yet; 12 of 35 labelled days needed for the first model"
    assert waiting_for(message) == "first model: 12/35 labelled days"


def test_first_model_waits_for_clusters():
    message = "no new report; no champion yet; waiting for the clusters of 3 of the 35 days to train on (a..b)"
    assert waiting_for(message) == "first model: waiting for clusters"


def test_first_model_after_a_rejected_attempt_waits_for_its_cooldown():
    message = "no new report; no champion yet; the previous attempt's cooldown lasts until 2013-02-18"
    assert waiting_for(message) == "first model: cooldown to 02-18"


def test_summary_names_only_held_back_days():
    rows = [TimelineRow("2013-02-07"), TimelineRow("2013-02-08", status="held back"),
            TimelineRow("2013-02-09", status="held back"), TimelineRow("2013-02-10"),
            TimelineRow("2013-02-11", status="no data")]
    line = summary_line(rows, ReplayReport())
    assert line == ("5 days: 2 passed their checks; 2 held back by their checks (2013-02-08, 2013-02-09); "
                    "1 with no data landed")
    assert "2013-02-07" not in line and "2013-02-10" not in line


def test_summary_with_every_day_passing_says_zero_held_back():
    line = summary_line([TimelineRow("2013-01-01"), TimelineRow("2013-01-02")], ReplayReport())
    assert line == "2 days: 2 passed their checks; 0 held back by their checks"


def test_from_items_group_by_source():
    from ml_assets.replay.command import group_from_items

    grouped = group_from_items(["flights=data/f1.csv", "weather=data/w/", "data/f2.csv", "odd=name.csv"],
                               {"flights", "weather"}, None)
    assert grouped == {"flights": ["data/f1.csv"], "weather": ["data/w"], None: ["data/f2.csv", "odd=name.csv"]}
