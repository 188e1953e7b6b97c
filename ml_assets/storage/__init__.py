"""Blob storage with one interface over a local folder and Azure Blob Storage (no Dagster here)."""

from ml_assets.storage.azure import AzureBlobStore
from ml_assets.storage.base import BlobInfo, BlobNotFoundError, BlobStore, BlobStoreError
from ml_assets.storage.datasets import DatasetStore
from ml_assets.storage.local import LocalBlobStore

__all__ = [
    "AzureBlobStore",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "BlobStoreError",
    "DatasetStore",
    "LocalBlobStore",
]
