"""Dagster resource and IO-manager classes (wiring per environment lives in ml_assets.defs.resources)."""
