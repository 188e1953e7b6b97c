# ml_assets runtime image: Dagster UI + daemon (`dagster dev`) with local Spark.
#   docker build -t ml-assets .
#   docker run --rm -p 3000:3000 ml-assets
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_DISABLE_TELEMETRY=1 \
    SPARK_LOCAL_IP=127.0.0.1 \
    PYSPARK_PYTHON=/usr/local/bin/python

# Java for Spark (bookworm's default-jre-headless is OpenJDK 17); procps gives Spark's scripts `ps`.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends default-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ml_assets

# Dependencies layer: rebuilt only when the lock (or pyproject) changes.
COPY pyproject.toml requirements.lock ./
RUN pip install "uv==0.13.9" \
 && uv pip install --system -r requirements.lock

# The project itself.
COPY . .
RUN uv pip install --system --no-deps . \
 && mkdir -p "$DAGSTER_HOME" \
 && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

EXPOSE 3000
CMD ["dagster", "dev", "-w", "workspace.yaml", "-h", "0.0.0.0", "-p", "3000"]
