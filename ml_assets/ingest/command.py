"""`ml-assets land`: users' files (--from) or the spec's bundled example, into day blobs of the store.

The store comes from the one resource-building path (ml_assets/defs/resources.py), imported when the
command runs, so this package stays plain code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _scale(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"--scale {text} is not in 1..1000")
    return value


def add_land_command(sub) -> None:
    """Register `land` on the CLI's subparsers."""
    land = sub.add_parser("land", help="land files (--from) or the spec's bundled example as day blobs, one blob "
                                       "per source per day; blobs whose bytes would not change are not written")
    land.add_argument("--spec", default="flights", help="bundled spec name or YAML path (default flights)")
    land.add_argument("--from", dest="from_paths", nargs="+", metavar="PATH",
                      help="CSV, Parquet or JSON Lines files (.gz too), folders or quoted globs ('data/*.csv'); "
                           "default: the spec's bundled example_data")
    land.add_argument("--source", default=None,
                      help="source the files belong to (default: the spec's only source, else its join base)")
    land.add_argument("--start", type=_date, default=None,
                      help="first day landed (rows of earlier days are skipped); required for the bundled example")
    land.add_argument("--end", type=_date, default=None, help="last day landed (inclusive); likewise")
    land.add_argument("--replace", action="store_true",
                      help="a day's blob holds only the rows landed now (default with --from: merge into the "
                           "landed day, a row replacing the landed row with the same key)")
    land.add_argument("--scale", type=_scale, default=1,
                      help="bundled example only: each day's rows x N (resampled with jitter, keys unique; default 1)")
    land.add_argument("--seed", type=int, default=0, help="seed of --scale's resampling (default 0)")
    land.set_defaults(func=cmd_land, land_parser=land)


def cmd_land(args: argparse.Namespace) -> int:
    from ml_assets.defs.resources import resources_for_environment
    from ml_assets.landing import LandingError, days_between, land, land_files
    from ml_assets.spec import load_spec

    def fail(message: str) -> int:
        print(f"ml-assets land: {message}", file=sys.stderr)
        return 2

    if args.start is not None and args.end is not None and args.end < args.start:
        args.land_parser.error(f"--end {args.end} is before --start {args.start}")
    spec = load_spec(args.spec)
    if args.from_paths is None:
        if not spec.example_data:
            return fail(f"spec {spec.name!r} names no example_data: land your files with --from PATH")
        if args.start is None or args.end is None:
            return fail("--start and --end are required to land the bundled example")
        if args.source is not None:
            return fail("--source applies to --from files (the bundled example lands every source)")
    elif args.scale != 1:
        return fail("--scale applies to the bundled example, not to --from files")
    store = resources_for_environment()["blob_store"].blob_store()
    try:
        if args.from_paths is not None:
            report = land_files(store, spec, args.from_paths, source=args.source, start=args.start, end=args.end,
                                mode="replace" if args.replace else "merge", progress=True)
            print(report.describe(store.location))
            return 0
        from ml_assets.examples import load_example

        days = days_between(args.start, args.end)
        frames = load_example(spec.example_data)
        if args.scale != 1:
            from ml_assets.examples.volume import scale_example

            frames = scale_example(spec, frames, args.scale, args.seed, days)
        landed = land(store, spec, frames, days, progress=True)
    except LandingError as exc:
        return fail(str(exc))
    written = sum(b.written for b in landed)
    print(f"landed {len(landed)} blobs ({sum(b.rows for b in landed)} rows) into {store.location} "
          f"({written} written, {len(landed) - written} unchanged)")
    return 0
