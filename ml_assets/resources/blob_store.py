"""The blob store as a Dagster resource: a local folder by default, Azure Blob Storage in production."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from ml_assets.resources.envvar import field_value
from ml_assets.storage import BlobStore, BlobStoreError, DatasetStore, LocalBlobStore, hadoop_azure
from ml_assets.storage.model_store import ModelStore

#: Seconds one store request may take, retries included: the Azure backend's own default
#: (ml_assets.storage.azure_sdk.DEFAULT_TIMEOUT_S), repeated here because that module loads the SDK.
DEFAULT_STORE_TIMEOUT_S = 120.0


class BlobStoreResource(dg.ConfigurableResource):
    """Where raw blobs land and every table, artifact and model is stored."""

    backend: Literal["local", "azure"] = Field(
        "local", description="'local' keeps blobs in a folder; 'azure' uses Azure Blob Storage"
    )
    local_root: str = Field(".data/store", description="Folder of the local backend")
    container: str = Field("ml-assets", description="Azure container holding every blob")
    azure_connection_string: str | None = Field(
        None, repr=False,
        description="Azure connection string, a secret: pass it as EnvVar('AZURE_STORAGE_CONNECTION_STRING'); "
                    "takes precedence over the account URL",
    )
    azure_account_url: str | None = Field(
        None, description="e.g. https://<account>.blob.core.windows.net (env AZURE_STORAGE_ACCOUNT_URL)"
    )
    azure_account_key: str | None = Field(
        None, repr=False, description="Account key, a secret: EnvVar('AZURE_STORAGE_KEY')"
    )
    azure_sas_token: str | None = Field(
        None, repr=False,
        description="SAS token, a secret: EnvVar('AZURE_STORAGE_SAS_TOKEN'); with neither key nor SAS "
                    "token, DefaultAzureCredential signs in",
    )
    cache_dir: str = Field(".data/cache", description="Local folder for blobs downloaded for Spark")
    spark_filesystem: Literal["download", "abfss", "wasbs"] = Field(
        "download",
        description="How Spark executors reach the azure container: 'download' (copies in the driver's "
                    "cache_dir, local[*] only) or 'abfss'/'wasbs' through Hadoop's hadoop-azure connector "
                    "(env ML_ASSETS_SPARK_FS); the local backend always uses local_root itself",
    )
    timeout_s: float = Field(
        DEFAULT_STORE_TIMEOUT_S, gt=0,
        description="Seconds after which an Azure request, retries included, fails instead of waiting "
                    "on a store that does not answer (env ML_ASSETS_STORE_TIMEOUT_S)",
    )

    _store: BlobStore | None = PrivateAttr(default=None)

    def blob_store(self) -> BlobStore:
        if self._store is None:
            self._store = self._build()
        return self._store

    def datasets(self) -> DatasetStore:
        root = None
        if self.backend == "azure" and self.spark_filesystem != "download":
            root = hadoop_azure.root_uri(self.spark_filesystem, self.container, self._account_name())
        return DatasetStore(self.blob_store(), Path(self.cache_dir).resolve(), spark_root=root)

    def hadoop_settings(self) -> dict[str, str]:
        """Hadoop settings (secrets included) Spark needs to reach the store; {} if none."""
        if self.backend != "azure" or self.spark_filesystem == "download":
            return {}
        key, sas = field_value(self.azure_account_key), field_value(self.azure_sas_token)
        connection_string = field_value(self.azure_connection_string)
        if connection_string:
            key, sas = hadoop_azure.connection_string_secrets(connection_string)
        return hadoop_azure.hadoop_settings(self.spark_filesystem, self.container, self._account_name(),
                                            key=key, sas=sas)

    def _account_name(self) -> str:
        return hadoop_azure.account_name(field_value(self.azure_connection_string),
                                         field_value(self.azure_account_url))

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

        connection_string = field_value(self.azure_connection_string)
        if connection_string:
            try:
                return AzureBlobStore(container=self.container, connection_string=connection_string,
                                      timeout_s=self.timeout_s)
            except ValueError as exc:  # the SDK's "Connection string is either blank or malformed"
                raise BlobStoreError(
                    f"cannot open azure container {self.container!r}: the connection string "
                    f"(AZURE_STORAGE_CONNECTION_STRING) is rejected: {exc}"
                ) from None
        url = field_value(self.azure_account_url)
        if not url:
            raise BlobStoreError(
                "blob store backend 'azure' needs azure_connection_string or azure_account_url "
                "(env AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL)"
            )
        key, sas = field_value(self.azure_account_key), field_value(self.azure_sas_token)
        if key and sas:
            raise BlobStoreError("give the azure blob store an account key (AZURE_STORAGE_KEY) or a SAS "
                                 "token (AZURE_STORAGE_SAS_TOKEN), not both")
        # The SDK tells a SAS token from an account key by its query-string form.
        credential = key or sas
        if not credential:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        try:
            return AzureBlobStore(container=self.container, account_url=url, credential=credential,
                                  timeout_s=self.timeout_s)
        except ValueError as exc:  # e.g. "Unable to determine account name for shared key credential"
            raise BlobStoreError(
                f"cannot open azure container {self.container!r} at {url} "
                f"(AZURE_STORAGE_ACCOUNT_URL): {exc}"
            ) from None
