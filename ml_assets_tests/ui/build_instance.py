"""Build the instance the UI test looks at: days landed and materialized, and one training cycle.

Run as ``python -m ml_assets_tests.ui.build_instance OUT.json`` with DAGSTER_HOME and the
ML_ASSETS_* variables of the services that will serve it, in its own process, so that the code
location is imported with exactly those variables (the spec and the store are read at import).

It lands ``UI_FIRST_DAY`` .. ``UI_LAST_DAY``, materializes raw -> features, labels -> cluster_model
-> clusters for the days up to ``UI_TRAINED_UNTIL`` the way the demo does (the ``landed_blobs``
sensor's own requests, then range runs), runs one ``training_job`` (so ``promotion_gate`` has a
verdict) and leaves the last days landed but unmaterialized for the UI's backfill. What it did
goes to OUT.json.
"""

import datetime as dt
import json
import sys
from pathlib import Path

FIRST_DAY = dt.date(2013, 1, 1)
TRAINED_UNTIL = dt.date(2013, 1, 10)
BACKFILL_DAYS = [dt.date(2013, 1, 11), dt.date(2013, 1, 12), dt.date(2013, 1, 13)]
# Small models: the test needs a verdict, not a good model.
FAST_TRAINING = {
    "keras_candidate": {"config": {"epochs": 2, "hidden_units": [8]}},
    "sklearn_candidate": {"config": {"max_iter": 40}},
}


def main(out: Path) -> None:
    import dagster as dg

    from ml_assets.definitions import defs
    from ml_assets.defs.dataset import SPEC
    from ml_assets.demo import Demo
    from ml_assets.examples import load_example
    from ml_assets.landing import land

    with dg.DagsterInstance.get() as instance:
        demo = Demo(defs, instance, log=lambda message: print(message, flush=True))
        done = demo.land_and_materialize(FIRST_DAY, TRAINED_UNTIL)
        if demo.report.failed_days:
            raise SystemExit(f"days held back while building the UI instance: {demo.report.failed_days}")
        outcome = demo.training_cycle(
            TRAINED_UNTIL.isoformat(),
            run_config={"ops": {"training_set": {"config": {"as_of": TRAINED_UNTIL.isoformat()}}, **FAST_TRAINING}},
        )
        if outcome.status == "failed":  # a failed run may have stopped before the gate
            raise SystemExit(f"the training cycle failed while building the UI instance: {outcome.verdict}")
        land(defs.resources["blob_store"].blob_store(), SPEC, load_example(SPEC.example_data), BACKFILL_DAYS)
    print("seconds per stage:", json.dumps({k: round(v, 1) for k, v in demo.report.seconds.items()}), flush=True)
    out.write_text(json.dumps({
        "materialized_days": done,
        "backfill_days": [d.isoformat() for d in BACKFILL_DAYS],
        "training_run_id": outcome.run_id,
        "cycle_status": outcome.status,
    }, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
