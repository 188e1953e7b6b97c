"""Spark settings from the environment: driver address on a cluster, pool sizes, and how executors
reach an Azure store (hadoop-azure URIs and settings; the connector's jars cannot be fetched here)."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml

from ml_assets.defs.execution import SPARK_POOL, TRAINING_POOL, ensure_pool_limits
from ml_assets.defs.resources import resources_for_environment
from ml_assets.defs.settings import EnvConfigError, spark_config
from ml_assets.resources.spark_io import store_for_spark
from ml_assets.storage import hadoop_azure
from ml_assets.storage.hadoop_azure import HadoopAzureConfigError

REPO = Path(__file__).resolve().parents[2]


def test_loopback_driver_only_for_a_local_master(ml_env):
    assert spark_config()["spark.driver.host"] == "127.0.0.1"
    ml_env(ML_ASSETS_SPARK_MASTER="spark://spark-master:7077")
    cluster = spark_config()
    assert cluster["spark.master"] == "spark://spark-master:7077"
    assert "spark.driver.host" not in cluster and "spark.driver.bindAddress" not in cluster
    ml_env(ML_ASSETS_SPARK_CONF='{"spark.driver.host": "10.1.2.3", "spark.executor.memory": "4g"}')
    pinned = spark_config()
    assert pinned["spark.driver.host"] == "10.1.2.3" and pinned["spark.executor.memory"] == "4g"


def _repo_instance(tmp_path):
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config.pop("storage", None)
    return dg.instance_for_test(overrides=config, temp_dir=str(tmp_path))


def test_spark_pool_limit_from_the_environment(ml_env, tmp_path):
    with _repo_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        assert ensure_pool_limits(instance) == []
        assert {p.name: p.limit for p in storage.get_pool_limits()} == {SPARK_POOL: 1, TRAINING_POOL: 1}  # dagster.yaml
        ml_env(ML_ASSETS_SPARK_POOL_LIMIT="2")
        assert ensure_pool_limits(instance) == []
        assert {p.name: p.limit for p in storage.get_pool_limits()} == {SPARK_POOL: 2, TRAINING_POOL: 1}
        storage.set_concurrency_slots(SPARK_POOL, 5)  # config is the source of truth when set
        ensure_pool_limits(instance)
        assert {p.name: p.limit for p in storage.get_pool_limits()}[SPARK_POOL] == 2


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_spark_pool_limit_names_the_variable(ml_env, value):
    ml_env(ML_ASSETS_SPARK_POOL_LIMIT=value)
    with pytest.raises(EnvConfigError, match=f"ML_ASSETS_SPARK_POOL_LIMIT='{value}'"):
        resources_for_environment("local")


@pytest.mark.azurite
def test_bad_spark_filesystem_names_the_variable(ml_env, azurite):
    ml_env(ML_ASSETS_ENV="azure", AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
           ML_ASSETS_SPARK_FS="hdfs")
    with pytest.raises(EnvConfigError, match="ML_ASSETS_SPARK_FS='hdfs' is not one of download, abfss, wasbs"):
        resources_for_environment()


def test_hadoop_azure_uris_and_credentials():
    assert hadoop_azure.root_uri("abfss", "ml-assets", "acct") == "abfss://ml-assets@acct.dfs.core.windows.net"
    assert hadoop_azure.root_uri("wasbs", "ml-assets", "acct") == "wasbs://ml-assets@acct.blob.core.windows.net"
    assert hadoop_azure.account_name(account_url="https://acct.blob.core.windows.net/") == "acct"
    assert hadoop_azure.hadoop_settings("wasbs", "c", "acct", sas="?sv=1&sig=x") == {
        "fs.azure.sas.c.acct.blob.core.windows.net": "sv=1&sig=x"}
    assert hadoop_azure.hadoop_settings("abfss", "c", "acct", sas="sv=1&sig=x") == {
        "fs.azure.account.auth.type.acct.dfs.core.windows.net": "SAS",
        "fs.azure.sas.token.provider.type.acct.dfs.core.windows.net":
            "org.apache.hadoop.fs.azurebfs.sas.FixedSASTokenProvider",
        "fs.azure.sas.fixed.token.acct.dfs.core.windows.net": "sv=1&sig=x",
    }
    managed = hadoop_azure.hadoop_settings("abfss", "c", "acct")
    assert managed["fs.azure.account.auth.type.acct.dfs.core.windows.net"] == "OAuth"
    with pytest.raises(HadoopAzureConfigError, match="wasbs:// needs an account key or a SAS token"):
        hadoop_azure.hadoop_settings("wasbs", "c", "acct")
    with pytest.raises(HadoopAzureConfigError, match="cannot tell the storage account"):
        hadoop_azure.account_name(account_url="http://127.0.0.1:10000/devstoreaccount1")
    with pytest.raises(HadoopAzureConfigError, match="'hdfs' is not one of abfss, wasbs"):
        hadoop_azure.root_uri("hdfs", "c", "acct")


class _HadoopConf(dict):
    def set(self, key, value):
        self[key] = value


def _session(master: str):
    """What store_for_spark reads of a SparkSession: its master and its Hadoop configuration."""
    conf = _HadoopConf()
    context = SimpleNamespace(master=master, _jsc=SimpleNamespace(hadoopConfiguration=lambda: conf))
    return SimpleNamespace(sparkContext=context), conf


def _azure_store(ml_env, azurite, filesystem: str):
    ml_env(ML_ASSETS_ENV="azure", AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
           ML_ASSETS_CONTAINER=f"ml-{uuid.uuid4().hex[:12]}", ML_ASSETS_SPARK_FS=filesystem)
    return resources_for_environment()["blob_store"]


@pytest.mark.azurite
def test_azure_download_mode_is_refused_on_a_cluster_master(ml_env, azurite):
    store = _azure_store(ml_env, azurite, "download")
    local, _ = _session("local[2]")
    assert not store_for_spark(local, store).shared  # today's path: copies in the driver's cache
    cluster, _ = _session("spark://spark-master:7077")
    with pytest.raises(dg.DagsterInvariantViolationError, match="set ML_ASSETS_SPARK_FS=abfss"):
        store_for_spark(cluster, store)


@pytest.mark.azurite
def test_azure_abfss_mode_hands_executors_container_uris(ml_env, azurite, tmp_path):
    store = _azure_store(ml_env, azurite, "abfss")
    part = tmp_path / "v" / "part-0.parquet"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"PAR1")
    version = store.datasets().publish("features", "2013-01-01", part.parent)

    session, hadoop = _session("spark://spark-master:7077")
    datasets = store_for_spark(session, store)
    container = store.container
    root = f"abfss://{container}@devstoreaccount1.dfs.core.windows.net"
    assert datasets.shared and datasets.spark_root == root
    assert datasets.spark_paths("features", ["2013-01-01"]) == [f"{root}/{version.prefix}"]
    assert datasets.spark_uri(datasets.new_staging("features")).startswith(f"{root}/_staging/features-")
    # The account key reaches the session's Hadoop configuration at run time, not the Spark config.
    key = dict(p.split("=", 1) for p in azurite.connection_string.split(";") if p)["AccountKey"]
    assert hadoop == {"fs.azure.account.key.devstoreaccount1.dfs.core.windows.net": key}
    assert key not in str(spark_config())
