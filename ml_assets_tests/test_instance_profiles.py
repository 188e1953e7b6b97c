"""Instance profiles: the embedded default (SQLite) and the PostgreSQL production profile."""

from __future__ import annotations

import psycopg2
import pytest


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
