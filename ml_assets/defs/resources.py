"""Resources per environment: ML_ASSETS_ENV=local (default, everything embedded) or azure."""

import json
import os
from pathlib import Path

import dagster as dg

from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.email import EmailResource
from ml_assets.resources.spark import LazySparkResource
from ml_assets.resources.spark_io import SparkParquetIOManager

ENV_VAR = "ML_ASSETS_ENV"

# Local Spark that stays on loopback and keeps shuffles small for day-sized data.
DEFAULT_SPARK_CONFIG: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.app.name": "ml_assets",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.memory": "2g",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    # Reads pass one local folder per day; above the default 32 paths Spark would start a
    # distributed listing job, which costs more than listing a year of folders in the driver.
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
}


def spark_config() -> dict[str, str]:
    """Defaults, then ML_ASSETS_SPARK_MASTER, then ML_ASSETS_SPARK_CONF (a JSON object) on top."""
    config = dict(DEFAULT_SPARK_CONFIG)
    if os.environ.get("ML_ASSETS_SPARK_MASTER"):
        config["spark.master"] = os.environ["ML_ASSETS_SPARK_MASTER"]
    overrides = os.environ.get("ML_ASSETS_SPARK_CONF")
    if overrides:
        try:
            parsed = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ML_ASSETS_SPARK_CONF is not a JSON object: {exc}") from None
        if not isinstance(parsed, dict):
            raise ValueError("ML_ASSETS_SPARK_CONF must be a JSON object of Spark settings")
        config.update({str(k): str(v) for k, v in parsed.items()})
    return config


def _data_dir(name: str, env_var: str) -> str:
    return str(Path(os.environ.get(env_var, f".data/{name}")).resolve())


def local_blob_store() -> BlobStoreResource:
    return BlobStoreResource(
        backend="local",
        local_root=_data_dir("store", "ML_ASSETS_STORE_ROOT"),
        cache_dir=_data_dir("cache", "ML_ASSETS_CACHE_DIR"),
    )


def azure_blob_store() -> BlobStoreResource:
    if os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
        credentials = {"azure_connection_string": dg.EnvVar("AZURE_STORAGE_CONNECTION_STRING")}
    else:
        credentials = {"azure_account_url": dg.EnvVar("AZURE_STORAGE_ACCOUNT_URL")}
        if os.environ.get("AZURE_STORAGE_KEY"):
            credentials["azure_account_key"] = dg.EnvVar("AZURE_STORAGE_KEY")
    return BlobStoreResource(
        backend="azure",
        container=os.environ.get("ML_ASSETS_CONTAINER", "ml-assets"),
        cache_dir=_data_dir("cache", "ML_ASSETS_CACHE_DIR"),
        **credentials,
    )


def email_resource() -> EmailResource:
    """SMTP when SMTP_HOST is set (credentials from SMTP_USER / SMTP_PASSWORD), else the outbox folder."""
    settings: dict = {
        "outbox_dir": _data_dir("outbox", "ML_ASSETS_OUTBOX_DIR"),
        "sender": os.environ.get("ML_ASSETS_EMAIL_FROM", "ml-assets@localhost"),
        "recipients": [r.strip() for r in os.environ.get("ML_ASSETS_EMAIL_TO", "ml-team@localhost").split(",") if r.strip()],
    }
    if os.environ.get("SMTP_HOST"):
        settings |= {
            "smtp_host": dg.EnvVar("SMTP_HOST"),
            "smtp_port": int(os.environ.get("SMTP_PORT", "587")),
            "smtp_starttls": os.environ.get("SMTP_STARTTLS", "true").lower() not in ("0", "false", "no"),
        }
        if os.environ.get("SMTP_USER"):
            settings |= {"smtp_user": dg.EnvVar("SMTP_USER"), "smtp_password": dg.EnvVar("SMTP_PASSWORD")}
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
    env = env or os.environ.get(ENV_VAR, "local")
    stores = {"local": local_blob_store, "azure": azure_blob_store}
    if env not in stores:
        raise ValueError(f"{ENV_VAR}={env!r} is not one of {sorted(stores)}")
    return build_resources(stores[env]())
