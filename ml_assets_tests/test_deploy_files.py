"""The deployment files without a Docker engine: docker-compose.yml, the Dockerfile, .dockerignore.

Parsed and cross-checked: every service's command is a console script installed from the runtime
lock (what the image has), the same command line `ml_assets.services` runs and tests for real;
ports, volumes, health checks and dependencies are consistent; the environment the code reads is
provided; the image installs the runtime lock only, runs as a non-root user under tini.
"""

import fnmatch
import importlib.metadata as md
import re
import shlex
from pathlib import Path

import pytest
import yaml

from ml_assets import services
from ml_assets.ops import celery_workers

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DAGSTER_ROLES = {"code-server", "daemon", "webserver"}
# Celery worker name -> compose service (the cluster profile's executor: ml_assets/defs/celery.py).
WORKERS = {name: f"celery-{name}" for name in celery_workers.worker_names(2)}
ENV_EXAMPLE = REPO / "deploy" / "env.example"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    env = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def env_refs(node) -> set[str]:
    """Every `{env: NAME}` in a parsed Dagster YAML file."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_refs(v) for v in node)) if node else set()
    return set()


def service_env(name: str) -> dict[str, str]:
    """What the container sees: image ENV, then env_file (.env from env.example), then environment."""
    service = SERVICES[name]
    env = dict(image_env())
    if service.get("env_file"):
        assert service["env_file"] == ".env"
        env |= env_example()
    env |= {k: str(v) for k, v in (service.get("environment") or {}).items()}
    return env


def role_of(name: str) -> str | None:
    command = SERVICES[name].get("command") or []
    for role, expected in services.service_commands("h", 1, 2, "w").items():
        if command[:2] == expected[:2]:
            return role
    return None


def runtime_lock() -> set[str]:
    names = set()
    for line in (REPO / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==", line)
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def console_scripts() -> dict[str, str]:
    """Console script -> distribution (normalized), from the installed environment."""
    scripts = {}
    for dist in md.distributions():
        for ep in dist.entry_points:
            if ep.group == "console_scripts":
                scripts[ep.name] = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    return scripts


def test_compose_has_the_services_and_dagster_roles_use_the_image():
    assert set(SERVICES) == {"postgres", "azurite", "redis", "code-server", "daemon", "webserver",
                             *WORKERS.values()}
    for name in DAGSTER_ROLES | set(WORKERS.values()):
        service = SERVICES[name]
        assert role_of(name) == name or name in WORKERS.values()
        assert service["build"] == "." and (REPO / "Dockerfile").is_file()
        assert service["image"] == "ml-assets:latest"


def test_every_dagster_command_is_a_console_script_of_the_runtime_lock():
    scripts, lock = console_scripts(), runtime_lock()
    commands = [SERVICES[name]["command"][0] for name in DAGSTER_ROLES]
    commands += [hc for name in DAGSTER_ROLES for hc in SERVICES[name]["healthcheck"]["test"][1:2]]
    cmd = dict(dockerfile_instructions())["CMD"]
    commands.append(yaml.safe_load(cmd)[0])
    for command in commands:
        if command == "python":
            continue  # the base image's interpreter, first on PATH through the venv
        assert command in scripts, f"{command} is not an installed console script"
        dist = scripts[command]
        assert dist in lock or dist == "ml-assets", f"{command} comes from {dist}, not in requirements.lock"


def test_compose_commands_are_the_ones_the_launcher_runs_and_tests():
    workspace = image_env()["ML_ASSETS_WORKSPACE"]
    grpc_port = int(service_env("code-server")["ML_ASSETS_CODE_SERVER_PORT"])
    expected = services.service_commands("0.0.0.0", grpc_port, 3000, workspace)
    for name in DAGSTER_ROLES:
        assert SERVICES[name]["command"] == expected[name], name
    # The workspace file baked into the image is the repository's deploy/workspace.yaml.
    assert f"COPY deploy/workspace.yaml {workspace}" in [
        f"{k} {v}" for k, v in final_stage() if k == "COPY"]


def test_ports_point_where_the_services_listen():
    code_server = SERVICES["code-server"]["command"]
    grpc_port = code_server[code_server.index("-p") + 1]
    assert code_server[code_server.index("-h") + 1] == "0.0.0.0"
    assert SERVICES["code-server"]["expose"] == [grpc_port]
    for name in ("daemon", "webserver"):
        env = service_env(name)
        # deploy/workspace.yaml resolves the code server from these.
        assert env["ML_ASSETS_CODE_SERVER_HOST"] == "code-server"
        assert env["ML_ASSETS_CODE_SERVER_PORT"] == grpc_port
    webserver = SERVICES["webserver"]["command"]
    port = webserver[webserver.index("-p") + 1]
    assert [p.split(":")[-1] for p in SERVICES["webserver"]["ports"]] == [port]
    exposed = next(v for k, v in final_stage() if k == "EXPOSE").split()
    assert {port, grpc_port} <= set(exposed)


def test_named_volumes_are_declared_used_and_mounted_where_the_image_writes():
    declared = set(COMPOSE["volumes"])
    used = {}
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            assert not source.startswith((".", "/")), f"{name}: bind mount {mount}, use a named volume"
            assert source in declared, f"{name}: volume {source} is not declared"
            used.setdefault(source, set()).add(target)
    assert set(used) == declared
    env = image_env()
    assert used["dagster-storage"] == {f"{env['DAGSTER_HOME']}/storage"}
    data = {str(Path(env[v]).parent) for v in ("ML_ASSETS_CACHE_DIR", "ML_ASSETS_OUTBOX_DIR",
                                                "ML_ASSETS_STORE_ROOT")}
    assert used["ml-assets-data"] == data
    assert used["postgres-data"] == {"/var/lib/postgresql/data"}
    azurite = SERVICES["azurite"]["command"]
    assert used["azurite-data"] == {azurite[azurite.index("--location") + 1]}
    # The image creates the mount points, owned by its user, so fresh volumes inherit that.
    run = " ".join(v for k, v in final_stage() if k == "RUN")
    for target in ("/opt/dagster/home/storage", *data):
        assert target in run


def test_dependencies_wait_for_healthy_services_and_every_service_has_a_healthcheck():
    for name, service in SERVICES.items():
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            assert condition == {"condition": "service_healthy"}
            assert SERVICES[target].get("healthcheck")
    for name in DAGSTER_ROLES:
        assert SERVICES[name]["healthcheck"]["test"] == [
            "CMD", "python", "-m", "ml_assets.services", "health", "--role", name]
        assert "postgres" in SERVICES[name]["depends_on"]
    assert "azurite" in SERVICES["code-server"]["depends_on"]
    assert "code-server" in SERVICES["daemon"]["depends_on"]
    assert "code-server" in SERVICES["webserver"]["depends_on"]


def test_the_environment_the_code_reads_is_provided_and_secrets_come_from_the_env_file(monkeypatch):
    profile = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    needed = env_refs(profile) | env_refs(workspace)
    assert {"DAGSTER_POSTGRES_PASSWORD", "ML_ASSETS_CODE_SERVER_PORT"} <= needed
    example = env_example()
    for name in DAGSTER_ROLES:
        env = service_env(name)
        assert needed <= {k for k, v in env.items() if v}, f"{name}: {needed - set(env)} missing"
        assert env["ML_ASSETS_ENV"] == "azure"
        assert "azurite:10000" in env["AZURE_STORAGE_CONNECTION_STRING"]
        # Secrets live in .env only, never in the compose file.
        environment = SERVICES[name].get("environment") or {}
        assert not [k for k in environment if re.search("PASSWORD|KEY|CONNECTION_STRING|SAS", k)]
    # The postgres service takes its credentials from the same .env, by substitution.
    for value in SERVICES["postgres"]["environment"].values():
        var = re.fullmatch(r"\$\{(\w+):\?[^}]*\}", value).group(1)
        assert var in example
    # The code location's own resolution path accepts this environment (ML_ASSETS_ENV=azure).
    from ml_assets.defs.resources import resources_for_environment

    for key, value in service_env("code-server").items():
        monkeypatch.setenv(key, value)
    resources = resources_for_environment()
    assert resources["blob_store"].backend == "azure"


def test_azurite_image_is_the_version_the_tests_use():
    pin = re.search(r"^AZURITE_VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert SERVICES["azurite"]["image"] == f"mcr.microsoft.com/azure-storage/azurite:{pin}"


def test_dockerfile_is_a_production_image():
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert keywords.count("FROM") >= 2, "multi-stage: build tools stay out of the runtime image"
    text = (REPO / "Dockerfile").read_text()
    assert "requirements.lock" in text and "requirements-dev.lock" not in text
    assert not re.search(r"dagster\s+dev\b", " ".join(v for _, v in instructions))
    final = final_stage()
    users = [v for k, v in final if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "useradd" in " ".join(v for k, v in final if k == "RUN")
    entrypoint = yaml.safe_load(dict(final)["ENTRYPOINT"])
    assert entrypoint[0] == "/usr/bin/tini"
    assert re.search(r"apt-get install[^&]*\btini\b", " ".join(v for k, v in final if k == "RUN"))
    assert dict(final)["HEALTHCHECK"].endswith('CMD ["python", "-m", "ml_assets.services", "health"]')
    cmd = yaml.safe_load(dict(final)["CMD"])
    assert cmd[0] == "dagster-webserver"
    # The image's DAGSTER_HOME gets the production (PostgreSQL) profile.
    assert "COPY deploy/dagster.postgres.yaml /opt/dagster/home/dagster.yaml" in [
        f"{k} {v}" for k, v in final if k == "COPY"]
    assert image_env()["DAGSTER_HOME"] == "/opt/dagster/home"


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = ["/".join(parts[i:j]) for i in range(len(parts))
                      for j in range(i + 1, len(parts) + 1)]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(c, pattern[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", ["requirements.lock", "pyproject.toml", "README.md",
                                  "ml_assets/definitions.py", "ml_assets/specs/flights.yaml",
                                  "deploy/dagster.postgres.yaml", "deploy/workspace.yaml"])
def test_build_context_has_what_the_dockerfile_copies(path):
    assert (REPO / path).exists()
    assert not dockerignored(path)


@pytest.mark.parametrize("path", [".env", "deploy/.env", ".git/HEAD", ".venv/bin/python",
                                  "requirements-dev.lock", ".dagster_home/dagster.yaml",
                                  ".data/store/x", "ml_assets/__pycache__/x.pyc",
                                  "ml_assets_tests/conftest.py"])
def test_build_context_leaves_out_secrets_and_local_state(path):
    assert dockerignored(path)


def test_every_dockerfile_copy_source_is_in_the_context():
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _ = rest.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert not dockerignored(source.rstrip("/")), source


def test_the_image_lock_holds_no_dev_extra():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dev = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0]).lower()
           for req in project["optional-dependencies"]["dev"]}
    assert dev and not dev & runtime_lock(), dev & runtime_lock()


def test_celery_workers_run_the_launchers_command_against_the_compose_broker(monkeypatch):
    """Two workers, distinct names and hosts, the same command `make up` runs, health-gated on
    the broker, the instance and the store; the broker URL in .env names the redis service."""
    from ml_assets.defs.settings import celery_settings, executor_name

    code_server = SERVICES["code-server"]
    hostnames = set()
    for name, service_name in WORKERS.items():
        service = SERVICES[service_name]
        assert service["command"] == celery_workers.worker_command(name, python="python")
        assert service["healthcheck"]["test"] == [
            "CMD", "python", "-m", celery_workers.WORKER_MODULE, "ping", "--name", name]
        assert set(service["depends_on"]) == {"postgres", "azurite", "redis"}
        # What the steps read and write: the instance's local artifacts and the model cache.
        assert sorted(service["volumes"]) == sorted(code_server["volumes"])
        hostnames.add(service["hostname"])
        env = service_env(service_name)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert executor_name() == "celery"
        settings = celery_settings()
        assert settings.broker_url.startswith("redis://redis:6379/")
        assert settings.worker_concurrency >= 1
        # A lost worker's step must not come back while it may still be running elsewhere.
        assert settings.visibility_timeout_s >= 3600
    assert len(hostnames) == len(WORKERS)
    assert "redis" in code_server["depends_on"]
    assert SERVICES["redis"]["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    # The worker module runs dagster-celery, a console script of the runtime lock.
    assert console_scripts().get("dagster-celery") in runtime_lock()
