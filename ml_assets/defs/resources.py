"""Resources per environment, built from environment variables.

ML_ASSETS_ENV=local (default, everything embedded) or azure. Dagster runs (through
`ml_assets.definitions`), the CLI (`serve`, `rollback`, `history`, `land`, `demo`) and the
replay all get their resources from `resources_for_environment`. The other settings (spec, Spark,
executor, Celery, pools) and the helpers reading variables are in ml_assets/defs/settings.py.

Secrets (AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN,
SMTP_PASSWORD) are handed to the resources as `dg.EnvVar`, so the UI, run configs and job
snapshots show the variable's name and never its value; a run resolves them when it starts, and a
resource used outside a run reads the same variable (`ml_assets.resources.envvar`). Every value
is checked here, when the code location loads: a missing or malformed one raises EnvConfigError
naming the variable, instead of failing later inside a run or a command.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import dagster as dg

from ml_assets.defs.settings import (
    EnvConfigError,
    env_flag,
    env_value,
    pool_limits,
    spark_config,
    spark_filesystem,
)
from ml_assets.resources.blob_store import DEFAULT_STORE_TIMEOUT_S, BlobStoreResource
from ml_assets.resources.email import EmailResource
from ml_assets.resources.spark import LazySparkResource
from ml_assets.resources.spark_io import SparkParquetIOManager

ENV_VAR = "ML_ASSETS_ENV"
ENVIRONMENTS = ("local", "azure")

# Azure's rule for container names: 3-63 lowercase letters, digits and single hyphens.
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


def _secret(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if env_value(name) else None


def _data_dir(name: str, env_var: str) -> str:
    return str(Path(env_value(env_var) or f".data/{name}").resolve())


def store_timeout_s() -> float:
    """ML_ASSETS_STORE_TIMEOUT_S: seconds before a request to the store fails (default 120)."""
    value = env_value("ML_ASSETS_STORE_TIMEOUT_S")
    if value is None:
        return DEFAULT_STORE_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise EnvConfigError(f"ML_ASSETS_STORE_TIMEOUT_S={value!r} is not a positive number of seconds")
    return seconds


def local_blob_store() -> BlobStoreResource:
    return BlobStoreResource(
        backend="local",
        local_root=_data_dir("store", "ML_ASSETS_STORE_ROOT"),
        cache_dir=_data_dir("cache", "ML_ASSETS_CACHE_DIR"),
        timeout_s=store_timeout_s(),
    )


def _check_connection_string(value: str) -> None:
    """The SDK's own parse, without importing it; the message never repeats the (secret) value."""
    pairs: dict[str, str] = {}
    for part in filter(str.strip, value.split(";")):
        key, sep, item = part.partition("=")
        if not sep or not key.strip():
            raise EnvConfigError(
                "AZURE_STORAGE_CONNECTION_STRING is malformed: expected 'Key=value' settings separated "
                "by ';' (e.g. 'AccountName=...;AccountKey=...;EndpointSuffix=core.windows.net')"
            )
        pairs[key.strip().lower()] = item.strip()
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return
    if not (pairs.get("accountname") or pairs.get("blobendpoint")):
        raise EnvConfigError("AZURE_STORAGE_CONNECTION_STRING names neither AccountName nor BlobEndpoint")


def _check_account_url(url: str) -> None:
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise EnvConfigError(
            f"AZURE_STORAGE_ACCOUNT_URL={url!r} is not an http(s) URL such as "
            "https://<account>.blob.core.windows.net"
        )


def _check_key_or_sas(key: str | None, sas: str | None) -> None:
    if key and sas:
        raise EnvConfigError("set AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, not both")
    if key:
        try:
            base64.b64decode(key.strip(), validate=True)
        except binascii.Error:
            raise EnvConfigError("AZURE_STORAGE_KEY is not an account key (base64 text)") from None
    if sas and "sig" not in parse_qs(sas.strip().lstrip("?")):
        raise EnvConfigError("AZURE_STORAGE_SAS_TOKEN is not a SAS token (a query string with sv=...&sig=...)")


def azure_blob_store() -> BlobStoreResource:
    """Connection string, else account URL with a key, a SAS token or DefaultAzureCredential."""
    container = (env_value("ML_ASSETS_CONTAINER") or "ml-assets").strip()
    if not _CONTAINER_NAME.match(container):
        raise EnvConfigError(
            f"ML_ASSETS_CONTAINER={container!r} is not a valid Azure container name "
            "(3-63 lowercase letters, digits and single hyphens)"
        )
    connection_string, url = env_value("AZURE_STORAGE_CONNECTION_STRING"), env_value("AZURE_STORAGE_ACCOUNT_URL")
    if connection_string:
        _check_connection_string(connection_string)
        credentials: dict = {"azure_connection_string": _secret("AZURE_STORAGE_CONNECTION_STRING")}
    elif url:
        _check_account_url(url)
        _check_key_or_sas(env_value("AZURE_STORAGE_KEY"), env_value("AZURE_STORAGE_SAS_TOKEN"))
        credentials = {
            "azure_account_url": url.strip(),
            "azure_account_key": _secret("AZURE_STORAGE_KEY"),
            "azure_sas_token": _secret("AZURE_STORAGE_SAS_TOKEN"),
        }
    else:
        raise EnvConfigError(
            f"{ENV_VAR}=azure needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_URL "
            "(with AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, or neither for DefaultAzureCredential); "
            "neither is set"
        )
    return BlobStoreResource(
        backend="azure",
        container=container,
        spark_filesystem=spark_filesystem(),
        cache_dir=_data_dir("cache", "ML_ASSETS_CACHE_DIR"),
        timeout_s=store_timeout_s(),
        **credentials,
    )


def _smtp_port() -> int:
    value = env_value("SMTP_PORT") or "587"
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise EnvConfigError(f"SMTP_PORT={value!r} is not a port number (1-65535)")
    return port


def _addresses(name: str, default: str) -> list[str]:
    addresses = [a.strip() for a in (env_value(name) or default).split(",") if a.strip()]
    bad = [a for a in addresses if "@" not in a]
    if not addresses or bad:
        raise EnvConfigError(f"{name} must hold e-mail addresses (comma-separated), got {bad or 'none'}")
    return addresses


def email_resource() -> EmailResource:
    """SMTP when SMTP_HOST is set (login from SMTP_USER / SMTP_PASSWORD), else the outbox folder."""
    host, user, password = env_value("SMTP_HOST"), env_value("SMTP_USER"), env_value("SMTP_PASSWORD")
    port, starttls = _smtp_port(), env_flag("SMTP_STARTTLS", True)
    if user and not password:
        raise EnvConfigError("SMTP_USER is set but SMTP_PASSWORD is not: the SMTP login needs both")
    if password and not user:
        raise EnvConfigError("SMTP_PASSWORD is set but SMTP_USER is not: the SMTP login needs both")
    if user and not host:
        raise EnvConfigError("SMTP_USER is set but SMTP_HOST is not: reports would not go over SMTP")
    settings: dict = {
        "outbox_dir": _data_dir("outbox", "ML_ASSETS_OUTBOX_DIR"),
        "sender": _addresses("ML_ASSETS_EMAIL_FROM", "ml-assets@localhost")[0],
        "recipients": _addresses("ML_ASSETS_EMAIL_TO", "ml-team@localhost"),
    }
    if host:
        settings |= {"smtp_host": host.strip(), "smtp_port": port, "smtp_starttls": starttls}
        if user:
            settings |= {"smtp_user": user.strip(), "smtp_password": _secret("SMTP_PASSWORD")}
    return EmailResource(**settings)


def build_resources(blob_store: BlobStoreResource, spark: LazySparkResource | None = None,
                    email: EmailResource | None = None) -> dict:
    """One shared instance per resource, so the IO manager and the assets see the same objects."""
    spark = spark or LazySparkResource(spark_config=spark_config())
    return {
        "blob_store": blob_store,
        "pyspark": spark,
        "spark_io": SparkParquetIOManager(blob_store=blob_store, pyspark=spark),
        "email": email or email_resource(),
    }


def resources_for_environment(env: str | None = None) -> dict:
    """Every resource of ML_ASSETS_ENV (or `env`); raises EnvConfigError listing each bad variable."""
    env = env or (env_value(ENV_VAR) or "local").strip()
    stores: dict[str, Callable[[], BlobStoreResource]] = {"local": local_blob_store, "azure": azure_blob_store}
    if env not in stores:
        raise EnvConfigError(f"{ENV_VAR}={env!r} is not one of {', '.join(ENVIRONMENTS)}")
    built: dict = {}
    problems: list[str] = []
    for name, build in (("blob_store", stores[env]), ("pyspark", lambda: LazySparkResource(spark_config=spark_config())),
                        ("email", email_resource)):
        try:
            built[name] = build()
        except EnvConfigError as exc:
            problems.append(str(exc))
    try:
        pool_limits()  # applied by ensure_pool_limits; checked here with the rest
    except EnvConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise EnvConfigError("; ".join(problems) if len(problems) == 1 else
                             f"{len(problems)} problems in the environment: " + "; ".join(problems))
    return build_resources(built["blob_store"], built["pyspark"], built["email"])
