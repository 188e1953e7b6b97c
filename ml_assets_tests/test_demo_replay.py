"""`ml-assets replay` from an empty store, and how it selects the active spec.

The replay runs as a real `ml-assets` process on a throw-away store and Dagster instance (the code
location reads its spec and store at import). Five February days include the two blizzard days
whose raw data fails the null_rates check: the first model cannot train yet (35 labelled days are
needed), the passing days say what they wait for, only the failing days are held back, exit 0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ml_assets.defs.settings import EnvConfigError, select_spec
from ml_assets.spec import SpecError
from ml_assets_tests.fixtures.environment import clean_environ, ml_env_fixture  # noqa: F401

CLI = str(Path(sys.executable).parent / "ml-assets")
DAYS = ["2013-02-06", "2013-02-07", "2013-02-08", "2013-02-09", "2013-02-10"]
BLIZZARD = ["2013-02-08", "2013-02-09"]
DAY_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2})  ")


@pytest.mark.spark
@pytest.mark.integration
def test_replay_from_an_empty_store_waits_for_days_and_holds_back_only_failing_days(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = clean_environ(DAGSTER_HOME=str(home), ML_ASSETS_STORE_ROOT=str(tmp_path / "store"),
                        ML_ASSETS_CACHE_DIR=str(tmp_path / "cache"), ML_ASSETS_OUTBOX_DIR=str(tmp_path / "outbox"))
    done = subprocess.run([CLI, "replay", "--spec", "flights", "--start", DAYS[0], "--end", DAYS[-1],
                           "--step-days", "5"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    rows = {m[1]: i for i, line in enumerate(lines) if (m := DAY_LINE.match(line))}
    assert list(rows) == DAYS
    for day, i in rows.items():
        note = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith(" " * 12) else ""
        if day in BLIZZARD:
            assert note.startswith("held back by its checks: check raw_flights.null_rates failed"), note
        else:
            # A passing day is never labelled held back; before a champion it says what the first model needs.
            assert note == "", note
            assert "first model: 3/35 labelled days" in lines[i], lines[i]
    assert "5 days: 3 passed their checks; 2 held back by their checks (2013-02-08, 2013-02-09)" in lines
    assert any(line.startswith("no training cycle ran in this range") for line in lines)
    assert "?" not in "\n".join(lines[i] for i in rows.values())


def test_select_spec_names_a_bad_spec(ml_env):
    with pytest.raises(SpecError, match="no-such-spec"):
        select_spec("no-such-spec")


def test_select_spec_refuses_another_spec_once_the_definitions_are_loaded(ml_env):
    import ml_assets.defs.dataset as dataset

    other = "flights_label_feed" if dataset.SPEC.name != "flights_label_feed" else "flights"
    with pytest.raises(EnvConfigError, match=f"cannot be selected: this process already loaded the definitions "
                                             f"of spec '{dataset.SPEC.name}'"):
        select_spec(other)
