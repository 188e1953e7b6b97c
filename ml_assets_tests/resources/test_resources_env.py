"""Resources from environment variables: one path for runs and for use outside a run.

Bad or missing variables fail when the resources are built (code-location load) with a message
naming the variable; secrets reach resources as EnvVar and never appear in what Dagster stores
or shows; runs and out-of-run callers reach a real Azurite and a real SMTP server with AUTH.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path

import dagster as dg
import pytest
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

from ml_assets.defs.resources import resources_for_environment
from ml_assets.defs.settings import EnvConfigError
from ml_assets.reporting.mailer import MailDeliveryError
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.email import EmailResource
from ml_assets.storage import AzureBlobStore, BlobStoreError, LocalBlobStore
from ml_assets_tests.fixtures.environment import clean_environ
from ml_assets_tests.fixtures.smtp import (
    RECIPIENTS,
    SENDER,
    SMTP_AUTH_PASSWORD,
    SMTP_AUTH_USER,
)

# The AUTH test server runs without TLS on purpose (loopback only).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

REPO = Path(__file__).resolve().parents[2]
URL = "https://acct.blob.core.windows.net"
GOOD_KEY = "a2V5LWJ5dGVz"  # base64


@pytest.mark.parametrize(("env", "named"), [
    ({"ML_ASSETS_ENV": "prod"}, ["ML_ASSETS_ENV"]),
    ({"ML_ASSETS_ENV": "azure"}, ["AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL"]),
    ({"ML_ASSETS_ENV": "azure", "AZURE_STORAGE_CONNECTION_STRING": "secret-but-not-a-connection-string"},
     ["AZURE_STORAGE_CONNECTION_STRING"]),
    ({"ML_ASSETS_ENV": "azure", "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=c2VjcmV0;EndpointSuffix=x"},
     ["AZURE_STORAGE_CONNECTION_STRING", "AccountName"]),
    ({"ML_ASSETS_ENV": "azure", "AZURE_STORAGE_ACCOUNT_URL": "acct.blob.core.windows.net"},
     ["AZURE_STORAGE_ACCOUNT_URL"]),
    ({"ML_ASSETS_ENV": "azure", "AZURE_STORAGE_ACCOUNT_URL": URL, "AZURE_STORAGE_KEY": "not base64!"},
     ["AZURE_STORAGE_KEY"]),
    ({"ML_ASSETS_ENV": "azure", "AZURE_STORAGE_ACCOUNT_URL": URL, "AZURE_STORAGE_SAS_TOKEN": "secret-token"},
     ["AZURE_STORAGE_SAS_TOKEN"]),
    ({"ML_ASSETS_ENV": "azure", "AZURE_STORAGE_ACCOUNT_URL": URL, "AZURE_STORAGE_KEY": GOOD_KEY,
      "AZURE_STORAGE_SAS_TOKEN": "sv=2022&sig=abc"}, ["AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"]),
    ({"ML_ASSETS_ENV": "azure", "AZURE_STORAGE_ACCOUNT_URL": URL, "ML_ASSETS_CONTAINER": "ML_Assets"},
     ["ML_ASSETS_CONTAINER"]),
    ({"ML_ASSETS_STORE_TIMEOUT_S": "soon"}, ["ML_ASSETS_STORE_TIMEOUT_S"]),
    ({"ML_ASSETS_STORE_TIMEOUT_S": "0"}, ["ML_ASSETS_STORE_TIMEOUT_S"]),
    ({"SMTP_HOST": "mail.example.org", "SMTP_USER": "reports"}, ["SMTP_PASSWORD"]),
    ({"SMTP_HOST": "mail.example.org", "SMTP_PASSWORD": "secret-pw"}, ["SMTP_USER"]),
    ({"SMTP_USER": "reports", "SMTP_PASSWORD": "secret-pw"}, ["SMTP_HOST"]),
    ({"SMTP_HOST": "mail.example.org", "SMTP_PORT": "smtp"}, ["SMTP_PORT"]),
    ({"SMTP_HOST": "mail.example.org", "SMTP_PORT": "70000"}, ["SMTP_PORT"]),
    ({"SMTP_HOST": "mail.example.org", "SMTP_STARTTLS": "sometimes"}, ["SMTP_STARTTLS"]),
    ({"ML_ASSETS_EMAIL_TO": "oncall"}, ["ML_ASSETS_EMAIL_TO"]),
    ({"ML_ASSETS_SPARK_CONF": "[1, 2]"}, ["ML_ASSETS_SPARK_CONF"]),
    # Every problem at once, not one per attempt.
    ({"ML_ASSETS_ENV": "azure", "SMTP_HOST": "mail.example.org", "SMTP_PORT": "x"},
     ["2 problems", "AZURE_STORAGE_CONNECTION_STRING", "SMTP_PORT"]),
], ids=lambda value: "-".join(value) if isinstance(value, list) else None)
def test_bad_environment_fails_naming_the_variable(ml_env, env, named):
    ml_env(**env)
    with pytest.raises(EnvConfigError) as error:
        resources_for_environment()
    for name in named:
        assert name in str(error.value)
    for secret in ("secret-but-not-a-connection-string", "c2VjcmV0", "secret-token", "secret-pw"):
        assert secret not in str(error.value)


def test_loading_the_code_location_fails_with_the_message(tmp_path):
    """What `dagster definitions validate` (and so the code server and the webserver) report."""
    env = clean_environ(ML_ASSETS_ENV="azure", DAGSTER_HOME=str(tmp_path))
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run([str(dagster), "definitions", "validate", "-m", "ml_assets.definitions"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "EnvConfigError" in output
    assert "AZURE_STORAGE_CONNECTION_STRING" in output and "AZURE_STORAGE_ACCOUNT_URL" in output


def test_secrets_are_env_vars_and_the_rest_plain_values(ml_env):
    ml_env(ML_ASSETS_ENV="azure", AZURE_STORAGE_ACCOUNT_URL=URL, AZURE_STORAGE_KEY=GOOD_KEY,
           ML_ASSETS_CONTAINER="team-a", ML_ASSETS_STORE_TIMEOUT_S="45",
           SMTP_HOST="mail.example.org", SMTP_PORT="2525", SMTP_STARTTLS="no", SMTP_USER="reports",
           SMTP_PASSWORD="pw", ML_ASSETS_EMAIL_TO="a@example.org, b@example.org")
    resources = resources_for_environment()
    store, email = resources["blob_store"], resources["email"]
    assert store.azure_account_key == dg.EnvVar("AZURE_STORAGE_KEY")
    assert isinstance(store.azure_account_key, dg.EnvVar)
    assert store.azure_sas_token is None and store.azure_connection_string is None
    assert (store.backend, store.azure_account_url, store.container, store.timeout_s) == ("azure", URL, "team-a", 45.0)
    assert isinstance(email.smtp_password, dg.EnvVar) and email.smtp_password == "SMTP_PASSWORD"
    assert (email.smtp_host, email.smtp_port, email.smtp_starttls, email.smtp_user) == (
        "mail.example.org", 2525, False, "reports")
    assert email.recipients == ["a@example.org", "b@example.org"]
    # The IO manager holds the same blob-store resource.
    assert resources["spark_io"].blob_store is store


def test_the_local_default_needs_nothing(ml_env, tmp_path):
    resources = resources_for_environment()
    store = resources["blob_store"].blob_store()
    assert isinstance(store, LocalBlobStore)
    assert resources["blob_store"].local_root == str(tmp_path / "store")
    assert resources["email"].smtp_host is None
    assert resources["email"].mailer().smtp is None  # reports go to the outbox


def _sas(azurite) -> str:
    return generate_account_sas(
        azurite.account_name, azurite.account_key,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )


@pytest.mark.azurite
@pytest.mark.parametrize("credential", ["connection-string", "url-and-key", "url-and-sas"])
def test_store_from_env_outside_a_run(ml_env, azurite, credential):
    """The CLI's case: the resource itself reads its EnvVar fields."""
    container = f"env-{uuid.uuid4().hex[:12]}"
    secrets = {
        "connection-string": {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
        "url-and-key": {"AZURE_STORAGE_ACCOUNT_URL": azurite.account_url, "AZURE_STORAGE_KEY": azurite.account_key},
        "url-and-sas": {"AZURE_STORAGE_ACCOUNT_URL": azurite.account_url, "AZURE_STORAGE_SAS_TOKEN": _sas(azurite)},
    }[credential]
    ml_env(ML_ASSETS_ENV="azure", ML_ASSETS_CONTAINER=container, **secrets)
    store = resources_for_environment()["blob_store"].blob_store()
    assert isinstance(store, AzureBlobStore)
    assert store.location == f"azure:{azurite.account_name}/{container}"
    store.put("probe/hello.txt", b"hello")
    # Read back through an independent client with the account key.
    check = AzureBlobStore(container, connection_string=azurite.connection_string, create_if_missing=False)
    assert check.get("probe/hello.txt") == b"hello"


def test_account_url_alone_signs_in_with_a_token_credential(ml_env, azurite):
    """No key and no SAS token: DefaultAzureCredential, which the SDK refuses over plain HTTP."""
    ml_env(ML_ASSETS_ENV="azure", AZURE_STORAGE_ACCOUNT_URL=azurite.account_url)
    resource = resources_for_environment()["blob_store"]
    assert resource.azure_account_key is None and resource.azure_sas_token is None
    with pytest.raises(BlobStoreError, match="Token credential is only supported with HTTPS"):
        resource.blob_store()


def _message(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, SENDER, ", ".join(RECIPIENTS)
    message.set_content("hello from the test")
    return message


def _smtp_env(ml_env, sink, password: str = SMTP_AUTH_PASSWORD) -> None:
    ml_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port), SMTP_STARTTLS="false", SMTP_USER=SMTP_AUTH_USER,
           SMTP_PASSWORD=password, ML_ASSETS_EMAIL_FROM=SENDER, ML_ASSETS_EMAIL_TO=",".join(RECIPIENTS))


def test_mailer_from_env_logs_in_and_delivers(ml_env, smtp_auth_sink):
    _smtp_env(ml_env, smtp_auth_sink)
    mailer = resources_for_environment()["email"].mailer()
    assert mailer.send(_message("cycle report")) == f"smtp://127.0.0.1:{smtp_auth_sink.port}"
    assert smtp_auth_sink.authenticator.attempts == [(SMTP_AUTH_USER, True)]
    [received] = smtp_auth_sink.messages
    assert received["Subject"] == "cycle report"
    assert smtp_auth_sink.envelopes == [RECIPIENTS]


def test_wrong_smtp_password_is_a_clear_error(ml_env, smtp_auth_sink):
    _smtp_env(ml_env, smtp_auth_sink, password="not-the-password")
    mailer = resources_for_environment()["email"].mailer()
    with pytest.raises(MailDeliveryError) as error:
        mailer.send(_message("cycle report"))
    message = str(error.value)
    assert f"SMTP 127.0.0.1:{smtp_auth_sink.port} failed at login as {SMTP_AUTH_USER!r}" in message
    assert "535" in message  # the server's "authentication credentials invalid"
    assert "not-the-password" not in message
    assert smtp_auth_sink.messages == []
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN); each was refused.
    attempts = smtp_auth_sink.authenticator.attempts
    assert attempts and attempts == [(SMTP_AUTH_USER, False)] * len(attempts)


@dg.asset
def probe(blob_store: BlobStoreResource, email: EmailResource) -> None:
    """Writes one blob and sends one mail, with resources resolved by the run."""
    blob_store.blob_store().put("probe/run.txt", b"written in a run")
    email.mailer().send(_message("sent in a run"))


@pytest.mark.azurite
def test_a_run_resolves_secrets_and_stores_none_of_them(ml_env, azurite, smtp_auth_sink, tmp_path):
    container = f"run-{uuid.uuid4().hex[:12]}"
    ml_env(ML_ASSETS_ENV="azure", AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
           ML_ASSETS_CONTAINER=container)
    _smtp_env(ml_env, smtp_auth_sink)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.materialize([probe], resources=resources_for_environment(), instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        stored = [
            dg.serialize_value(run),
            dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
            *(dg.serialize_value(record) for record in instance.all_logs(result.run_id)),
        ]
    check = AzureBlobStore(container, connection_string=azurite.connection_string, create_if_missing=False)
    assert check.get("probe/run.txt") == b"written in a run"
    assert [m["Subject"] for m in smtp_auth_sink.messages] == ["sent in a run"]
    assert smtp_auth_sink.authenticator.attempts == [(SMTP_AUTH_USER, True)]
    # The run's record, its job snapshot (the config schema the UI shows) and its events name the
    # variables, never their values; nor does anything the instance wrote to disk.
    on_disk = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    for secret in (azurite.account_key, azurite.connection_string, SMTP_AUTH_PASSWORD):
        assert not any(secret in text for text in stored)
        assert secret.encode() not in on_disk
    assert any("AZURE_STORAGE_CONNECTION_STRING" in text for text in stored)
    assert any("SMTP_PASSWORD" in text for text in stored)
    assert os.environ["ML_ASSETS_CONTAINER"] == container


@dg.asset
def store_probe(blob_store: BlobStoreResource) -> None:
    """Reads one blob, with the store resolved by the run."""
    blob_store.blob_store().get("probe/run.txt")


@pytest.mark.timeout(120)
def test_a_frozen_store_fails_the_step_within_the_timeout(ml_env, black_hole, tmp_path):
    ml_env(ML_ASSETS_ENV="azure", AZURE_STORAGE_ACCOUNT_URL=f"{black_hole.url}/devstoreaccount1",
           AZURE_STORAGE_KEY=GOOD_KEY, ML_ASSETS_STORE_TIMEOUT_S="3")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([store_probe], resources=resources_for_environment(), instance=instance,
                                raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error
    text = error.message + "".join(c.message for c in [error.cause] if c)
    assert "BlobStoreError" in text
    assert "no answer from the store" in text and "store timeout of 3 s" in text


def test_store_timeout_default_is_at_most_two_minutes_everywhere(ml_env):
    from ml_assets.resources.blob_store import DEFAULT_STORE_TIMEOUT_S
    from ml_assets.storage.azure_sdk import DEFAULT_TIMEOUT_S

    assert DEFAULT_STORE_TIMEOUT_S == DEFAULT_TIMEOUT_S <= 120
    assert resources_for_environment()["blob_store"].timeout_s == DEFAULT_TIMEOUT_S
