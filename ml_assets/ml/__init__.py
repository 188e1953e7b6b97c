"""Data and model code that does not import Dagster."""
