"""Everything Dagster loads: assets, checks, sensors, jobs and the resources per environment."""
