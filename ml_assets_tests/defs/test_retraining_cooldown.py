"""Where a retrain's cooldown starts: the trigger day, not the (earlier) training as-of day of a label feed."""

import dagster as dg

from ml_assets.defs.sensors.retraining import (
    AS_OF_TAG,
    RETRAIN_TAG,
    TRIGGER_DAYS_TAG,
    TRIGGER_TAG,
    cooldown_start,
)
from ml_assets.ml.triggers import cooldown_end


def _run(**tags) -> dg.DagsterRun:
    return dg.DagsterRun(job_name="training_job", tags={RETRAIN_TAG: "true", **tags})


def test_a_feed_retrain_trained_weeks_back_cools_down_from_its_trigger_day():
    # Flagged 2024-05-16..18, trained as of the last settled day 2024-04-27: 14 days from the trigger.
    run = _run(**{TRIGGER_TAG: "drift", AS_OF_TAG: "2024-04-27", TRIGGER_DAYS_TAG: "2024-05-16,2024-05-17,2024-05-18"})
    assert cooldown_start(run) == "2024-05-18"
    assert cooldown_end(cooldown_start(run), 14) == "2024-06-01"


def test_without_trigger_days_or_run_the_as_of_day_or_nothing():
    assert cooldown_start(_run(**{TRIGGER_TAG: "bootstrap", AS_OF_TAG: "2024-02-10", TRIGGER_DAYS_TAG: ""})) == "2024-02-10"
    assert cooldown_start(_run(**{TRIGGER_TAG: "schedule", AS_OF_TAG: "2024-03-01"})) == "2024-03-01"
    # Without a feed the as-of day is the trigger day: the same cooldown as before.
    same = _run(**{TRIGGER_TAG: "drift", AS_OF_TAG: "2013-03-04", TRIGGER_DAYS_TAG: "2013-03-02,2013-03-03,2013-03-04"})
    assert cooldown_start(same) == "2013-03-04"
    assert cooldown_start(None) is None
