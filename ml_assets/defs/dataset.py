"""The dataset spec this code location serves: ML_ASSETS_SPEC names a bundled spec or a YAML path."""

import os

from ml_assets.spec import DatasetSpec, load_spec

SPEC_ENV_VAR = "ML_ASSETS_SPEC"

SPEC: DatasetSpec = load_spec(os.environ.get(SPEC_ENV_VAR, "flights"))
