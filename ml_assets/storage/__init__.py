"""Blob storage with one interface over a local folder and Azure Blob Storage (no Dagster here).

`AzureBlobStore` is imported on first use: the Azure SDK takes a noticeable part of a second
to import, and the code location imports this package on every load.
"""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from ml_assets.storage.azure import AzureBlobStore


def __getattr__(name: str):
    if name == "AzureBlobStore":
        from ml_assets.storage.azure import AzureBlobStore

        return AzureBlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
