# ml_assets developer entry points.
#
#   make demo   - set everything up (venv, Java) and run the main job on embedded defaults
#   make test   - set everything up (venv, Java, Azurite, PostgreSQL, Chromium) and run the whole test suite
#   make up     - start the code server, daemon and webserver as separate processes; `make down` stops them
#
# Every set-up step is idempotent and stamped, so a second run goes straight to the work.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# ---------------------------------------------------------------------------------------------
# Pinned tool versions and paths
# ---------------------------------------------------------------------------------------------
UV_VERSION       := 0.13.9
AZURITE_VERSION  := 3.37.0
JAVA_MIN_VERSION := 17

VENV       := .venv
PY         := $(VENV)/bin/python
UV         := $(VENV)/bin/uv
VENV_STAMP := $(VENV)/.ml_assets-installed.stamp
TOOLS      := .tools
AZURITE    := $(TOOLS)/node_modules/.bin/azurite-blob
HOME_DIR   := .dagster_home

# `make up`: where the webserver and the gRPC code server listen.
UP_HOST      ?= 127.0.0.1
UP_PORT      ?= 3000
UP_GRPC_PORT ?= 4000

# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k storage -x"`.
PYTEST_ARGS ?=
# If set, `make test` writes pytest's own exit code there (make itself exits 2 on any failure).
PYTEST_RC_FILE ?=

# ---------------------------------------------------------------------------------------------
# Environment for every recipe
# ---------------------------------------------------------------------------------------------
export DAGSTER_HOME              := $(CURDIR)/$(HOME_DIR)
export DAGSTER_DISABLE_TELEMETRY := 1
# Loopback for the embedded local[*] Spark; on a host of a real cluster set SPARK_LOCAL_IP (and
# spark.driver.host) to an address the workers can reach.
export SPARK_LOCAL_IP            ?= 127.0.0.1
export PYSPARK_PYTHON            := $(CURDIR)/$(VENV)/bin/python
# Azurite's binaries (azurite-blob, ...) are found on PATH by the test fixtures and by hand.
export PATH                      := $(CURDIR)/$(TOOLS)/node_modules/.bin:$(PATH)
# uv must use the venv's interpreter and never fetch one of its own.
export UV_PYTHON_DOWNLOADS       := never
export DEBIAN_FRONTEND           := noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# `apt_get ARGS...`: apt-get as root, or through passwordless sudo; a clear error otherwise.
APT_GET_FN = apt_get() { \
	  if [ "$$(id -u)" = 0 ]; then apt-get "$$@"; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n -E apt-get "$$@"; \
	  else echo "ERROR: cannot run apt-get (not root, no passwordless sudo)." >&2; return 1; fi; }

.PHONY: help venv java tools services-deps home demo test lint dev up down spark-up spark-down validate bench lock clean

help: ## Show this list of targets
	@echo "ml_assets - make targets (quick start: 'make demo', 'make test')"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: PYTEST_ARGS='...' (extra pytest arguments for 'make test')"

# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------
venv: $(VENV_STAMP) ## Create .venv (Python 3.11) and install requirements-dev.lock + the package (editable)

# The interpreter itself: python3.11 if on PATH, else python3 when it is 3.11.
$(PY):
	@py=""; \
	if command -v python3.11 >/dev/null 2>&1 && python3.11 -c 'import sys' >/dev/null 2>&1; then \
	  py=python3.11; \
	elif command -v python3 >/dev/null 2>&1 \
	     && python3 -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then \
	  py=python3; \
	else \
	  echo "ERROR: Python 3.11 is required (no python3.11 on PATH and python3 is" \
	       "$$(python3 -V 2>&1 || echo missing)). Install Python 3.11 and retry." >&2; \
	  exit 1; \
	fi; \
	echo ">> creating $(VENV) with $$($$py -V 2>&1) ($$(command -v $$py))"; \
	rm -rf $(VENV); \
	$$py -m venv $(VENV) || { \
	  echo "ERROR: '$$py -m venv' failed (on Debian: apt-get install python3.11-venv)." >&2; \
	  rm -rf $(VENV); exit 1; }

$(VENV_STAMP): requirements-dev.lock pyproject.toml | $(PY)
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || { \
	  echo "ERROR: $(VENV) is not Python 3.11 ($$($(PY) -V 2>&1)); run 'make clean' and retry." >&2; \
	  exit 1; }
	@if ! $(UV) --version 2>/dev/null | grep -q '^uv $(UV_VERSION)\b'; then \
	  echo ">> installing uv==$(UV_VERSION) into $(VENV)"; \
	  $(PY) -m pip install --quiet "uv==$(UV_VERSION)"; \
	fi
	@echo ">> installing requirements-dev.lock into $(VENV)"
	$(UV) pip install --python $(PY) -r requirements-dev.lock
	$(UV) pip install --python $(PY) --no-deps -e .
	@touch $@

# The JDK, not only the runtime: with javac, local Spark writes compile and use
# ml_assets/storage/hadoop/NoForkLocalFileSystem.java (no `chmod` process per file written).
java: ## Make sure a Java >= 17 is present (apt-get installs default-jdk-headless when missing)
	@ver() { java -version 2>&1 | awk -F'"' '/version/ {split($$2, v, "."); print (v[1] == "1" ? v[2] : v[1]) + 0; exit}'; }; \
	major="$$(command -v java >/dev/null 2>&1 && ver || echo 0)"; \
	if [ "$${major:-0}" -ge $(JAVA_MIN_VERSION) ]; then exit 0; fi; \
	echo ">> Java $(JAVA_MIN_VERSION)+ not found (have: $${major:-none}); installing default-jdk-headless"; \
	$(APT_GET_FN); \
	{ apt_get update -qq && apt_get install -y -qq --no-install-recommends default-jdk-headless; } || { \
	  echo "ERROR: Spark needs Java >= $(JAVA_MIN_VERSION) and it could not be installed." \
	       "Install a JDK $(JAVA_MIN_VERSION)+ (e.g. default-jdk-headless; a JRE runs too, with slower local writes) and retry." >&2; \
	  exit 1; }; \
	major="$$(ver || echo 0)"; \
	if [ "$${major:-0}" -lt $(JAVA_MIN_VERSION) ]; then \
	  echo "ERROR: installed Java is $${major:-none}, need >= $(JAVA_MIN_VERSION)." >&2; exit 1; \
	fi

tools: $(AZURITE) ## Install the Azurite blob emulator (npm) into .tools/

$(AZURITE):
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo ">> npm not found; installing nodejs + npm"; \
	  $(APT_GET_FN); \
	  { apt_get update -qq && apt_get install -y -qq --no-install-recommends nodejs npm; } || { \
	    echo "ERROR: Azurite needs npm and it could not be installed. Install Node.js + npm and retry." >&2; \
	    exit 1; }; \
	fi
	@echo ">> installing azurite@$(AZURITE_VERSION) into $(TOOLS)/"
	@mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) azurite@$(AZURITE_VERSION) --save-exact --no-audit --no-fund --loglevel=error
	@test -x $@ || { echo "ERROR: npm finished but $@ is missing." >&2; exit 1; }
	@touch $@

services-deps: ## Make sure Debian's PostgreSQL server, Redis and Chromium are present (apt-get installs them)
	@missing=""; \
	if [ -z "$${PG_BIN_DIR:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  missing="$$missing postgresql"; fi; \
	if ! command -v chromium >/dev/null 2>&1; then missing="$$missing chromium"; fi; \
	if ! command -v redis-server >/dev/null 2>&1; then missing="$$missing redis-server"; fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo ">> installing$$missing (PostgreSQL server for the instance tests, Redis as the Celery broker, Chromium for the UI tests)"; \
	$(APT_GET_FN); \
	{ apt_get update -qq && apt_get install -y -qq --no-install-recommends $$missing; } || { \
	  echo "ERROR: could not install$$missing. Install Debian's packages ($$missing) and retry," \
	       "or set PG_BIN_DIR to a folder with initdb and pg_ctl." >&2; \
	  exit 1; }; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "$${PG_BIN_DIR:-}" ] || { \
	  echo "ERROR: postgresql installed but no /usr/lib/postgresql/*/bin/initdb." >&2; exit 1; }; \
	command -v chromium >/dev/null 2>&1 || { echo "ERROR: chromium installed but not on PATH." >&2; exit 1; }; \
	command -v redis-server >/dev/null 2>&1 || { echo "ERROR: redis-server installed but not on PATH." >&2; exit 1; }

# DAGSTER_HOME's instance profile: PROFILE=sqlite (dagster.yaml, embedded, zero set-up),
# PROFILE=postgres (deploy/dagster.postgres.yaml: needs DAGSTER_POSTGRES_* in the environment,
# then `dagster instance migrate`) or PROFILE=cluster (deploy/dagster.cluster.yaml: the postgres
# profile with step-level pools; `make up` then runs steps on Celery workers). Without PROFILE
# the home keeps the profile it has.
PROFILE ?=
PROFILE_FILE_sqlite   := dagster.yaml
PROFILE_FILE_postgres := deploy/dagster.postgres.yaml
PROFILE_FILE_cluster  := deploy/dagster.cluster.yaml
# Cluster profile: Celery workers `make up` starts beside the daemon (broker: ML_ASSETS_CELERY_BROKER_URL).
CELERY_WORKERS ?= 2
# `make spark-up`: a Spark standalone master and workers on this host.
SPARK_WORKERS ?= 2

home: ## Create/refresh DAGSTER_HOME (.dagster_home/); PROFILE=sqlite|postgres|cluster switches its instance profile
	@prof="$(PROFILE)"; \
	if [ -z "$$prof" ]; then prof="$$(cat $(HOME_DIR)/.profile 2>/dev/null || echo sqlite)"; fi; \
	case "$$prof" in \
	  sqlite) src=$(PROFILE_FILE_sqlite) ;; \
	  postgres) src=$(PROFILE_FILE_postgres) ;; \
	  cluster) src=$(PROFILE_FILE_cluster) ;; \
	  *) echo "ERROR: unknown PROFILE '$$prof' (use sqlite, postgres or cluster)." >&2; exit 1 ;; \
	esac; \
	mkdir -p $(HOME_DIR); \
	if ! cmp -s "$$src" $(HOME_DIR)/dagster.yaml; then \
	  cp "$$src" $(HOME_DIR)/dagster.yaml; \
	  echo ">> $(HOME_DIR)/dagster.yaml <- $$src (profile $$prof)"; \
	fi; \
	echo "$$prof" > $(HOME_DIR)/.profile

# ---------------------------------------------------------------------------------------------
# Work
# ---------------------------------------------------------------------------------------------
demo: venv java home ## Run the main job end to end on embedded defaults
	$(VENV)/bin/ml-assets demo

test: venv java tools services-deps home ## Run the whole test suite (PYTEST_ARGS=... passes extra arguments)
	@echo "$(PY) -m pytest $(PYTEST_ARGS)"
	@# Browser screenshots and service logs of the UI tests are kept here after the run.
	@rc=0; ML_ASSETS_UI_ARTIFACTS="$${ML_ASSETS_UI_ARTIFACTS:-$(CURDIR)/.artifacts/ui}" \
	  $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ -n "$(PYTEST_RC_FILE)" ]; then echo $$rc > "$(PYTEST_RC_FILE)"; fi; \
	exit $$rc

lint: venv ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

dev: venv java home ## `dagster dev` on http://127.0.0.1:3000 (ignores SIGTERM: for a terminal only; services: make up)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# DAGSTER_EVENT_BATCH_SIZE: PostgreSQL stores a range run's per-partition events 100 per INSERT
# (no effect on SQLite).
up: export DAGSTER_EVENT_BATCH_SIZE ?= 100
up: venv java home ## Start code server, daemon, webserver (+ Celery workers on PROFILE=cluster) as separate processes (UI on :3000); Ctrl-C or `make down` stops them
	@if [ "$$(cat $(HOME_DIR)/.profile)" = cluster ]; then \
	  if [ -z "$${ML_ASSETS_CELERY_BROKER_URL:-}" ]; then \
	    echo "ERROR: the cluster profile needs ML_ASSETS_CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0)." >&2; exit 1; fi; \
	  set -x; ML_ASSETS_EXECUTOR=celery $(PY) -m ml_assets.services up --host $(UP_HOST) --port $(UP_PORT) \
	    --grpc-port $(UP_GRPC_PORT) --celery-workers $(CELERY_WORKERS); \
	else \
	  set -x; $(PY) -m ml_assets.services up --host $(UP_HOST) --port $(UP_PORT) --grpc-port $(UP_GRPC_PORT); \
	fi

spark-up: venv java ## Start a Spark standalone master + SPARK_WORKERS workers here (spark://127.0.0.1:7077, UI :8080)
	$(PY) -m ml_assets.ops.spark_cluster up --workers $(SPARK_WORKERS)

spark-down: ## Stop the Spark standalone master and workers 'make spark-up' started
	$(PY) -m ml_assets.ops.spark_cluster down

down: ## Stop the services 'make up' started (SIGTERM; all three stop within 10 s)
	$(PY) -m ml_assets.services down

validate: venv java home ## Load and validate the Dagster definitions
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

bench: venv java tools services-deps home ## Run every bench/*.py script
	@shopt -s nullglob; scripts=(bench/*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no bench/*.py scripts found"; exit 0; fi; \
	for s in "$${scripts[@]}"; do echo ">> $(PY) $$s"; $(PY) "$$s"; done

lock: $(PY) ## Regenerate requirements.lock (runtime) and requirements-dev.lock (runtime + dev extra)
	@if ! $(UV) --version 2>/dev/null | grep -q '^uv $(UV_VERSION)\b'; then \
	  $(PY) -m pip install --quiet "uv==$(UV_VERSION)"; \
	fi
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 \
	  --custom-compile-command "make lock" --quiet -o requirements.lock.tmp
	@{ echo "# Pinned dependencies of ml_assets (runtime + the 'dev' extra) for Python 3.11 on Linux."; \
	   echo "# Generated by 'make lock' (uv $(UV_VERSION)); do not edit by hand."; \
	   echo "#"; \
	   cat requirements.lock.tmp; } > requirements-dev.lock
	@# The runtime lock takes the very same versions (constrained by the dev lock).
	$(UV) pip compile pyproject.toml --python-version 3.11 -c requirements-dev.lock \
	  --custom-compile-command "make lock" --quiet -o requirements.lock.tmp
	@{ echo "# Pinned runtime dependencies of ml_assets for Python 3.11 on Linux (what the Docker image installs)."; \
	   echo "# Generated by 'make lock' (uv $(UV_VERSION)); do not edit by hand."; \
	   echo "#"; \
	   cat requirements.lock.tmp; } > requirements.lock
	@rm -f requirements.lock.tmp
	@echo ">> wrote requirements.lock ($$(grep -c '==' requirements.lock) pins) and requirements-dev.lock ($$(grep -c '==' requirements-dev.lock) pins)"

clean: ## Remove .venv, .tools and stamps (keeps data: .data/, .dagster_home/)
	rm -rf $(VENV) $(TOOLS) requirements.lock.tmp
