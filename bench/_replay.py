"""What the replay benchmarks share: a throw-away store and Dagster home, and one replay run."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path


def replay_workdir(prefix: str) -> Path:
    """A temp folder holding the store, cache, outbox and a telemetry-free Dagster home, set in the env."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    (workdir / "dagster_home").mkdir()
    (workdir / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update({
        "ML_ASSETS_STORE_ROOT": str(workdir / "store"),
        "ML_ASSETS_CACHE_DIR": str(workdir / "cache"),
        "ML_ASSETS_OUTBOX_DIR": str(workdir / "outbox"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    })
    return workdir


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_replay(workdir: Path, start: dt.date, end: dt.date, step_days: int, default_storage: bool = False,
               **replay_options):
    """(replay, timeline rows, serving probe or None): the loop over [start, end] on the active spec
    (`default_storage`: Dagster's own SQLite classes instead of the tuned ones the replay command uses)."""
    import dagster as dg

    from ml_assets.definitions import defs
    from ml_assets.defs.instance_storage import tuned
    from ml_assets.replay.loop import Replay

    # As `ml-assets replay` does: the SQLite storage through the tuned subclass (same files).
    with (dg.DagsterInstance.local_temp(str(workdir / "dagster_home")) as home,
          nullcontext(home) if default_storage else tuned(home) as instance):
        replay = Replay(defs, instance, log=log, **replay_options)
        rows = replay.run_loop(start, end, step_days,
                               on_row=lambda row: log(f"{row.day} {row.status} {row.drift} | {row.live} | "
                                                      f"{row.action} | v{row.champion}"))
        probe = replay.probe_serving() if any(c.deployed_version for c in replay.cycles) else None
    return replay, rows, probe
