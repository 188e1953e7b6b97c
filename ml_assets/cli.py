"""`ml-assets`: land example data, run the main job."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import warnings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def cmd_land(args: argparse.Namespace) -> int:
    from ml_assets.defs.resources import resources_for_environment
    from ml_assets.examples import load_example
    from ml_assets.landing import days_between, land
    from ml_assets.spec import load_spec

    spec = load_spec(args.spec)
    if not spec.example_data:
        print(f"spec {spec.name!r} names no example_data to land", file=sys.stderr)
        return 2
    store = resources_for_environment()["blob_store"].blob_store()
    landed = land(store, spec, load_example(spec.example_data), days_between(args.start, args.end), progress=True)
    print(f"landed {len(landed)} blobs ({sum(b.rows for b in landed)} rows) into {store.location}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import dagster as dg

    from ml_assets.definitions import defs
    from ml_assets.demo import run_demo, summary_rows

    with dg.DagsterInstance.get() as instance:
        report = run_demo(defs, instance, args.start, args.end)
        rows = summary_rows(instance, report.days)
    columns = list(rows[0])
    print()
    print("  ".join(f"{c:>12}" for c in columns))
    for row in rows:
        print("  ".join(f"{'-' if row[c] is None else row[c]!s:>12}" for c in columns))
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    print(f"\n{len(report.days)} days; raw failures: {len(report.raw_failed)}; {timings}")
    print(f"Dagster history in {instance.root_directory}: `make dev` opens the UI.")
    return 1 if len(report.raw_failed) == len(report.days) else 0


def main(argv: list[str] | None = None) -> int:
    # Beta/preview notices about backfill policies and partitioned checks are for developers.
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview).*")
    parser = argparse.ArgumentParser(prog="ml-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    land = sub.add_parser("land", help="write example raw data into the store, one blob per source per day")
    land.add_argument("--spec", default="flights", help="bundled spec name or YAML path")
    land.add_argument("--start", type=_date, required=True)
    land.add_argument("--end", type=_date, required=True)
    land.set_defaults(func=cmd_land)
    demo = sub.add_parser("demo", help="land January 2013 and materialize raw -> clusters")
    demo.add_argument("--start", type=_date, default=dt.date(2013, 1, 1))
    demo.add_argument("--end", type=_date, default=dt.date(2013, 1, 31))
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    if args.end < args.start:
        parser.error(f"--end {args.end} is before --start {args.start}")
    from ml_assets.spec import SpecError

    try:
        return args.func(args)
    except SpecError as exc:
        print(f"ml-assets: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
