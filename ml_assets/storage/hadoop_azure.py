"""URIs and Hadoop settings for Spark executors reading the Azure container directly (no dagster import).

Spark reaches Azure Blob Storage through Hadoop's `hadoop-azure` connector (not bundled with the
pyspark wheel: add it with `spark.jars.packages=org.apache.hadoop:hadoop-azure:<Hadoop version of
pyspark's jars/hadoop-client-api-*.jar>`, or put the jar on every node). Two file systems:

* `abfss://<container>@<account>.dfs.core.windows.net/<key>` - ABFS, the Data Lake Storage Gen2
  endpoint (hierarchical namespace recommended; renames are atomic there);
* `wasbs://<container>@<account>.blob.core.windows.net/<key>` - the older WASB driver on the
  plain Blob endpoint (deprecated by Hadoop, still works on any storage account).

Credentials become Hadoop settings, which `hadoop_settings` builds from the same secrets the
blob store uses (account key or SAS token; with neither, ABFS uses the node's managed identity).
They are applied to the running session's Hadoop configuration at run time, so they never appear
in the Spark config shown by Dagster; the same keys prefixed with `spark.hadoop.` work in
ML_ASSETS_SPARK_CONF or spark-defaults.conf.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

SparkFileSystem = Literal["abfss", "wasbs"]
ENDPOINTS: dict[str, str] = {"abfss": "dfs", "wasbs": "blob"}


class HadoopAzureConfigError(ValueError):
    """The settings cannot address the container through hadoop-azure; the message says why."""


def account_name(connection_string: str | None = None, account_url: str | None = None) -> str:
    """The storage account named by a connection string (AccountName=) or an account URL's host."""
    if connection_string:
        for part in connection_string.split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() == "accountname" and value.strip():
                return value.strip()
        raise HadoopAzureConfigError(
            "the Azure connection string has no AccountName: hadoop-azure needs the account's name"
        )
    if account_url:
        host = urlparse(account_url.strip()).hostname or ""
        name = host.split(".", 1)[0]
        if not name or host.replace(".", "").isdigit() or "." not in host:
            raise HadoopAzureConfigError(
                f"cannot tell the storage account from {account_url!r}: hadoop-azure needs "
                "https://<account>.blob.core.windows.net (emulators such as Azurite are not supported)"
            )
        return name
    raise HadoopAzureConfigError("hadoop-azure needs the account: give a connection string or an account URL")


def _check(scheme: str) -> str:
    if scheme not in ENDPOINTS:
        raise HadoopAzureConfigError(f"Spark file system {scheme!r} is not one of {', '.join(ENDPOINTS)}")
    return ENDPOINTS[scheme]


def host(scheme: SparkFileSystem, account: str) -> str:
    return f"{account}.{_check(scheme)}.core.windows.net"


def root_uri(scheme: SparkFileSystem, container: str, account: str) -> str:
    """The container's root as Spark addresses it, e.g. abfss://ml-assets@acct.dfs.core.windows.net."""
    return f"{scheme}://{container}@{host(scheme, account)}"


def hadoop_settings(scheme: SparkFileSystem, container: str, account: str, *, key: str | None = None,
                    sas: str | None = None) -> dict[str, str]:
    """Hadoop configuration keys (without the `spark.hadoop.` prefix) granting access."""
    endpoint = host(scheme, account)
    if key and sas:
        raise HadoopAzureConfigError("give hadoop-azure an account key or a SAS token, not both")
    if key:
        return {f"fs.azure.account.key.{endpoint}": key}
    if sas:
        sas = sas.lstrip("?")
        if scheme == "wasbs":
            return {f"fs.azure.sas.{container}.{endpoint}": sas}
        return {
            f"fs.azure.account.auth.type.{endpoint}": "SAS",
            f"fs.azure.sas.token.provider.type.{endpoint}": "org.apache.hadoop.fs.azurebfs.sas.FixedSASTokenProvider",
            f"fs.azure.sas.fixed.token.{endpoint}": sas,
        }
    if scheme == "wasbs":
        raise HadoopAzureConfigError(
            "wasbs:// needs an account key or a SAS token (AZURE_STORAGE_KEY / AZURE_STORAGE_SAS_TOKEN or a "
            "connection string with AccountKey); use abfss:// for a managed identity"
        )
    return {
        f"fs.azure.account.auth.type.{endpoint}": "OAuth",
        f"fs.azure.account.oauth.provider.type.{endpoint}":
            "org.apache.hadoop.fs.azurebfs.oauth2.MsiTokenProvider",
    }


def connection_string_secrets(connection_string: str) -> tuple[str | None, str | None]:
    """(AccountKey, SharedAccessSignature) of a connection string; either may be None."""
    pairs = {}
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        pairs[key.strip().lower()] = value.strip()
    return pairs.get("accountkey") or None, pairs.get("sharedaccesssignature") or None
