"""Operating local processes: the Dagster services launcher's helpers and a throw-away PostgreSQL.

Plain code (no dagster import). Used by `python -m ml_assets.services`, the test fixtures and
bench/ scripts, which all import the package but never each other.
"""
