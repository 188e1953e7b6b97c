"""The orders example's generator: its documented shift and its optional label-noise drop, on the rows it writes."""

import datetime as dt

import pandas as pd
import pytest

from ml_assets.examples import orders as example

NOISE_FROM = dt.date(2024, 2, 1)


def _by_day(orders: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(orders["ordered_at"]).dt.date


def test_the_marketplace_shift_moves_electronics_and_leaves_earlier_days_alone():
    shifted, shifted_outcomes = example.generate(days=150)
    stable, _ = example.generate(days=150, shift_day=None)
    before = _by_day(shifted) < example.SHIFT_DAY
    assert shifted[before].equals(stable[_by_day(stable) < example.SHIFT_DAY])
    electronics = shifted["category"] == "electronics"
    assert abs(electronics[before].mean() - 0.18) < 0.02
    assert abs(electronics[~before].mean() - example.MARKETPLACE_ELECTRONICS_SHARE) < 0.03
    assert shifted["price"][electronics & ~before].median() < 0.6 * shifted["price"][electronics & before].median()
    returned = shifted.merge(shifted_outcomes, on="order_id").set_index("order_id")["returned"]
    rate = returned.groupby(shifted.set_index("order_id")["category"].where(~before.to_numpy())).mean()
    assert rate["electronics"] > rate["fashion"]  # the marketplace's electronics are now the likeliest returns


def test_label_noise_flips_the_given_share_of_outcomes_from_its_day_only():
    orders, clean = example.generate(days=60, shift_day=None)
    same, noisy = example.generate(days=60, shift_day=None, label_noise_from=NOISE_FROM, label_noise_share=0.3)
    assert same.equals(orders)
    joined = clean.merge(noisy, on=["order_id", "resolved_at"], suffixes=("_clean", "_noisy"))
    assert len(joined) == len(clean) == len(noisy)
    day = joined["order_id"].map(orders.set_index("order_id")["ordered_at"].pipe(pd.to_datetime).dt.date)
    flipped = joined["returned_clean"] != joined["returned_noisy"]
    assert not flipped[day < NOISE_FROM].any()
    assert abs(flipped[day >= NOISE_FROM].mean() - 0.3) < 0.02


def test_bad_noise_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="label_noise_share must be within"):
        example.generate(days=5, label_noise_from=NOISE_FROM, label_noise_share=1.5)
    with pytest.raises(ValueError, match="needs label_noise_from"):
        example.generate(days=5, label_noise_share=0.2)
    with pytest.raises(SystemExit):
        example.main([str(tmp_path), "--days", "5", "--label-noise-from", "2024-13-01"])
