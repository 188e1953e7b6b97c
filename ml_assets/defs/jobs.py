"""Jobs for the CLI, the UI launchpad and backfills."""

import dagster as dg

from ml_assets.defs.assets.raw import RAW_GROUP

raw_job = dg.define_asset_job(
    "raw_job",
    selection=dg.AssetSelection.groups(RAW_GROUP),
    description="Parse and check the landed blobs of the selected days (one run per day).",
)

feature_job = dg.define_asset_job(
    "feature_job",
    selection=dg.AssetSelection.assets("features", "labels"),
    description="Features and labels of the selected days in one Spark run.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training", "deployment"),
    description="Train both candidates, evaluate them beside the champion, gate, and deploy.",
)
