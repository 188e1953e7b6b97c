"""`ml-assets replay` and its alias `ml-assets demo` (the flights defaults): arguments, run, printed timeline."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

DEMO_SPEC = "flights"
DEMO_START, DEMO_END = dt.date(2013, 1, 1), dt.date(2013, 6, 30)
TIMELINE = (("day", 10), ("drift (counted features)", 28), ("live roc_auc (vs holdout)", 25),
            ("action", 56), ("champion", 8))


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _step(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days >= 1")
    return value


def add_replay_commands(sub) -> None:
    """Register `replay` and `demo` on the CLI's subparsers."""
    replay = sub.add_parser("replay", help="the main job for any spec: land, materialize, monitor day by day, "
                                           "retrain on triggers, serve; prints the timeline")
    replay.add_argument("--spec", required=True, help="bundled spec name or YAML path (selects the active spec)")
    replay.add_argument("--start", type=_date, required=True, help="first day landed")
    replay.add_argument("--end", type=_date, required=True, help="last day landed")
    replay.add_argument("--step-days", type=_step, default=7, help="days landed at a time (default 7)")
    replay.add_argument("--from", dest="from_paths", nargs="+", action="extend", metavar="PATH",
                        help="files, folders or globs to land, each PATH or SOURCE=PATH (default: the spec's "
                             "bundled example_data)")
    replay.add_argument("--source", default=None,
                        help="the source of --from's bare paths (default: the spec's only source, else join.base)")
    replay.set_defaults(func=cmd_replay)
    demo = sub.add_parser("demo", help=f"replay of the bundled example: --spec {DEMO_SPEC} --start {DEMO_START} "
                                       f"--end {DEMO_END} --step-days 7")
    demo.add_argument("--spec", default=None, help="bundled spec name or YAML path (default: the active spec, "
                                                   f"ML_ASSETS_SPEC, else {DEMO_SPEC})")
    demo.add_argument("--start", type=_date, default=DEMO_START, help=f"first day landed (default {DEMO_START})")
    demo.add_argument("--end", type=_date, default=DEMO_END, help=f"last day landed (default {DEMO_END})")
    demo.add_argument("--step-days", type=_step, default=7, help="days landed at a time (default 7)")
    demo.set_defaults(func=cmd_replay, from_paths=None, source=None)


def _timeline_line(values: list[str]) -> str:
    return "  ".join(f"{v:<{w}}" for v, (_, w) in zip(values, TIMELINE, strict=True))


def print_row(row) -> None:
    print(_timeline_line([row.day, row.drift, row.live, row.action[:56],
                          f"v{row.champion}" if row.champion else "-"]), flush=True)
    if row.note:
        print(f"{'':12}{row.note}", flush=True)
    if row.verdict != "-":
        print(f"{'':12}gate {row.verdict}"
              + (f"; serving it {row.seconds_to_serving:.0f} s after the day landed" if row.seconds_to_serving else ""),
              flush=True)


def group_from_items(items: list[str], sources: set[str], default_source: str | None) -> dict[str | None, list[str]]:
    """--from items by source: SOURCE=PATH when SOURCE is one of the spec's sources, else a bare PATH
    of `default_source` (None: land_files picks the spec's only or base source)."""
    by_source: dict[str | None, list[str]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        source, path = (name, path) if sep and name in sources else (default_source, item)
        by_source.setdefault(source, []).append(str(Path(path).expanduser()))
    return by_source


def _lander(items: list[str], default_source: str | None):
    """Land a batch's days from the user's files: each --from item is PATH (of --source, else the spec's
    only or base source) or SOURCE=PATH; one land_files call per source and batch."""
    from ml_assets.defs.dataset import SPEC
    from ml_assets.defs.resources import resources_for_environment
    from ml_assets.landing import land_files

    by_source = group_from_items(items, set(SPEC.sources), default_source)
    store = resources_for_environment()["blob_store"].blob_store()

    def land_batch(days):
        return [blob for source, paths in by_source.items()
                for blob in land_files(store, SPEC, paths, source=source, start=days[0], end=days[-1],
                                       progress=True).blobs]

    return land_batch


def cmd_replay(args: argparse.Namespace) -> int:
    """Select the spec, then replay; exit 0 whenever the loop ran (held-back days are outcomes, not errors)."""
    import dagster as dg

    from ml_assets.defs.settings import select_spec, spec_name

    select_spec(args.spec or spec_name())
    from ml_assets.definitions import defs
    from ml_assets.defs.dataset import SPEC
    from ml_assets.defs.instance_storage import tuned
    from ml_assets.landing import LandingError
    from ml_assets.replay.loop import Replay, ReplayError
    from ml_assets.replay.timeline import summary_line

    started = time.perf_counter()
    # Dagster's default SQLite storage waits for fsync on every event: the replay writes through the
    # tuned subclass (same files, read by the UI and daemon as usual).
    with dg.DagsterInstance.get() as home, tuned(home) as instance:
        try:
            replay = Replay(defs, instance, log=lambda message: None,
                            lander=_lander(args.from_paths, args.source) if args.from_paths else None)
            print(f"Replaying spec {SPEC.name}: {args.start}..{args.end}, {args.step_days} day(s) at a time; "
                  "every day is judged and the retraining sensors tick after it.\n")
            print(_timeline_line([name for name, _ in TIMELINE]))
            rows = replay.run_loop(args.start, args.end, args.step_days, on_row=print_row)
            probe = replay.probe_serving() if any(c.deployed_version for c in replay.cycles) else None
        except (ReplayError, LandingError) as exc:
            print(f"ml-assets replay: {exc}")
            return 2
    cycles = replay.cycles
    print()
    _print_table([
        {"as_of": c.as_of, "status": c.status, "candidate": c.candidate, "deployed": c.deployed_version or "-",
         "champion": c.champion_after or "-", "seconds": round(c.seconds, 1),
         "report": c.report_sent_to.rsplit("/", 1)[-1]}
        for c in cycles
    ])
    serving = [r.seconds_to_serving for r in rows if r.seconds_to_serving]
    if serving:
        print(f"\nfrom a day landing to its retrained model serving: {', '.join(f'{s:.0f} s' for s in serving)} "
              f"(the day's whole {args.step_days}-day batch included)")
    if probe:
        print(f"serving {probe['url']} (champion v{probe['version']}): {probe['rows']} sample rows predicted "
              f"over HTTP; max |server - batch| = {probe['max_abs_diff']:.2e}; single-row p50 {probe['p50_ms']:.2f} ms")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in replay.report.seconds.items())
    print(f"\n{summary_line(rows, replay.report)}")
    print(f"{timings}; total {time.perf_counter() - started:.0f}s")
    if not cycles:
        print("no training cycle ran in this range: the first model waits for a full training window and "
              f"holdout of labelled days ({SPEC.training.window_days} + {SPEC.training.holdout_days})")
    failed = [c for c in cycles if c.status == "failed"]
    if failed:
        print(f"{len(failed)} training run(s) failed (not a gate decision): exit code 1")
    print(f"Dagster history in {instance.root_directory}: `make dev` opens the UI.")
    return 1 if failed else 0


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len("-" if r[c] is None else str(r[c])) for r in rows)) for c in columns}
    print("  ".join(f"{c:>{widths[c]}}" for c in columns))
    for row in rows:
        print("  ".join(f"{'-' if row[c] is None else row[c]!s:>{widths[c]}}" for c in columns))
