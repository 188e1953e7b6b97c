"""Loading the code location stays light: none of the heavy libraries is imported at load.

Each check runs in a fresh interpreter, since this test session has long imported all of them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Imported by runs (and the CLI) when they need them, never by `import ml_assets.definitions`.
HEAVY = ("pandas", "pyarrow", "numpy", "azure", "matplotlib", "tensorflow", "keras", "pyspark",
         "sklearn", "scipy", "dagster_pyspark")

AZURITE_STYLE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


def _loaded_modules(env: dict[str, str]) -> list[str]:
    code = (
        "import sys, json, warnings; warnings.simplefilter('ignore'); import ml_assets.definitions; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "SMTP_", "ML_ASSETS_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**clean, **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_local_environment_loads_no_heavy_module():
    assert _loaded_modules({"ML_ASSETS_ENV": "local"}) == []


@pytest.mark.parametrize("credentials", [
    {"AZURE_STORAGE_CONNECTION_STRING": AZURITE_STYLE},
    {"AZURE_STORAGE_ACCOUNT_URL": "http://127.0.0.1:10000/devstoreaccount1", "AZURE_STORAGE_KEY": "a2V5"},
    {"AZURE_STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net"},  # DefaultAzureCredential at first use
], ids=["connection-string", "url-and-key", "url-only"])
def test_azure_environment_with_smtp_loads_no_heavy_module(credentials):
    env = {"ML_ASSETS_ENV": "azure", **credentials,
           "SMTP_HOST": "127.0.0.1", "SMTP_USER": "ml", "SMTP_PASSWORD": "secret"}
    assert _loaded_modules(env) == []
