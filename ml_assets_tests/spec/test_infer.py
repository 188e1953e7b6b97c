"""`ml-assets spec init`: a generated sample -> a commented YAML that loads as a DatasetSpec."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import yaml

from ml_assets.cli import main
from ml_assets.spec import load_spec
from ml_assets.spec.sources import ColumnType
from ml_assets.storage import LocalBlobStore
from ml_assets.storage.model_store import ModelStore

DAYS = 20
ROWS_PER_DAY = 60


def _sample() -> pd.DataFrame:
    """20 days of 60 rows; `discount` is empty on 10% of day 5's rows and 2% of the others."""
    rng = np.random.default_rng(3)
    rows = DAYS * ROWS_PER_DAY
    day = np.repeat(np.arange(DAYS), ROWS_PER_DAY)
    stamps = pd.Timestamp("2024-03-01") + pd.to_timedelta(day, unit="D") + pd.to_timedelta(
        rng.integers(6 * 3600, 22 * 3600, rows), unit="s")
    discount = rng.choice([0.0, 5.0, 10.0], rows)
    empty = np.where(day == 5, rng.random(rows) < 0.1, rng.random(rows) < 0.02)
    return pd.DataFrame({
        "order_id": np.arange(1000, 1000 + rows),
        "ordered_at": stamps.strftime("%Y-%m-%d %H:%M:%S"),
        "price": np.round(rng.lognormal(3, 0.5, rows), 2),
        "tenure_days": rng.integers(0, 2000, rows),
        "quantity": rng.integers(1, 4, rows),
        "channel": rng.choice(["web", "app", "phone"], rows),
        "note": [f"free text {i}" for i in range(rows)],
        "is_gift": rng.random(rows) < 0.2,
        "discount": np.where(empty, np.nan, discount),
        "delay_days": np.where(day < 10, rng.integers(0, 8, rows), rng.integers(0, 12, rows)),
    })


def _write(frame: pd.DataFrame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_spec_init_infers_a_spec_that_loads(tmp_path, capsys, suffix):
    frame = _sample()
    sample = tmp_path / f"shop_orders{suffix}"
    _write(frame, sample)
    out = tmp_path / "specs" / "shop.yaml"

    code = main(["spec", "init", "--from", str(sample), "--label", "delay_days > 5 AND NOT is_gift",
                 "--timestamp", "ordered_at", "--name", "shop", "--out", str(out), "--timezone", "Europe/Berlin"])

    assert code == 0, capsys.readouterr().err
    text = out.read_text()
    assert text.startswith("# Inferred by `ml-assets spec init`")
    spec = load_spec(out)
    assert spec.name == "shop" and spec.timezone == "Europe/Berlin" and spec.start_date == dt.date(2024, 3, 1)
    source = spec.sources["shop_orders"]
    assert spec.join.base == "shop_orders" and spec.join.joins == []
    assert source.columns == {
        "order_id": ColumnType.int, "ordered_at": ColumnType.timestamp, "price": ColumnType.float,
        "tenure_days": ColumnType.int, "quantity": ColumnType.int, "channel": ColumnType.string,
        "note": ColumnType.string, "is_gift": ColumnType.bool, "discount": ColumnType.float,
        "delay_days": ColumnType.int,
    }
    assert spec.key_columns == ["order_id"]
    # Numeric by type, categorical by type and cardinality; the label's columns and free text left out.
    assert spec.features.numeric == ["price", "tenure_days", "discount"]
    assert spec.features.categorical == ["quantity", "channel"]
    assert "note: 1200 distinct strings in 1200 rows" in text and "delay_days: used by the label" in text
    assert spec.clustering.features == ["price", "tenure_days", "discount"] and spec.clustering.k == 4
    # Bounds: observed rates plus the documented margins.
    assert 0.1 + 0.05 <= spec.quality.null_bound("shop_orders.discount") <= 0.3
    assert spec.quality.null_bound("discount") == spec.quality.null_bound("shop_orders.discount")
    assert spec.quality.null_bound("shop_orders.price") == spec.quality.max_null_rate == 0.05
    label = (frame.delay_days > 5) & ~frame.is_gift
    daily = label.groupby(np.repeat(np.arange(DAYS), ROWS_PER_DAY)).mean()
    bounds = spec.quality.label_rate
    assert bounds.min == pytest.approx(round(daily.min() - 0.05, 3))
    assert bounds.max == pytest.approx(round(daily.max() + 0.05, 3))
    assert spec.label.name == "label" and spec.label.expression == "delay_days > 5 AND NOT is_gift"
    assert yaml.safe_load(text)["quality"]["min_rows"] == ROWS_PER_DAY // 2


def test_spec_init_names_what_it_cannot_use(tmp_path, capsys):
    sample = tmp_path / "shop.csv"
    _write(_sample(), sample)
    base = ["spec", "init", "--from", str(sample), "--timestamp", "ordered_at", "--out", str(tmp_path / "s.yaml")]

    assert main([*base, "--label", "upper(channel) = 'APP'"]) == 2
    assert "unsupported function call upper(...)" in capsys.readouterr().err
    assert main([*base, "--label", "returned"]) == 2
    assert "column 'returned' is not in the sample" in capsys.readouterr().err
    assert main([*base[:-2], "--out", str(sample), "--label", "is_gift"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not (tmp_path / "s.yaml").exists()


def test_model_commands_default_to_the_active_spec(tmp_path, monkeypatch, capsys):
    sample = tmp_path / "shop.csv"
    _write(_sample(), sample)
    out = tmp_path / "shop.yaml"
    assert main(["spec", "init", "--from", str(sample), "--label", "is_gift", "--timestamp", "ordered_at",
                 "--out", str(out)]) == 0
    monkeypatch.setattr("ml_assets.defs.dataset.SPEC", load_spec(out))
    monkeypatch.setenv("ML_ASSETS_STORE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("ML_ASSETS_CACHE_DIR", str(tmp_path / "cache"))
    models = ModelStore(LocalBlobStore(tmp_path / "store"), tmp_path / "cache" / "models")
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.bin").write_bytes(b"model")
    models.publish("shop", artifact, {"flavor": "sklearn"})
    models.promote("shop", 1, expected=None, reason="first model")
    capsys.readouterr()

    assert main(["history"]) == 0
    assert capsys.readouterr().out.startswith("shop: champion v1; versions [1]")


def test_spec_init_with_a_label_feed_of_epoch_milliseconds(tmp_path, capsys):
    from ml_assets.examples.orders import write

    orders, outcomes = write(tmp_path, days=30)
    out = tmp_path / "orders.yaml"

    assert main(["spec", "init", "--from", str(orders), "--labels", str(outcomes), "--labels-timestamp",
                 "resolved_at", "--label", "returned", "--timestamp", "ordered_at", "--timezone", "Europe/Berlin",
                 "--out", str(out)]) == 0, capsys.readouterr().err

    spec = load_spec(out)
    assert spec.key_columns == ["order_id"] and spec.label.name == "returned"
    assert spec.sources["orders"].timestamp_format == "iso"  # naive local times: read in the spec's zone
    feed = spec.sources["outcomes"]
    assert feed.timestamp_format == "epoch_ms" and feed.columns["returned"] == ColumnType.bool
    assert spec.label_feed.source == "outcomes" and spec.join.base == "orders"
    # Outcomes arrive 2-25 days late; the bound is the longest delay in the sample plus 2 days.
    assert 10 <= spec.label_feed.max_delay_days <= 30
    assert "is_gift" in spec.features.categorical and "returned" not in spec.features.names
    # Drift weighted by the champion's importance, scored on enough trailing days for 400 rows on a quiet day.
    drift = spec.monitoring.drift
    assert drift.weighting == "importance" and drift.current_days == -(-400 // (2 * spec.quality.min_rows))


def test_without_an_id_the_key_is_the_timestamp_with_an_entity_and_empty_labels_are_excluded(tmp_path, capsys):
    frame = _sample().drop(columns=["order_id", "note"])
    frame["ordered_at"] = frame["ordered_at"].str[:13] + ":00:00"  # hourly: the time alone repeats
    frame["is_gift"] = frame["is_gift"].astype(object).where(frame.index >= 10, None)  # 10 outcomes unknown
    sample = tmp_path / "hourly.csv"
    _write(frame, sample)
    out = tmp_path / "hourly.yaml"
    assert main(["spec", "init", "--from", str(sample), "--label", "is_gift", "--timestamp", "ordered_at",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    spec = load_spec(out)
    assert spec.label.exclude_when == "is_gift IS NULL"  # unknown outcomes get no label, not a negative one
    key = spec.key_columns
    assert key[0] == "ordered_at" and 2 <= len(key) <= 4
    assert not frame.duplicated(subset=key).any()
