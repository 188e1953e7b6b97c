"""The dataset spec this code location serves: ML_ASSETS_SPEC names a bundled spec or a YAML path."""

from ml_assets.defs.settings import SPEC_VAR as SPEC_ENV_VAR
from ml_assets.defs.settings import spec_name
from ml_assets.spec import DatasetSpec, load_spec

__all__ = ["SPEC", "SPEC_ENV_VAR"]

SPEC: DatasetSpec = load_spec(spec_name())
