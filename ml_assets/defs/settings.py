"""Settings of the process read from environment variables: the dataset spec, Spark, the executor
and Celery, the Dagster pool limits.

With ml_assets/defs/resources.py, which builds the resources (store, e-mail, Spark) from the same
kind of variables through the helpers here, this is the one place that reads the environment.
Every value is checked when read: a missing or malformed one raises EnvConfigError naming the
variable (never repeating a secret's value), instead of failing later inside a run or a command.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ml_assets.defs.execution import SPARK_POOL, TRAINING_POOL

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

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class EnvConfigError(ValueError):
    """An environment variable is missing or malformed; the message names it (never a secret's value)."""


def env_value(name: str) -> str | None:
    """The variable's value; unset and blank are the same."""
    value = os.environ.get(name)
    return value if value and value.strip() else None


def env_flag(name: str, default: bool) -> bool:
    value = env_value(name)
    if value is None:
        return default
    if value.strip().lower() not in _TRUE + _FALSE:
        raise EnvConfigError(f"{name}={value!r} is not a boolean: use one of {', '.join(_TRUE + _FALSE)}")
    return value.strip().lower() in _TRUE


SPEC_VAR = "ML_ASSETS_SPEC"
DEFAULT_SPEC = "flights"


def spec_name() -> str:
    """ML_ASSETS_SPEC: the active dataset spec, a bundled spec's name or a YAML path (default flights)."""
    return (env_value(SPEC_VAR) or DEFAULT_SPEC).strip()


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

def spark_config() -> dict[str, str]:
    """Defaults, then ML_ASSETS_SPARK_MASTER, then ML_ASSETS_SPARK_CONF (a JSON object) on top."""
    config = dict(DEFAULT_SPARK_CONFIG)
    if env_value("ML_ASSETS_SPARK_MASTER"):
        config["spark.master"] = os.environ["ML_ASSETS_SPARK_MASTER"].strip()
    if not config["spark.master"].startswith("local"):
        # Executors on other hosts connect back to the driver: loopback only suits local[*]. Spark
        # then takes SPARK_LOCAL_IP or the host's address; set spark.driver.host in ML_ASSETS_SPARK_CONF
        # to pin the address the workers reach.
        for key in ("spark.driver.host", "spark.driver.bindAddress"):
            config.pop(key)
    overrides = env_value("ML_ASSETS_SPARK_CONF")
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
    name = (env_value(EXECUTOR_VAR) or "in_process").strip().lower().replace("-", "_")
    if name not in EXECUTORS:
        raise EnvConfigError(f"{EXECUTOR_VAR}={os.environ[EXECUTOR_VAR]!r} is not one of {', '.join(EXECUTORS)}")
    return name


def _positive_int(name: str, default: int) -> int:
    value = env_value(name)
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
    broker = env_value("ML_ASSETS_CELERY_BROKER_URL")
    if broker is None:
        raise EnvConfigError(f"{EXECUTOR_VAR}=celery needs ML_ASSETS_CELERY_BROKER_URL (e.g. "
                             "redis://redis:6379/0 or amqp://user:password@rabbitmq:5672//); it is not set")
    scheme = _scheme("ML_ASSETS_CELERY_BROKER_URL", broker.strip(), _BROKER_SCHEMES)
    backend = env_value("ML_ASSETS_CELERY_BACKEND_URL")
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
    value = (env_value("ML_ASSETS_SPARK_FS") or "download").strip().lower()
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
        value = env_value(name)
        if value is None:
            continue
        try:
            limits[pool] = int(value)
        except ValueError:
            limits[pool] = 0
        if limits[pool] < 1:
            raise EnvConfigError(f"{name}={value!r} is not a whole number >= 1 (the {pool!r} pool limit)")
    return limits
