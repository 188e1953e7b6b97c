"""Online serving: the champion model behind the TensorFlow Serving REST API (no Dagster here)."""

from ml_assets.serving.app import create_app, serve
from ml_assets.serving.inputs import ServingLimits
from ml_assets.serving.registry import LoadedModel, ModelNotFoundError, ModelRegistry

__all__ = [
    "LoadedModel",
    "ModelNotFoundError",
    "ModelRegistry",
    "ServingLimits",
    "create_app",
    "serve",
]
