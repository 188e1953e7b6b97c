"""The main job's former home: `ml_assets.replay` holds it now (these names stay importable)."""

from ml_assets.replay.loop import QUIET, RANGE_END_TAG, RANGE_START_TAG, Replay, ReplayError
from ml_assets.replay.timeline import CycleOutcome, TimelineRow, contiguous_ranges
from ml_assets.replay.timeline import ReplayReport as DemoReport
from ml_assets.replay.timeline import waiting_for as _waiting_for

Demo = Replay

__all__ = ["QUIET", "RANGE_END_TAG", "RANGE_START_TAG", "CycleOutcome", "Demo", "DemoReport", "Replay",
           "ReplayError", "TimelineRow", "_waiting_for", "contiguous_ranges"]
