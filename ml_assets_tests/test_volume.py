"""The volume generator: each day's flights xN, keys unique, deterministic, landing and parsing as raw."""

import datetime as dt

import pandas as pd
import pytest

from ml_assets.cli import main as cli_main
from ml_assets.examples.volume import scale_example
from ml_assets.landing import land, local_days
from ml_assets.ml.raw import parse_blob
from ml_assets.storage import LocalBlobStore

DAY = dt.date(2013, 3, 5)
NEXT = dt.date(2013, 3, 6)


def _day_rows(spec, flights, day):
    return flights[local_days(flights, "time_hour", spec.zone) == day].reset_index(drop=True)


@pytest.mark.parametrize("factor", [1, 5, 20])
def test_each_day_grows_n_fold_with_unique_keys_and_same_schema(spec, example_frames, factor):
    original = example_frames["flights"]
    scaled = scale_example(spec, example_frames, factor, seed=7, days=[DAY, NEXT])

    flights = scaled["flights"]
    for day in (DAY, NEXT):
        assert len(_day_rows(spec, flights, day)) == factor * len(_day_rows(spec, original, day))
    assert not flights.duplicated(spec.key_columns).any()
    assert list(flights.columns) == list(original.columns)
    assert flights.dtypes.to_dict() == original.dtypes.to_dict()
    # The original rows are all there, untouched; weather is not scaled.
    kept = flights.merge(_day_rows(spec, original, DAY), how="inner")
    assert len(kept) == len(_day_rows(spec, original, DAY))
    assert scaled["weather"] is example_frames["weather"]
    # Resampled rows stay in their scheduled hour: the hour and the minute agree with sched_dep_time.
    assert (flights["sched_dep_time"] // 100 == flights["hour"]).all()
    assert (flights["sched_dep_time"] % 100 == flights["minute"]).all()
    if factor > 1:
        extra = flights[flights["flight"] >= 10_000]
        assert len(extra) == (factor - 1) * (len(flights) // factor)
        # Jitter: most resampled flights leave at a minute no original flight of the route had then.
        combo = ["carrier", "origin", "dest", "time_hour", "minute"]
        copies = extra[combo].merge(original[combo].drop_duplicates(), how="inner")
        assert len(copies) < len(extra) / 2


def test_same_seed_same_rows_other_seed_other_rows_whatever_days_are_generated(spec, example_frames):
    alone = scale_example(spec, example_frames, 5, seed=3, days=[DAY])["flights"]
    with_next = scale_example(spec, example_frames, 5, seed=3, days=[DAY, NEXT])["flights"]
    other = scale_example(spec, example_frames, 5, seed=4, days=[DAY])["flights"]

    pd.testing.assert_frame_equal(alone, _day_rows(spec, with_next, DAY))
    assert len(other) == len(alone)
    assert not other.equals(alone)


def test_bad_factor_is_a_clear_error(spec, example_frames):
    for factor in (0, -2, 1001, 2.5, True):
        with pytest.raises(ValueError, match=r"volume factor must be a whole number in 1\.\.1000"):
            scale_example(spec, example_frames, factor)


def test_scaled_day_lands_and_parses_through_raw(spec, example_frames, tmp_path):
    store = LocalBlobStore(tmp_path / "store")
    scaled = scale_example(spec, example_frames, 5, seed=1, days=[DAY])

    landed = {b.source: b for b in land(store, spec, scaled, [DAY])}

    assert landed["flights"].rows == 5 * len(_day_rows(spec, example_frames["flights"], DAY))
    for source in ("flights", "weather"):
        key = landed[source].blob.key
        table = parse_blob(store.get(key), spec.sources[source], key, DAY, spec.zone)
        assert table.num_rows == landed[source].rows
    flights = parse_blob(store.get(landed["flights"].blob.key), spec.sources["flights"], "f", DAY, spec.zone)
    keys = flights.select(spec.key_columns).to_pandas()
    assert not keys.duplicated().any()


def test_cli_land_scales_the_landed_days(tmp_path, monkeypatch, spec, example_frames, capsys):
    monkeypatch.setenv("ML_ASSETS_STORE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("ML_ASSETS_CACHE_DIR", str(tmp_path / "cache"))

    code = cli_main(["land", "--start", DAY.isoformat(), "--end", DAY.isoformat(), "--scale", "3", "--seed", "2"])

    assert code == 0
    store = LocalBlobStore(tmp_path / "store")
    [blob] = list(store.list("raw/flights/"))
    parsed = parse_blob(store.get(blob.key), spec.sources["flights"], blob.key, DAY, spec.zone)
    assert parsed.num_rows == 3 * len(_day_rows(spec, example_frames["flights"], DAY))
    assert f"({parsed.num_rows + len(_day_rows(spec, example_frames['weather'], DAY))} rows)" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["land", "--start", DAY.isoformat(), "--end", DAY.isoformat(), "--scale", "0"])
