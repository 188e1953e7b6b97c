"""Labels from a label feed, end to end: land -> raw -> features -> labels with outcomes landing late.

The code location reads its spec at import, so the cases (feed_cases.py) run in a child pytest with
ML_ASSETS_SPEC=flights_label_feed; this process keeps the flights spec for the rest of the suite.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark

CASES = Path(__file__).with_name("feed_cases.py")


def test_label_feed_cases_pass_under_the_feed_spec(tmp_path):
    env = {**os.environ, "ML_ASSETS_SPEC": "flights_label_feed", "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")],
        env=env, capture_output=True, text=True, timeout=900, cwd=Path(__file__).parents[2],
    )
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
    assert done.returncode == 0, tail
    assert "1 passed" in done.stdout, tail
