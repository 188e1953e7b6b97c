"""Dataset specs: what a user writes instead of code (no Dagster here)."""

from ml_assets.spec.model import (
    ColumnType,
    DatasetSpec,
    SourceSpec,
    SpecError,
    load_spec,
)

__all__ = ["ColumnType", "DatasetSpec", "SourceSpec", "SpecError", "load_spec"]
