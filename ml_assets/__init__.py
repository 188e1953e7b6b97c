"""ml_assets: continuous training for tabular ML as Dagster software-defined assets."""
