"""The blob store as a Dagster resource: a local folder by default, Azure Blob Storage in production."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from ml_assets.storage import BlobStore, DatasetStore, LocalBlobStore
from ml_assets.storage.model_store import ModelStore


class BlobStoreResource(dg.ConfigurableResource):
    """Where raw blobs land and every table, artifact and model is stored."""

    backend: Literal["local", "azure"] = Field(
        "local", description="'local' keeps blobs in a folder; 'azure' uses Azure Blob Storage"
    )
    local_root: str = Field(".data/store", description="Folder of the local backend")
    container: str = Field("ml-assets", description="Azure container holding every blob")
    azure_connection_string: str | None = Field(
        None, description="Azure connection string (takes precedence over account URL and key)"
    )
    azure_account_url: str | None = Field(None, description="e.g. https://<account>.blob.core.windows.net")
    azure_account_key: str | None = Field(None, description="Account key; without it DefaultAzureCredential is used")
    cache_dir: str = Field(".data/cache", description="Local folder for blobs downloaded for Spark")

    _store: BlobStore | None = PrivateAttr(default=None)

    def blob_store(self) -> BlobStore:
        if self._store is None:
            self._store = self._build()
        return self._store

    def datasets(self) -> DatasetStore:
        return DatasetStore(self.blob_store(), Path(self.cache_dir).resolve())

    def models(self) -> ModelStore:
        return ModelStore(self.blob_store(), Path(self.cache_dir).resolve() / "models")

    def put_json(self, key: str, document: dict) -> None:
        self.blob_store().put(key, json.dumps(document, indent=2, sort_keys=True, default=str).encode())

    def get_json(self, key: str) -> dict:
        return json.loads(self.blob_store().get(key))

    def _build(self) -> BlobStore:
        if self.backend == "local":
            return LocalBlobStore(self.local_root)
        from ml_assets.storage.azure import AzureBlobStore

        if self.azure_connection_string:
            return AzureBlobStore(container=self.container, connection_string=self.azure_connection_string)
        if not self.azure_account_url:
            raise ValueError(
                "blob store backend 'azure' needs azure_connection_string or azure_account_url "
                "(env AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL)"
            )
        credential = self.azure_account_key
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return AzureBlobStore(container=self.container, account_url=self.azure_account_url, credential=credential)
