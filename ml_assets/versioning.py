"""The code version recorded in every model manifest."""

import os
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@cache
def code_version() -> str:
    """Package version plus the git commit when run from a checkout (ML_ASSETS_CODE_VERSION overrides)."""
    if os.environ.get("ML_ASSETS_CODE_VERSION"):
        return os.environ["ML_ASSETS_CODE_VERSION"]
    try:
        package = version("ml_assets")
    except PackageNotFoundError:
        package = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return package
    return f"{package}+g{commit}"
