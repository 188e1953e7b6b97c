"""`ml-assets replay`: the main job for any spec, from an empty store, one batch of days at a time.

Importing this package stays light: the loop (``ml_assets.replay.loop``) imports the Dagster
definitions, which are built for one spec, so the command selects the spec before importing it.
"""

from ml_assets.replay.timeline import (
    CycleOutcome,
    ReplayReport,
    TimelineRow,
    contiguous_ranges,
    summary_line,
    waiting_for,
)

__all__ = ["CycleOutcome", "ReplayReport", "TimelineRow", "contiguous_ranges", "summary_line", "waiting_for"]
