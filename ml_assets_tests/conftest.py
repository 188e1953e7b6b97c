"""Shared fixtures: real services (Azurite, Spark) are started once per test session."""

pytest_plugins = [
    "ml_assets_tests.fixtures.azurite",
]
