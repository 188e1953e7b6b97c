"""Instance profiles: the embedded default (SQLite), PostgreSQL production and the cluster profile."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROFILE = REPO_ROOT / "dagster.yaml"
POSTGRES_PROFILE = REPO_ROOT / "deploy" / "dagster.postgres.yaml"
CLUSTER_PROFILE = REPO_ROOT / "deploy" / "dagster.cluster.yaml"
PG_VARS = {
    "username": "DAGSTER_POSTGRES_USER",
    "password": "DAGSTER_POSTGRES_PASSWORD",
    "hostname": "DAGSTER_POSTGRES_HOSTNAME",
    "db_name": "DAGSTER_POSTGRES_DB",
    "port": "DAGSTER_POSTGRES_PORT",
}

pytestmark = pytest.mark.integration

days = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-01-05")


@dg.asset(partitions_def=days, check_specs=[dg.AssetCheckSpec("has_rows", asset="raw_like",
                                                               blocking=True)])
def raw_like(context: dg.AssetExecutionContext):
    """A raw-shaped asset: daily partition, a blocking check, no data work."""
    yield dg.MaterializeResult(metadata={"day": context.partition_key, "rows": 3})
    yield dg.AssetCheckResult(passed=True, check_name="has_rows")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def postgres_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(POSTGRES_PROFILE, home / "dagster.yaml")
    return home


def test_profiles_are_identical_apart_from_storage():
    default, production = load(DEFAULT_PROFILE), load(POSTGRES_PROFILE)
    assert "storage" not in default  # embedded default: SQLite inside DAGSTER_HOME
    # ...through the tuned SQLite storage, which the instance class makes the default storage.
    assert default["instance_class"] == {"module": "ml_assets.defs.instance_storage",
                                         "class": "TunedSqliteInstance"}
    assert {k: v for k, v in production.items() if k != "storage"} == {
        k: v for k, v in default.items() if k != "instance_class"
    }, "deploy/dagster.postgres.yaml drifted from dagster.yaml: mirror every non-storage change"


def test_cluster_profile_is_the_postgres_profile_with_step_level_pools():
    production, cluster = load(POSTGRES_PROFILE), load(CLUSTER_PROFILE)
    assert {k: v for k, v in cluster.items() if k != "concurrency"} == {
        k: v for k, v in production.items() if k != "concurrency"
    }, "deploy/dagster.cluster.yaml drifted from deploy/dagster.postgres.yaml apart from concurrency"
    # Steps (on Celery workers) claim pool slots, so "spark"/"training" limits bound steps, not runs.
    assert cluster["concurrency"]["pools"]["granularity"] == "op"
    assert cluster["concurrency"]["runs"]["max_concurrent_runs"] > production["concurrency"]["runs"][
        "max_concurrent_runs"]


def test_cluster_profile_loads_with_op_granularity(tmp_path, monkeypatch, postgres):
    from dagster._core.instance.config import PoolGranularity

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(CLUSTER_PROFILE, home / "dagster.yaml")
    for var, value in postgres.fresh_db().items():
        monkeypatch.setenv(var, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.pool_granularity == PoolGranularity.OP
        assert pools.default_pool_limit == 1
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.event_log_storage.supports_global_concurrency_limits


def test_postgres_profile_reads_every_connection_setting_from_env():
    storage = load(POSTGRES_PROFILE)["storage"]
    assert list(storage) == ["postgres"]
    db = storage["postgres"]["postgres_db"]
    assert {key: db[key] for key in PG_VARS} == {key: {"env": var} for key, var in PG_VARS.items()}
    assert db["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1 would want psycopg 3 otherwise


def test_profile_names_a_missing_env_var(tmp_path, monkeypatch, postgres):
    home = postgres_home(tmp_path)
    for var, value in postgres.env().items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("DAGSTER_POSTGRES_PASSWORD")
    with pytest.raises(Exception, match="DAGSTER_POSTGRES_PASSWORD"):
        dg.DagsterInstance.from_config(str(home))


def test_runs_and_events_land_in_postgres_and_migrate_works(tmp_path, monkeypatch, postgres):
    env = postgres.fresh_db()
    home = postgres_home(tmp_path)
    for var, value in env.items():
        monkeypatch.setenv(var, value)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = dg.materialize([raw_like], instance=instance, partition_key="2013-01-02")
        assert result.success
        run_id = result.run_id

    with psycopg2.connect(postgres.dsn(env["DAGSTER_POSTGRES_DB"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute("SELECT dagster_event_type, partition FROM event_logs WHERE run_id = %s "
                    "AND dagster_event_type IN ('ASSET_MATERIALIZATION', 'ASSET_CHECK_EVALUATION')",
                    (run_id,))
        rows = sorted(cur.fetchall(), key=lambda row: row[0])
        assert [event for event, _ in rows] == ["ASSET_CHECK_EVALUATION", "ASSET_MATERIALIZATION"]
        assert rows[1][1] == "2013-01-02"
        cur.execute("SELECT count(*) FROM asset_check_executions WHERE run_id = %s "
                    "AND check_name = 'has_rows' AND execution_status = 'SUCCEEDED'", (run_id,))
        assert cur.fetchone() == (1,)
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s "
                    "AND dagster_event_type = %s", (run_id, dg.DagsterEventType.RUN_SUCCESS.value))
        assert cur.fetchone() == (1,)
    conn.close()
    # Nothing went to SQLite files in DAGSTER_HOME.
    assert not list(home.rglob("*.db"))

    # The documented migration command, as an operator runs it after a Dagster upgrade.
    migrate = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "instance", "migrate"],
        env={**os.environ, **env, "DAGSTER_HOME": str(home)},
        capture_output=True, text=True, timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Updating run storage" in migrate.stdout + migrate.stderr
    with psycopg2.connect(postgres.dsn(env["DAGSTER_POSTGRES_DB"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM alembic_version")
        assert cur.fetchone() == (1,)
        cur.execute("SELECT count(*) FROM runs")
        assert cur.fetchone() == (1,)  # migration keeps the history
    conn.close()


def test_postgres_fixture_is_a_real_server_with_password_auth(postgres):
    env = postgres.fresh_db()
    with psycopg2.connect(postgres.dsn(env["DAGSTER_POSTGRES_DB"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database(), count(*) FROM pg_tables "
                    "WHERE schemaname = 'public'")
        assert cur.fetchone() == (postgres.user, env["DAGSTER_POSTGRES_DB"], 0)
    conn.close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                         password="wrong", dbname=postgres.db)
    assert postgres.fresh_db()["DAGSTER_POSTGRES_DB"] != env["DAGSTER_POSTGRES_DB"]


def test_split_services_run_on_the_postgres_profile(tmp_path, postgres):
    """Code server, daemon and webserver share one PostgreSQL instance: heartbeats and ticks land there."""
    from ml_assets.services import start
    from ml_assets_tests.test_services import wait_for_healthy_stack

    env = postgres.fresh_db()
    home = postgres_home(tmp_path)
    with start(home, env=env, log_dir=tmp_path / "logs") as services:
        data = wait_for_healthy_stack(services.webserver_url)
        statuses = data["locationStatusesOrError"]["entries"]
        assert [(s["name"], s["loadStatus"]) for s in statuses] == [("ml_assets", "LOADED")]
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        assert all(d["healthy"] for d in daemons if d["required"]), daemons
        db = env["DAGSTER_POSTGRES_DB"]
        deadline = time.monotonic() + 120
        while True:
            with psycopg2.connect(postgres.dsn(db)) as conn, conn.cursor() as cur:
                cur.execute("SELECT daemon_type FROM daemon_heartbeats")
                heartbeats = {row[0] for row in cur.fetchall()}
                cur.execute("SELECT count(*) FROM job_ticks")
                ticks = cur.fetchone()[0]
            conn.close()
            if ticks or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= heartbeats
        assert ticks > 0  # the sensors running by default ticked, recorded in PostgreSQL
    assert not list(home.rglob("*.db"))
