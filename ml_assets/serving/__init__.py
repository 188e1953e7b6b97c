"""Online serving: the champion model behind the TensorFlow Serving REST API (no Dagster here)."""

from ml_assets.serving.app import create_app, serve
from ml_assets.serving.registry import LoadedModel, ModelNotFoundError, ModelRegistry

__all__ = ["LoadedModel", "ModelNotFoundError", "ModelRegistry", "create_app", "serve"]
