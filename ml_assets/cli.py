"""`ml-assets`: land example data, run the main job, serve and roll back models."""

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


def cmd_backfill(args: argparse.Namespace) -> int:
    import dagster as dg

    from ml_assets.definitions import defs
    from ml_assets.defs.backfills import launch_range_backfill

    assets = [a.strip() for a in args.assets.split(",") if a.strip()]
    with dg.DagsterInstance.get() as instance:
        backfill_id = launch_range_backfill(instance, defs, assets, args.start, args.end)
    print(f"backfill {backfill_id}: {','.join(assets)} {args.start}..{args.end}; the daemon launches one run "
          "per contiguous range (raw, features, labels, clusters); each day keeps its own check verdicts")
    return 0


def _model_store():
    from ml_assets.defs.resources import resources_for_environment

    return resources_for_environment()["blob_store"].models()


def _active_model() -> str:
    """The model name commands default to: the active spec's name (ML_ASSETS_SPEC, else flights)."""
    from ml_assets.defs.dataset import SPEC

    return SPEC.name


def cmd_serve(args: argparse.Namespace) -> int:
    from ml_assets.serving import ServingLimits
    from ml_assets.serving.app import serve

    limits = ServingLimits(max_body_bytes=args.max_body_bytes, max_instances=args.max_instances,
                           body_timeout_s=args.body_timeout, header_timeout_s=args.header_timeout)
    from ml_assets.defs.dataset import SPEC
    from ml_assets.ml.values import feature_value_types

    model = args.model or SPEC.name
    # Versions whose manifest has no value_types read requests by the active spec's raw types.
    value_types = feature_value_types(SPEC) if model == SPEC.name else None
    serve(_model_store(), model, host=args.host, port=args.port, poll_interval=args.poll_interval,
          limits=limits, value_types=value_types)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    args.model = args.model or _active_model()
    pointer = _model_store().rollback(args.model, args.to, reason=args.reason)
    print(f"{args.model}: champion is now v{pointer.version}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    args.model = args.model or _active_model()
    store = _model_store()
    pointer = store.champion(args.model)
    print(f"{args.model}: champion v{pointer.version}; versions {store.versions(args.model)}")
    for entry in store.history(args.model):
        print(f"  {entry.get('at')}  {entry.get('action', 'promote'):8}  v{entry.get('previous')} -> "
              f"v{entry.get('version')}  {'FORCED ' if entry.get('forced') else ''}{entry.get('reason')}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from ml_assets.storage.model_gc import collect_garbage, describe

    report = collect_garbage(_model_store(), grace_seconds=args.grace_hours * 3600, apply=args.apply)
    print(describe(report))
    return 0


MODEL_HELP = "model name (default: the active spec's name: ML_ASSETS_SPEC, else flights)"


def main(argv: list[str] | None = None) -> int:
    # Beta/preview notices about backfill policies and partitioned checks are for developers.
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview).*")
    parser = argparse.ArgumentParser(prog="ml-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from ml_assets.ingest.command import add_land_command

    add_land_command(sub)
    backfill = sub.add_parser("backfill", help="queue a range backfill (one run per range; raw days judged one by one)")
    backfill.add_argument("--assets", default="features,labels", help="comma-separated partitioned assets")
    backfill.add_argument("--start", type=_date, required=True)
    backfill.add_argument("--end", type=_date, required=True)
    backfill.set_defaults(func=cmd_backfill)
    from ml_assets.replay.command import add_replay_commands

    add_replay_commands(sub)
    serve = sub.add_parser("serve", help="serve the champion over the TensorFlow Serving REST API")
    serve.add_argument("--model", default=None, help=MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8501)
    serve.add_argument("--poll-interval", type=float, default=2.0, help="seconds between champion checks")
    serve.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024,
                       help="largest request body; more is a 413 (default 64 MiB)")
    serve.add_argument("--max-instances", type=int, default=10_000,
                       help="most instances per predict request; more is a 413 (default 10000)")
    serve.add_argument("--body-timeout", type=float, default=30.0,
                       help="seconds to receive a request body once its headers arrived; then 408 and the "
                            "connection is closed (default 30, 0 = no limit)")
    serve.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a connection may take to send a request's headers; then 408 and the "
                            "connection is closed (default 10, 0 = no limit)")
    serve.set_defaults(func=cmd_serve)
    rollback = sub.add_parser("rollback", help="move the champion pointer back to an earlier version")
    rollback.add_argument("--model", default=None, help=MODEL_HELP)
    rollback.add_argument("--to", type=int, required=True, help="version to serve again")
    rollback.add_argument("--reason", required=True, help="why; kept in the history")
    rollback.set_defaults(func=cmd_rollback)
    history = sub.add_parser("history", help="versions, champion and promotion history of a model")
    history.add_argument("--model", default=None, help=MODEL_HELP)
    history.set_defaults(func=cmd_history)
    gc = sub.add_parser("gc", help="remove incomplete model versions and stale temp files (dry run unless --apply)")
    gc.add_argument("--grace-hours", type=float, default=24.0, help="only debris untouched this long (default 24)")
    gc.add_argument("--apply", action="store_true", help="delete; without it, only print the bytes it would free")
    gc.set_defaults(func=cmd_gc)
    from ml_assets.spec.infer import add_spec_command

    add_spec_command(sub)
    args = parser.parse_args(argv)
    if args.command in ("demo", "replay", "backfill") and args.end < args.start:
        parser.error(f"--end {args.end} is before --start {args.start}")
    from ml_assets.defs.backfills import BackfillRequestError
    from ml_assets.defs.settings import EnvConfigError
    from ml_assets.spec import SpecError
    from ml_assets.storage import BlobStoreError

    try:
        return args.func(args)
    except (EnvConfigError, SpecError, BlobStoreError, BackfillRequestError) as exc:
        print(f"ml-assets: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if args.command not in ("rollback", "history", "gc"):
            raise
        print(f"ml-assets: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
