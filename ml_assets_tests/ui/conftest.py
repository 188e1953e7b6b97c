"""A realistic instance served by the three Dagster services, and a real browser (Debian's chromium).

The instance is built first, in its own process (ml_assets_tests/ui/build_instance.py): days landed
in a local store, materialized, and one training cycle run. Then the code server and the webserver
start on that DAGSTER_HOME with the same environment; the daemon starts when a test asks for it
(``daemon``), so that a backfill launched from the UI before it is the one thing that runs its days.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ML_ASSETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Where screenshots and service logs go; a temporary folder unless set.
ARTIFACTS_VAR = "ML_ASSETS_UI_ARTIFACTS"
# Set to 1 to (re)write the README's asset-graph picture from this run.
README_SHOT_VAR = "ML_ASSETS_UI_README_SHOT"
README_SHOT = REPO / "docs" / "asset-graph.png"
BUILD_TIMEOUT_S = 1200
UI_TIMEOUT_MS = 120_000  # a loaded 2-core machine renders big pages slowly

_artifacts: list[Path] = []


def small_spec(path: Path) -> Path:
    """The bundled flights spec with short windows: a first model from ten landed days.

    The gate keeps its rules; its bars are lowered only so that the small first model usually
    passes, and the serving-latency budget is sized for a loaded machine. The UI test shows the
    verdict either way (and checks it against the instance).
    """
    from ml_assets.spec.model import BUNDLED_SPECS_DIR

    spec = yaml.safe_load((BUNDLED_SPECS_DIR / "flights.yaml").read_text())
    spec["training"] = {"window_days": 7, "holdout_days": 3}
    spec["clustering"]["window_days"] = 10
    spec["promotion"]["absolute"] = {"roc_auc": 0.55}
    spec["promotion"]["min_slice_size"] = 300
    spec["promotion"]["infra"]["max_p95_latency_ms"] = 1000
    path.write_text(yaml.safe_dump(spec))
    return path


@dataclass
class UiSite:
    home: Path
    env: dict[str, str]
    built: dict
    services: object  # ml_assets.services.Services (code server + webserver)
    artifacts: Path

    @property
    def url(self) -> str:
        return self.services.webserver_url

    def instance(self):
        """The site's instance, read from this process (use it as a context manager)."""
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef

        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home)))


@pytest.fixture(scope="module")
def ui_artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ[ARTIFACTS_VAR]) if os.environ.get(ARTIFACTS_VAR) else tmp_path_factory.mktemp("ui")
    folder.mkdir(parents=True, exist_ok=True)
    _artifacts.append(folder)
    return folder


@pytest.fixture(scope="module")
def ui_site(tmp_path_factory, ui_artifacts) -> UiSite:
    from ml_assets.services import start

    root = tmp_path_factory.mktemp("ui_site")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        "ML_ASSETS_ENV": "local",
        "ML_ASSETS_SPEC": str(small_spec(root / "flights-small.yaml")),
        "ML_ASSETS_STORE_ROOT": str(root / "store"),
        "ML_ASSETS_CACHE_DIR": str(root / "cache"),
        "ML_ASSETS_OUTBOX_DIR": str(root / "outbox"),
        "SMTP_HOST": "",  # reports go to the outbox folder, whatever the calling shell has set
        "ML_ASSETS_SPARK_MASTER": "local[2]",
        "ML_ASSETS_SPARK_CONF": json.dumps({"spark.driver.memory": "1g"}),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    out = root / "built.json"
    with open(ui_artifacts / "build_instance.log", "wb") as log:
        result = subprocess.run(
            [sys.executable, "-m", "ml_assets_tests.ui.build_instance", str(out)],
            env={**os.environ, **env, "DAGSTER_HOME": str(home)}, cwd=REPO, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT_S,
        )
    assert result.returncode == 0, f"building the instance failed: see {ui_artifacts / 'build_instance.log'}"
    built = json.loads(out.read_text())

    services = start(home, env=env, roles=("code-server", "webserver"), log_dir=ui_artifacts / "logs")
    try:
        yield UiSite(home=home, env=env, built=built, services=services, artifacts=ui_artifacts)
    finally:
        services.stop()


@pytest.fixture(scope="module")
def daemon(ui_site):
    """dagster-daemon on the site's instance and code server (started once, on first request)."""
    from ml_assets.services import start

    services = start(ui_site.home, env=ui_site.env, roles=("daemon",), grpc_port=ui_site.services.grpc_port,
                     log_dir=ui_site.artifacts / "logs")
    yield services
    services.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (make services-deps) or set ML_ASSETS_CHROMIUM")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def browser_context(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(UI_TIMEOUT_MS)
    context.set_default_navigation_timeout(UI_TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    # The UI greets a new visitor with "Join the Dagster community" over the page: skip it
    # whenever it shows up, before any action.
    skip = page.get_by_role("button", name="Skip", exact=True)
    page.add_locator_handler(page.get_by_text("Join the Dagster community"), lambda: skip.click())
    yield page
    page.close()


class Shots:
    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, page, name: str, **kwargs) -> Path:
        path = self.folder / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
        page.screenshot(path=str(path), animations="disabled", **kwargs)
        return path


@pytest.fixture
def shot(ui_artifacts) -> Shots:
    """shot(page, name) saves a screenshot among the test artefacts."""
    return Shots(ui_artifacts)


def wait_until(predicate, what: str, timeout: float, interval: float = 5.0):
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def pytest_terminal_summary(terminalreporter):
    for folder in _artifacts:
        terminalreporter.write_line(f"UI test artefacts (screenshots, service logs): {folder}")
