"""A second example from another domain: online-shop orders and whether each one is returned.

Generated, not downloaded, so the project can be tried on data it was never tuned on:

- `orders.csv`: one row per order (about 165 a day, fewer on Sundays), with *naive* local timestamps
  (`2024-03-05 14:02:11.250`, Europe/Berlin wall-clock time, as a shop database exports them), a
  boolean `is_gift` written the way pandas writes booleans (`True`/`False`) and some missing discounts.
- `outcomes.jsonl`: the label feed. One line per order once its outcome is known: `returned` true when
  the customer sent it back, false once the 14-day return window closed without a return. `resolved_at`
  is epoch milliseconds; outcomes arrive 3 to about 25 days after the order.
- An injected shift on `SHIFT_DAY` (2024-05-15): the shop opens a marketplace for third-party
  electronics sellers. Electronics grow from 18% to 36% of orders (covariate shift in `category`, the
  feature a model of this data leans on most), the marketplace items are cheaper (`price` of
  electronics halves) and they are returned far more often (items not as described: +1.8 on the
  return logit of every electronics order from the day, a concept shift). A model trained before it
  ranks the cheap, rarely-returned-before electronics low while they are now the likeliest returns:
  its ROC AUC falls from about 0.70 to 0.63 and its accuracy from 0.76 to 0.63 while the return rate rises
  from 23% to 37% (a gradient-boosted model trained on 2024-01-10..02-13, judged on the weeks before and
  after; bench/bench_orders.py runs the project's own champion through it).
  `--shift-day none` generates the same shop without it.
- An optional injected label-noise drop (`--label-noise-from DAY --label-noise-share X`): from DAY on,
  a share X of the outcomes are booked wrong (a returns-scanner fault: a kept order recorded as
  returned and a returned one as kept, each with probability X). Features do not move, so only the
  live performance can see it.

`python -m ml_assets.examples.orders OUT_DIR [--days N] [--shift-day D|none] [--label-noise-from D
--label-noise-share X]` writes both files.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

START = dt.date(2024, 1, 1)
DAYS = 240
SHIFT_DAY = dt.date(2024, 5, 15)
RETURN_WINDOW_DAYS = 14
CATEGORIES = ["fashion", "electronics", "home", "books", "toys"]
CATEGORY_SHARE = [0.34, 0.18, 0.2, 0.16, 0.12]
CATEGORY_EFFECT = {"fashion": 0.9, "electronics": 0.1, "home": -0.3, "books": -1.2, "toys": -0.5}
CATEGORY_PRICE = {"fashion": 45.0, "electronics": 180.0, "home": 60.0, "books": 18.0, "toys": 30.0}
COUNTRIES = ["DE", "AT", "CH", "NL", "FR"]
COUNTRY_SHARE = [0.55, 0.15, 0.1, 0.1, 0.1]
PAYMENTS = ["card", "paypal", "invoice"]
PAYMENT_SHARE = [0.4, 0.35, 0.25]


#: After the shift: the marketplace's share of electronics orders and what changes for them.
MARKETPLACE_ELECTRONICS_SHARE = 0.36
MARKETPLACE_PRICE_FACTOR = 0.5
MARKETPLACE_RETURN_LOGIT = 1.8


def generate(start: dt.date = START, days: int = DAYS, seed: int = 7, shift_day: dt.date | None = SHIFT_DAY,
             label_noise_from: dt.date | None = None, label_noise_share: float = 0.0,
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(orders, outcomes) for `days` days from `start`; the same arguments give the same rows.

    ``shift_day`` None: no marketplace shift. ``label_noise_share`` of the outcomes of orders placed on
    or after ``label_noise_from`` are flipped (the noise draws come after every other draw, so the
    orders and the other outcomes are the same rows as without noise).
    """
    if not 0.0 <= label_noise_share <= 1.0:
        raise ValueError(f"label_noise_share must be within [0, 1], not {label_noise_share}")
    if label_noise_share > 0 and label_noise_from is None:
        raise ValueError("label_noise_share needs label_noise_from (the first day whose outcomes are noisy)")
    rng = np.random.default_rng(seed)
    frames = [_day_orders(rng, start + dt.timedelta(days=offset), shift_day) for offset in range(days)]
    orders = pd.concat(frames, ignore_index=True)
    orders.insert(0, "order_id", np.arange(100_000, 100_000 + len(orders)))
    returned = rng.random(len(orders)) < _return_probability(orders, shift_day)
    outcomes = _outcomes(rng, orders, returned)
    if label_noise_from is not None and label_noise_share > 0:
        noisy = (orders["ordered_at"].dt.date >= label_noise_from).to_numpy()
        flip = noisy & (np.random.default_rng([seed, 1]).random(len(orders)) < label_noise_share)
        flipped = dict(zip(orders["order_id"].to_numpy()[flip], ~returned[flip], strict=True))
        outcomes["returned"] = [flipped.get(key, value) for key, value in
                                zip(outcomes["order_id"], outcomes["returned"], strict=True)]
    orders["ordered_at"] = orders["ordered_at"].dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]
    return orders, outcomes


def _day_orders(rng: np.random.Generator, day: dt.date, shift_day: dt.date) -> pd.DataFrame:
    # Weekly rhythm: busiest on Monday evenings after the weekend's browsing, quietest on Sundays.
    expected = 165 * (0.7 if day.weekday() == 6 else 1.1 if day.weekday() == 0 else 1.0)
    count = int(rng.poisson(expected))
    # Local wall-clock times between 06:00 and 23:59, peaking in the evening.
    seconds = np.clip(rng.normal(19.5 * 3600, 3.5 * 3600, count), 6 * 3600, 24 * 3600 - 1)
    seconds = np.sort(seconds)
    stamps = pd.Timestamp(day) + pd.to_timedelta(seconds, unit="s").round("10ms")
    after_shift = shift_day is not None and day >= shift_day
    category = rng.choice(CATEGORIES, count, p=_category_share(after_shift))
    base_price = np.array([CATEGORY_PRICE[c] for c in category])
    if after_shift:
        base_price = np.where(category == "electronics", base_price * MARKETPLACE_PRICE_FACTOR, base_price)
    discount = np.round(rng.choice([0.0, 5.0, 10.0, 20.0, 30.0], count, p=[0.5, 0.15, 0.15, 0.12, 0.08]), 1)
    discount = np.where(rng.random(count) < 0.03, np.nan, discount)
    return pd.DataFrame({
        "ordered_at": stamps,
        "customer_tenure_days": rng.gamma(1.2, 300, count).astype(int),
        "channel": rng.choice(["web", "app", "phone"], count, p=[0.6, 0.25, 0.15]),
        "country": rng.choice(COUNTRIES, count, p=COUNTRY_SHARE),
        "category": category,
        "price": np.round(base_price * rng.lognormal(0, 0.5, count), 2),
        "quantity": 1 + rng.poisson(0.4, count),
        "discount_pct": discount,
        "payment": rng.choice(PAYMENTS, count, p=PAYMENT_SHARE),
        "is_gift": rng.random(count) < 0.12,
        "shipping_days": rng.integers(1, 6, count),
    })


def _category_share(after_shift: bool) -> list[float]:
    """Category shares of a day; after the shift electronics take MARKETPLACE_ELECTRONICS_SHARE and the
    other categories keep their proportions."""
    if not after_shift:
        return CATEGORY_SHARE
    rest = 1.0 - CATEGORY_SHARE[CATEGORIES.index("electronics")]
    scale = (1.0 - MARKETPLACE_ELECTRONICS_SHARE) / rest
    return [MARKETPLACE_ELECTRONICS_SHARE if c == "electronics" else share * scale
            for c, share in zip(CATEGORIES, CATEGORY_SHARE, strict=True)]


def _return_probability(orders: pd.DataFrame, shift_day: dt.date | None) -> np.ndarray:
    logit = (
        -1.9
        + orders["category"].map(CATEGORY_EFFECT).to_numpy()
        + 0.025 * orders["discount_pct"].fillna(0).to_numpy()
        + 0.35 * np.log1p(orders["price"].to_numpy() / 50)
        + 0.3 * (orders["quantity"].to_numpy() > 1)
        + 0.5 * (orders["payment"] == "invoice").to_numpy()
        - 0.8 * orders["is_gift"].to_numpy()
        - 0.4 * (orders["customer_tenure_days"].to_numpy() > 365)
        + 0.2 * (orders["channel"] == "phone").to_numpy()
    )
    if shift_day is not None:
        days = pd.to_datetime(orders["ordered_at"]).dt.date.to_numpy()
        marketplace = (days >= shift_day) & (orders["category"] == "electronics").to_numpy()
        logit = logit + MARKETPLACE_RETURN_LOGIT * marketplace
    return 1 / (1 + np.exp(-logit))


def _outcomes(rng: np.random.Generator, orders: pd.DataFrame, returned: np.ndarray) -> pd.DataFrame:
    delivered = orders["ordered_at"] + pd.to_timedelta(orders["shipping_days"], unit="D")
    return_after = pd.to_timedelta(rng.uniform(1, RETURN_WINDOW_DAYS, len(orders)), unit="D")
    window_closed = pd.Timedelta(days=RETURN_WINDOW_DAYS) + pd.to_timedelta(rng.uniform(0, 4, len(orders)), unit="D")
    resolved = delivered + np.where(returned, return_after, window_closed)
    # An ambiguous autumn hour is read as its first (summer-time) occurrence.
    resolved_utc = pd.DatetimeIndex(resolved).tz_localize(
        "Europe/Berlin", ambiguous=np.ones(len(orders), dtype=bool), nonexistent="shift_forward")
    outcomes = pd.DataFrame({
        "order_id": orders["order_id"].to_numpy(),
        "resolved_at": (resolved_utc.as_unit("ms").asi8 // 1).astype("int64"),
        "returned": returned,
    })
    return outcomes.sort_values("resolved_at", kind="stable").reset_index(drop=True)


def write(out_dir: Path, days: int = DAYS, seed: int = 7, **options) -> tuple[Path, Path]:
    """Write orders.csv and outcomes.jsonl into `out_dir` (``options``: generate's shift and noise); their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    orders, outcomes = generate(days=days, seed=seed, **options)
    orders_path, outcomes_path = out_dir / "orders.csv", out_dir / "outcomes.jsonl"
    orders.to_csv(orders_path, index=False)
    outcomes.to_json(outcomes_path, orient="records", lines=True)
    return orders_path, outcomes_path


def _day_or_none(text: str) -> dt.date | None:
    if text.lower() == "none":
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day YYYY-MM-DD or 'none', not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the generated orders example (orders.csv, outcomes.jsonl).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--days", type=int, default=DAYS, help=f"days from {START} (default {DAYS})")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shift-day", type=_day_or_none, default=SHIFT_DAY,
                        help=f"first day of the marketplace shift, or 'none' (default {SHIFT_DAY})")
    parser.add_argument("--label-noise-from", type=_day_or_none, default=None,
                        help="first order day whose outcomes are booked wrong with --label-noise-share (default: none)")
    parser.add_argument("--label-noise-share", type=float, default=0.3,
                        help="share of those outcomes flipped (default 0.3; used with --label-noise-from)")
    args = parser.parse_args(argv)
    noise = args.label_noise_share if args.label_noise_from is not None else 0.0
    if not 0.0 <= noise <= 1.0:
        parser.error(f"--label-noise-share must be within [0, 1], not {noise}")
    for path in write(args.out_dir, args.days, args.seed, shift_day=args.shift_day,
                      label_noise_from=args.label_noise_from, label_noise_share=noise):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
