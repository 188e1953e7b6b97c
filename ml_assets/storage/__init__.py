"""Blob storage with one interface over a local folder and Azure Blob Storage (no Dagster here)."""

from ml_assets.storage.azure import AzureBlobStore
from ml_assets.storage.base import (
    BlobConflictError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
)
from ml_assets.storage.datasets import DatasetStore
from ml_assets.storage.local import LocalBlobStore
from ml_assets.storage.model_store import (
    ChampionPointer,
    ModelIntegrityError,
    ModelStore,
    ModelVersion,
    PromotionConflictError,
)

__all__ = [
    "AzureBlobStore",
    "BlobConflictError",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "BlobStoreError",
    "ChampionPointer",
    "DatasetStore",
    "LocalBlobStore",
    "ModelIntegrityError",
    "ModelStore",
    "ModelVersion",
    "PromotionConflictError",
]
