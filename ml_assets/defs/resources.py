"""Resources per environment, built from environment variables: the one place that reads them.

ML_ASSETS_ENV=local (default, everything embedded) or azure. Dagster runs (through
`ml_assets.definitions`), the CLI (`serve`, `rollback`, `history`, `land`, `demo`) and the
replay all get their resources from `resources_for_environment`.

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
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import dagster as dg

from ml_assets.defs.execution import SPARK_POOL, TRAINING_POOL
from ml_assets.resources.blob_store import DEFAULT_STORE_TIMEOUT_S, BlobStoreResource
from ml_assets.resources.email import EmailResource
from ml_assets.resources.spark import LazySparkResource
from ml_assets.resources.spark_io import SparkParquetIOManager

ENV_VAR = "ML_ASSETS_ENV"
ENVIRONMENTS = ("local", "azure")

# Local Spark that stays on loopback and keeps shuffles small for day-sized data.
DEFAULT_SPARK_CONFIG: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.app.name": "ml_assets",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.memory": "2g",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # One shuffle partition per local core: a day or a week of rows is small, and every extra
    # partition is one more task (and, downstream, one more file) per stage. On 2 cores, 2 instead
    # of 4 made a weekly features+labels+clusters run ~0.2 s faster, with identical results.
    "spark.sql.shuffle.partitions": str(max(os.cpu_count() or 2, 2)),
    "spark.sql.session.timeZone": "UTC",
    # Reads pass one local folder per day; above the default 32 paths Spark would start a
    # distributed listing job, which costs more than listing a year of folders in the driver.
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
    # Without Hadoop's native library every file the local file system creates forks a `chmod`
    # process; the checksum layer adds a .crc file (one more fork) per Parquet file. The raw local
    # file system drops the .crc files (stored data is unchanged: .crc is not data). For a
    # local[...] master LazySparkResource then replaces this exact value with
    # ml_assets.hadoop.NoForkLocalFileSystem, which sets the same modes inside the JVM (no chmod
    # process at all), when a JDK can build its jar (ml_assets/storage/hadoop_local.py). Any other
    # value, or a cluster master, is kept as given.
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
}

# Azure's rule for container names: 3-63 lowercase letters, digits and single hyphens.
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class EnvConfigError(ValueError):
    """An environment variable is missing or malformed; the message names it (never a secret's value)."""


SPEC_VAR = "ML_ASSETS_SPEC"
DEFAULT_SPEC = "flights"


def spec_name() -> str:
    """ML_ASSETS_SPEC: the active dataset spec, a bundled spec's name or a YAML path (default flights)."""
    return (_env(SPEC_VAR) or DEFAULT_SPEC).strip()


def select_spec(name_or_path: str) -> None:
    """Make a spec the active one of this process and of the processes it starts.

    Call it before ``ml_assets.definitions`` is imported: the definitions are built for one spec.
    The spec is loaded here, so a bad name or file fails now with the spec's own error.
    """
    import sys

    from ml_assets.spec import load_spec

    path = Path(name_or_path).expanduser()
    value = str(path.resolve()) if path.suffix in (".yaml", ".yml") or path.exists() else name_or_path.strip()
    spec = load_spec(value)
    loaded = sys.modules.get("ml_assets.defs.dataset")
    if loaded is not None and spec != loaded.SPEC:
        raise EnvConfigError(f"spec {spec.name!r} ({value}) cannot be selected: this process already loaded the "
                             f"definitions of spec {loaded.SPEC.name!r}")
    os.environ[SPEC_VAR] = value


def _env(name: str) -> str | None:
    """The variable's value; unset and blank are the same."""
    value = os.environ.get(name)
    return value if value and value.strip() else None


def _secret(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if _env(name) else None


def _flag(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    if value.strip().lower() not in _TRUE + _FALSE:
        raise EnvConfigError(f"{name}={value!r} is not a boolean: use one of {', '.join(_TRUE + _FALSE)}")
    return value.strip().lower() in _TRUE


def spark_config() -> dict[str, str]:
    """Defaults, then ML_ASSETS_SPARK_MASTER, then ML_ASSETS_SPARK_CONF (a JSON object) on top."""
    config = dict(DEFAULT_SPARK_CONFIG)
    if _env("ML_ASSETS_SPARK_MASTER"):
        config["spark.master"] = os.environ["ML_ASSETS_SPARK_MASTER"].strip()
    if not config["spark.master"].startswith("local"):
        # Executors on other hosts connect back to the driver: loopback only suits local[*]. Spark
        # then takes SPARK_LOCAL_IP or the host's address; set spark.driver.host in ML_ASSETS_SPARK_CONF
        # to pin the address the workers reach.
        for key in ("spark.driver.host", "spark.driver.bindAddress"):
            config.pop(key)
    overrides = _env("ML_ASSETS_SPARK_CONF")
    if overrides:
        try:
            parsed = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise EnvConfigError(f"ML_ASSETS_SPARK_CONF is not a JSON object: {exc}") from None
        if not isinstance(parsed, dict):
            raise EnvConfigError("ML_ASSETS_SPARK_CONF must be a JSON object of Spark settings")
        config.update({str(k): str(v) for k, v in parsed.items()})
    return config


EXECUTOR_VAR = "ML_ASSETS_EXECUTOR"
EXECUTORS = ("in_process", "celery")
_BROKER_SCHEMES = ("redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp")
# Redis hands an unacknowledged step back to the queue after this long (a worker lost whole);
# it must exceed the longest step, or a step still running is started a second time.
DEFAULT_VISIBILITY_TIMEOUT_S = 3600


@dataclass(frozen=True)
class CelerySettings:
    """The cluster profile's Celery executor and workers (ML_ASSETS_EXECUTOR=celery)."""

    broker_url: str
    backend_url: str
    worker_concurrency: int
    visibility_timeout_s: int
    max_deliveries: int = 3


def executor_name() -> str:
    """ML_ASSETS_EXECUTOR: in_process (default: every step in the run's process) or celery."""
    name = (_env(EXECUTOR_VAR) or "in_process").strip().lower().replace("-", "_")
    if name not in EXECUTORS:
        raise EnvConfigError(f"{EXECUTOR_VAR}={os.environ[EXECUTOR_VAR]!r} is not one of {', '.join(EXECUTORS)}")
    return name


def _positive_int(name: str, default: int) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise EnvConfigError(f"{name}={value!r} is not a positive whole number")
    return number


def _scheme(name: str, url: str, allowed: tuple[str, ...] | None) -> str:
    """The URL's scheme, checked; the message never repeats the URL (it may hold a password)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme or (allowed is not None and scheme not in allowed):
        raise EnvConfigError(f"{name} is not a Celery URL of scheme {', '.join(allowed or ('<scheme>',))}:// "
                             f"(got scheme {scheme or 'none'!r}), e.g. redis://redis:6379/0 or "
                             "amqp://user:password@rabbitmq:5672//")
    return scheme


def celery_settings() -> CelerySettings:
    """ML_ASSETS_CELERY_BROKER_URL (required), ML_ASSETS_CELERY_BACKEND_URL (default: the Redis
    broker itself, rpc:// for RabbitMQ), ML_ASSETS_CELERY_WORKER_CONCURRENCY (steps one worker runs
    at once, default 1), ML_ASSETS_CELERY_VISIBILITY_TIMEOUT_S (Redis, default 3600),
    ML_ASSETS_CELERY_MAX_DELIVERIES (starts of one submitted step by workers lost before it ended, default 3)."""
    broker = _env("ML_ASSETS_CELERY_BROKER_URL")
    if broker is None:
        raise EnvConfigError(f"{EXECUTOR_VAR}=celery needs ML_ASSETS_CELERY_BROKER_URL (e.g. "
                             "redis://redis:6379/0 or amqp://user:password@rabbitmq:5672//); it is not set")
    scheme = _scheme("ML_ASSETS_CELERY_BROKER_URL", broker.strip(), _BROKER_SCHEMES)
    backend = _env("ML_ASSETS_CELERY_BACKEND_URL")
    if backend is not None:
        _scheme("ML_ASSETS_CELERY_BACKEND_URL", backend.strip(), None)
    default_backend = broker.strip() if scheme in ("redis", "rediss", "sentinel") else "rpc://"
    return CelerySettings(
        broker_url=broker.strip(),
        backend_url=(backend or default_backend).strip(),
        worker_concurrency=_positive_int("ML_ASSETS_CELERY_WORKER_CONCURRENCY", 1),
        visibility_timeout_s=_positive_int("ML_ASSETS_CELERY_VISIBILITY_TIMEOUT_S", DEFAULT_VISIBILITY_TIMEOUT_S),
        max_deliveries=_positive_int("ML_ASSETS_CELERY_MAX_DELIVERIES", 3),
    )


SPARK_FILESYSTEMS = ("download", "abfss", "wasbs")


def spark_filesystem() -> str:
    """ML_ASSETS_SPARK_FS: how Spark executors reach the Azure container (download, abfss, wasbs)."""
    value = (_env("ML_ASSETS_SPARK_FS") or "download").strip().lower()
    if value not in SPARK_FILESYSTEMS:
        raise EnvConfigError(f"ML_ASSETS_SPARK_FS={value!r} is not one of {', '.join(SPARK_FILESYSTEMS)}")
    return value


def pool_limits() -> dict[str, int]:
    """Dagster pool limits from config (steps at once on the cluster profile, runs on the others).

    ML_ASSETS_SPARK_POOL_LIMIT: Spark steps at once, about total executor cores / cores one step
    keeps busy (e.g. 2 for two 1-core workers). ML_ASSETS_TRAINING_POOL_LIMIT: training steps at
    once, Celery workers x training steps one worker can hold (a Keras or scikit-learn fit of the
    training window in its memory), e.g. 2 for two workers of one each. Unset: not in the result
    (the instance's default_limit applies, 1 in dagster.yaml).
    """
    limits = {}
    for pool, name in ((SPARK_POOL, "ML_ASSETS_SPARK_POOL_LIMIT"), (TRAINING_POOL, "ML_ASSETS_TRAINING_POOL_LIMIT")):
        value = _env(name)
        if value is None:
            continue
        try:
            limits[pool] = int(value)
        except ValueError:
            limits[pool] = 0
        if limits[pool] < 1:
            raise EnvConfigError(f"{name}={value!r} is not a whole number >= 1 (the {pool!r} pool limit)")
    return limits


def _data_dir(name: str, env_var: str) -> str:
    return str(Path(_env(env_var) or f".data/{name}").resolve())


def store_timeout_s() -> float:
    """ML_ASSETS_STORE_TIMEOUT_S: seconds before a request to the store fails (default 120)."""
    value = _env("ML_ASSETS_STORE_TIMEOUT_S")
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
    container = (_env("ML_ASSETS_CONTAINER") or "ml-assets").strip()
    if not _CONTAINER_NAME.match(container):
        raise EnvConfigError(
            f"ML_ASSETS_CONTAINER={container!r} is not a valid Azure container name "
            "(3-63 lowercase letters, digits and single hyphens)"
        )
    connection_string, url = _env("AZURE_STORAGE_CONNECTION_STRING"), _env("AZURE_STORAGE_ACCOUNT_URL")
    if connection_string:
        _check_connection_string(connection_string)
        credentials: dict = {"azure_connection_string": _secret("AZURE_STORAGE_CONNECTION_STRING")}
    elif url:
        _check_account_url(url)
        _check_key_or_sas(_env("AZURE_STORAGE_KEY"), _env("AZURE_STORAGE_SAS_TOKEN"))
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
    value = _env("SMTP_PORT") or "587"
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise EnvConfigError(f"SMTP_PORT={value!r} is not a port number (1-65535)")
    return port


def _addresses(name: str, default: str) -> list[str]:
    addresses = [a.strip() for a in (_env(name) or default).split(",") if a.strip()]
    bad = [a for a in addresses if "@" not in a]
    if not addresses or bad:
        raise EnvConfigError(f"{name} must hold e-mail addresses (comma-separated), got {bad or 'none'}")
    return addresses


def email_resource() -> EmailResource:
    """SMTP when SMTP_HOST is set (login from SMTP_USER / SMTP_PASSWORD), else the outbox folder."""
    host, user, password = _env("SMTP_HOST"), _env("SMTP_USER"), _env("SMTP_PASSWORD")
    port, starttls = _smtp_port(), _flag("SMTP_STARTTLS", True)
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
    env = env or (_env(ENV_VAR) or "local").strip()
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
