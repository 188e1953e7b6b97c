# ml_assets production image: one image, every role by command (no `dagster dev`).
#
#   docker build -t ml-assets .
#   code server: dagster code-server start -m ml_assets.definitions -h 0.0.0.0 -p 4000 --location-name ml_assets
#   daemon:      dagster-daemon run -w /opt/ml_assets/deploy/workspace.yaml
#   webserver:   dagster-webserver -w /opt/ml_assets/deploy/workspace.yaml -h 0.0.0.0 -p 3000 (default CMD)
#
# docker-compose.yml runs the three with PostgreSQL and Azurite. The instance profile is the
# PostgreSQL one (deploy/dagster.postgres.yaml): DAGSTER_POSTGRES_* come from the environment.

# ---------------------------------------------------------------------------------------------
# Build stage: a virtualenv with the runtime lock (requirements.lock, no dev extras) + the package
# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never

RUN pip install "uv==0.13.9" \
 && python -m venv /opt/venv

# Dependencies layer: rebuilt only when the runtime lock changes.
COPY requirements.lock /tmp/requirements.lock
RUN uv pip install --python /opt/venv/bin/python -r /tmp/requirements.lock

# The project itself (not editable: the image carries no source tree to edit).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ml_assets ./ml_assets
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
 && /opt/venv/bin/python -c "import ml_assets.services, ml_assets.cli"

# ---------------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

# Java for Spark (bookworm's default-jdk-headless is OpenJDK 17): the JDK, not only the runtime, so
# that a local[*] master compiles ml_assets/storage/hadoop/NoForkLocalFileSystem.java on first use and
# writes without a `chmod` process per file. procps gives Spark's scripts `ps`; tini is PID 1: it
# forwards SIGTERM to the service and reaps the run workers it leaves.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends default-jdk-headless procps tini \
 && rm -rf /var/lib/apt/lists/*

# SPARK_LOCAL_IP is left unset: local[*] keeps its driver on loopback (ml_assets/defs/settings.py),
# and a driver of a Spark cluster must bind an address the workers reach (set it per service).
# DAGSTER_EVENT_BATCH_SIZE: a single-run range writes one materialization event per partition;
# with PostgreSQL storage they are inserted 100 per statement instead of one commit each.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_DISABLE_TELEMETRY=1 \
    DAGSTER_EVENT_BATCH_SIZE=100 \
    ML_ASSETS_WORKSPACE=/opt/ml_assets/deploy/workspace.yaml \
    ML_ASSETS_CODE_SERVER_HOST=code-server \
    ML_ASSETS_CODE_SERVER_PORT=4000 \
    ML_ASSETS_STORE_ROOT=/var/lib/ml_assets/store \
    ML_ASSETS_CACHE_DIR=/var/lib/ml_assets/cache \
    ML_ASSETS_OUTBOX_DIR=/var/lib/ml_assets/outbox \
    PYSPARK_PYTHON=/opt/venv/bin/python

# A non-root user owns everything the services write: DAGSTER_HOME/storage (compute logs, local
# artifacts) and /var/lib/ml_assets (model cache, outbox, local store), both volumes in compose.
RUN groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
 && mkdir -p /opt/dagster/home/storage /opt/ml_assets/deploy \
             /var/lib/ml_assets/store /var/lib/ml_assets/cache /var/lib/ml_assets/outbox \
 && chown -R dagster:dagster /opt/dagster /var/lib/ml_assets

COPY --from=build /opt/venv /opt/venv
# The production instance profile (PostgreSQL) and the workspace that points at the code server.
COPY deploy/dagster.postgres.yaml /opt/dagster/home/dagster.yaml
COPY deploy/workspace.yaml /opt/ml_assets/deploy/workspace.yaml

USER dagster:dagster
WORKDIR /opt/dagster/home
# The no-fork local file system's jar, built now into ~/.cache/ml_assets/hadoop/ (not a volume), so
# that no service compiles it at its first local Spark session.
RUN python -c "from ml_assets.storage.hadoop_local import no_fork_jar; assert no_fork_jar(), 'no jar built'"

EXPOSE 3000 4000
# Whichever role runs here: webserver GET /server_info, code server gRPC health, daemon liveness.
HEALTHCHECK --interval=30s --timeout=20s --start-period=120s --retries=3 \
  CMD ["python", "-m", "ml_assets.services", "health"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dagster-webserver", "-w", "/opt/ml_assets/deploy/workspace.yaml", "-h", "0.0.0.0", "-p", "3000"]
