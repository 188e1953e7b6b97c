"""A frozen blob store fails each operation within the store timeout instead of hanging.

Two kinds of frozen store, both real: a loopback server that accepts connections and never
answers, and a real Azurite process stopped with SIGSTOP (and resumed with SIGCONT). The
pytest-timeout marks are the guard against the hang itself; no duration is asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ml_assets.ops.processes import stop_groups
from ml_assets.storage import AzureBlobStore, BlobStoreError
from ml_assets_tests.fixtures.azurite import (
    ACCOUNT_KEY,
    ACCOUNT_NAME,
    _answers,
    _free_port,
    find_azurite_blob,
)
from ml_assets_tests.fixtures.blackhole import black_hole_fixture  # noqa: F401

TIMEOUT_S = 3


def _no_answer(exc: pytest.ExceptionInfo, location: str) -> None:
    message = str(exc.value)
    assert location in message, message
    assert "no answer from the store" in message, message
    assert f"store timeout of {TIMEOUT_S} s" in message, message


@pytest.mark.timeout(90)
def test_store_that_never_answers_fails_each_operation(black_hole, tmp_path):
    url = f"{black_hole.url}/{ACCOUNT_NAME}"
    with pytest.raises(BlobStoreError) as creating:
        AzureBlobStore("frozen", account_url=url, credential=ACCOUNT_KEY, timeout_s=TIMEOUT_S)
    _no_answer(creating, f"cannot create container azure:{ACCOUNT_NAME}/frozen")

    store = AzureBlobStore("frozen", account_url=url, credential=ACCOUNT_KEY, timeout_s=TIMEOUT_S,
                           create_if_missing=False)
    with pytest.raises(BlobStoreError) as reading:
        store.get("models/flights/champion.json")
    _no_answer(reading, f"cannot read azure:{ACCOUNT_NAME}/frozen/models/flights/champion.json")
    with pytest.raises(BlobStoreError) as writing:
        store.put("raw/day.csv", b"a,b\n1,2\n")
    _no_answer(writing, f"cannot write azure:{ACCOUNT_NAME}/frozen/raw/day.csv")
    with pytest.raises(BlobStoreError) as listing:
        list(store.list("raw/"))
    _no_answer(listing, f"cannot list azure:{ACCOUNT_NAME}/frozen/raw/")
    assert black_hole.connections, "the client never reached the frozen endpoint"


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout_s"):
        AzureBlobStore("c", account_url="http://127.0.0.1:1/acct", credential=ACCOUNT_KEY, timeout_s=0)


@contextmanager
def _private_azurite(tmp_path) -> Iterator[tuple[subprocess.Popen, str]]:
    """An Azurite of this test's own, since stopping the session's would stall other tests."""
    binary = find_azurite_blob()
    assert binary, "Azurite (azurite-blob) not found: run `make tools`"
    port = _free_port("127.0.0.1")
    (tmp_path / "azurite").mkdir()
    with open(tmp_path / "azurite.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "--location", str(tmp_path / "azurite"), "--blobHost", "127.0.0.1", "--blobPort", str(port),
             "--disableTelemetry", "--loose", "--skipApiVersionCheck"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not _answers("127.0.0.1", port):
            assert process.poll() is None, (tmp_path / "azurite.log").read_text()
            assert time.monotonic() < deadline, "Azurite did not listen within 30 s"
            time.sleep(0.1)
        yield process, f"http://127.0.0.1:{port}/{ACCOUNT_NAME}"
    finally:
        os.killpg(process.pid, signal.SIGCONT)
        stop_groups([process])


@pytest.mark.azurite
@pytest.mark.timeout(120)
def test_stopped_azurite_fails_within_the_timeout_and_recovers(tmp_path):
    with _private_azurite(tmp_path) as (azurite, url):
        container = f"frozen-{uuid.uuid4().hex[:8]}"
        store = AzureBlobStore(container, account_url=url, credential=ACCOUNT_KEY, timeout_s=TIMEOUT_S)
        store.put("raw/2013-01-01.csv", b"day one\n")

        os.killpg(azurite.pid, signal.SIGSTOP)  # accepts connections (kernel backlog), never answers
        try:
            with pytest.raises(BlobStoreError) as reading:
                store.get("raw/2013-01-01.csv")
            _no_answer(reading, f"cannot read azure:{ACCOUNT_NAME}/{container}/raw/2013-01-01.csv")
            with pytest.raises(BlobStoreError) as writing:
                store.put("raw/2013-01-02.csv", b"day two\n")
            _no_answer(writing, f"cannot write azure:{ACCOUNT_NAME}/{container}/raw/2013-01-02.csv")
        finally:
            os.killpg(azurite.pid, signal.SIGCONT)

        # Back: what was written before the freeze is intact, and writes work again.
        assert store.get("raw/2013-01-01.csv") == b"day one\n"
        store.put("raw/2013-01-02.csv", b"day two\n")
        assert [b.key for b in store.list("raw/")] == ["raw/2013-01-01.csv", "raw/2013-01-02.csv"]
