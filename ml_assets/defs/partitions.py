"""Partitions shared by the daily assets, their checks, sensors and backfills."""

import dagster as dg

from ml_assets.defs.dataset import SPEC

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SPEC.start_date.isoformat(),
    end_date=SPEC.end_date.isoformat() if SPEC.end_date else None,
    timezone=SPEC.timezone,
)
