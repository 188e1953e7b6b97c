"""BlobStore behaviour, run against every backend (local folder and Azurite) via `blob_store`."""

from __future__ import annotations

import builtins
import hashlib
import os
import threading
from pathlib import Path

import pytest

from ml_assets.storage import (
    AzureBlobStore,
    BlobConflictError,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    LocalBlobStore,
)
from ml_assets_tests.fixtures import azurite as azurite_fixtures

MIB = 1 << 20


def payload(size: int, seed: int) -> bytes:
    """Deterministic, non-repeating-looking bytes, different for every seed."""
    block = hashlib.sha256(f"seed-{seed}".encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_foreign(store: BlobStore, key: str, data: bytes) -> None:
    """Write a blob the way another tool would: without the store's sha256 bookkeeping."""
    if isinstance(store, LocalBlobStore):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    elif isinstance(store, AzureBlobStore):
        store.container.upload_blob(key, data, overwrite=True)
    else:  # pragma: no cover
        raise TypeError(type(store))


class FailingReader:
    """A binary file that raises OSError once more than `fail_after` bytes were read."""

    def __init__(self, real, fail_after: int):
        self._real = real
        self._fail_after = fail_after
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._real.read(size)
        self._read += len(chunk)
        if self._read > self._fail_after:
            raise OSError("simulated read failure")
        return chunk

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()


@pytest.fixture
def failing_source(monkeypatch: pytest.MonkeyPatch):
    """Make reads of one path fail partway, whichever backend opens it."""

    def arm(path: Path, fail_after: int) -> None:
        real_open = builtins.open
        target = os.path.realpath(path)

        def patched_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if isinstance(file, str | os.PathLike) and os.path.realpath(file) == target:
                return FailingReader(handle, fail_after)
            return handle

        monkeypatch.setattr(builtins, "open", patched_open)

    return arm


# -- round trips ---------------------------------------------------------------------------


def test_put_get_round_trip(blob_store: BlobStore):
    info = blob_store.put("a/b/hello.txt", b"hello world")
    assert blob_store.get("a/b/hello.txt") == b"hello world"
    assert info.key == "a/b/hello.txt"
    assert info.size == 11
    assert info.sha256 == sha(b"hello world")
    assert info.last_modified > 0
    assert blob_store.exists("a/b/hello.txt")


def test_empty_blob(blob_store: BlobStore):
    info = blob_store.put("empty", b"")
    assert blob_store.get("empty") == b""
    assert (info.size, info.sha256) == (0, sha(b""))
    assert blob_store.info("empty").size == 0


def test_info_and_list_carry_size_and_sha256(blob_store: BlobStore):
    blob_store.put("t/one", b"1")
    blob_store.put("t/two", b"22")
    info = blob_store.info("t/two")
    assert (info.key, info.size, info.sha256) == ("t/two", 2, sha(b"22"))
    listed = {b.key: (b.size, b.sha256) for b in blob_store.list("t/")}
    assert listed == {"t/one": (1, sha(b"1")), "t/two": (2, sha(b"22"))}


def test_list_by_prefix_in_key_order(blob_store: BlobStore):
    keys = ["p/b/2", "p/a", "p/b/1", "p/c", "pq/x", "q/p/a", "p-sibling"]
    for key in keys:
        blob_store.put(key, key.encode())
    assert [b.key for b in blob_store.list("p/")] == ["p/a", "p/b/1", "p/b/2", "p/c"]
    assert [b.key for b in blob_store.list("p/b/")] == ["p/b/1", "p/b/2"]
    # A prefix that is not a folder boundary matches by string, like Azure does.
    assert [b.key for b in blob_store.list("p")] == [
        "p-sibling",
        "p/a",
        "p/b/1",
        "p/b/2",
        "p/c",
        "pq/x",
    ]
    assert [b.key for b in blob_store.list()] == sorted(keys)
    assert list(blob_store.list("nothing/")) == []


def test_replace_changes_sha_and_content(blob_store: BlobStore):
    first = blob_store.put("k", b"first")
    second = blob_store.put("k", b"second!")
    assert first.sha256 != second.sha256
    assert blob_store.get("k") == b"second!"
    assert blob_store.info("k").sha256 == sha(b"second!")
    assert [(b.key, b.size, b.sha256) for b in blob_store.list("k")] == [("k", 7, sha(b"second!"))]


def test_foreign_blob_gets_its_sha256_computed(blob_store: BlobStore):
    write_foreign(blob_store, "foreign/x.bin", b"written by someone else")
    info = blob_store.info("foreign/x.bin")
    assert (info.size, info.sha256) == (23, sha(b"written by someone else"))
    assert [b.sha256 for b in blob_store.list("foreign/")] == [sha(b"written by someone else")]
    if isinstance(blob_store, AzureBlobStore):
        # Computed once, then recorded in the blob's metadata.
        props = blob_store.container.get_blob_client("foreign/x.bin").get_blob_properties()
        assert props.metadata["sha256"] == sha(b"written by someone else")
    # Replaced by someone else again: the new content's hash, not the recorded one.
    write_foreign(blob_store, "foreign/x.bin", b"changed")
    assert blob_store.info("foreign/x.bin").sha256 == sha(b"changed")


# -- errors --------------------------------------------------------------------------------


def test_missing_blob_raises_naming_it(blob_store: BlobStore, tmp_path: Path):
    for action in (
        lambda: blob_store.get("no/such/blob"),
        lambda: blob_store.info("no/such/blob"),
        lambda: blob_store.download_file("no/such/blob", tmp_path / "out"),
    ):
        with pytest.raises(BlobNotFoundError) as caught:
            action()
        message = str(caught.value)
        assert "no/such/blob" in message
        assert blob_store.location in message
        if isinstance(blob_store, AzureBlobStore):
            assert f"{blob_store.container_name}/no/such/blob" in message
    assert not (tmp_path / "out").exists()
    assert not blob_store.exists("no/such/blob")
    # BlobNotFoundError is also a FileNotFoundError, for callers that only know the stdlib.
    with pytest.raises(FileNotFoundError):
        blob_store.get("no/such/blob")


def test_a_prefix_of_other_blobs_is_not_a_blob(blob_store: BlobStore):
    blob_store.put("dir/file", b"x")
    with pytest.raises(BlobNotFoundError):
        blob_store.get("dir")
    with pytest.raises(BlobNotFoundError):
        blob_store.info("dir")
    assert not blob_store.exists("dir")
    assert not blob_store.exists("dir/file/below")


@pytest.mark.parametrize(
    "key", ["", "/abs", "trailing/", "a//b", "a/./b", "../escape", "a/../../b", "."]
)
def test_invalid_keys_are_rejected(blob_store: BlobStore, key: str, tmp_path: Path):
    for action in (
        lambda: blob_store.put(key, b"x"),
        lambda: blob_store.get(key),
        lambda: blob_store.info(key),
        lambda: blob_store.delete(key),
        lambda: blob_store.put_file(key, tmp_path / "irrelevant"),
        lambda: blob_store.download_file(key, tmp_path / "out"),
    ):
        with pytest.raises(BlobStoreError, match="invalid blob key"):
            action()
    assert list(blob_store.list()) == []


# -- delete --------------------------------------------------------------------------------


def test_delete_and_delete_prefix(blob_store: BlobStore):
    for key in ["d/1", "d/2", "d/sub/3", "dx/4", "e/5"]:
        blob_store.put(key, b"x")
    blob_store.delete("d/1")
    assert not blob_store.exists("d/1")
    blob_store.delete("d/1")  # deleting a missing blob is not an error
    blob_store.delete("never/written")
    assert blob_store.delete_prefix("d/") == 2
    assert [b.key for b in blob_store.list()] == ["dx/4", "e/5"]
    assert blob_store.delete_prefix("d/") == 0
    assert blob_store.get("dx/4") == b"x"


# -- files ---------------------------------------------------------------------------------


def test_put_file_and_download_file_of_a_multi_mb_file(blob_store: BlobStore, tmp_path: Path):
    data = payload(5 * MIB + 123, seed=1)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    info = blob_store.put_file("files/big.bin", source)
    assert (info.size, info.sha256) == (len(data), sha(data))
    assert blob_store.info("files/big.bin").sha256 == sha(data)
    assert [(b.size, b.sha256) for b in blob_store.list("files/")] == [(len(data), sha(data))]

    target = tmp_path / "down" / "deep" / "big.bin"
    blob_store.download_file("files/big.bin", target)
    assert sha(target.read_bytes()) == sha(data)
    assert os.listdir(target.parent) == ["big.bin"]  # no temp file left behind
    # Downloading over an existing file replaces it.
    blob_store.put("files/big.bin", b"small now")
    blob_store.download_file("files/big.bin", target)
    assert target.read_bytes() == b"small now"


def test_put_file_of_a_small_file(blob_store: BlobStore, tmp_path: Path):
    source = tmp_path / "small.txt"
    source.write_bytes(b"tiny")
    info = blob_store.put_file("small.txt", source)
    assert (info.size, info.sha256) == (4, sha(b"tiny"))
    assert blob_store.get("small.txt") == b"tiny"


def test_put_file_of_a_missing_file_names_blob_and_file(blob_store: BlobStore, tmp_path: Path):
    with pytest.raises(BlobStoreError) as caught:
        blob_store.put_file("x", tmp_path / "missing.bin")
    assert "missing.bin" in str(caught.value)
    assert blob_store.describe("x") in str(caught.value)
    assert not blob_store.exists("x")


def test_local_dir_holds_every_blob_under_the_prefix(blob_store: BlobStore, tmp_path: Path):
    blob_store.put("v/1/part-0", b"zero")
    blob_store.put("v/1/sub/part-1", b"one")
    blob_store.put("v/10/other", b"not mine")
    cache = tmp_path / "cache"
    folder = blob_store.local_dir("v/1", cache)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert (folder / "part-0").read_bytes() == b"zero"
    assert (folder / "sub" / "part-1").read_bytes() == b"one"
    if isinstance(blob_store, LocalBlobStore):
        assert folder == blob_store.root / "v/1"  # the store's own folder, nothing copied
        assert not cache.exists()
        assert files == ["part-0", "sub/part-1"]
    else:
        assert folder.is_relative_to(cache)
        assert files == [".complete", "part-0", "sub/part-1"]
        # Cached: a second call does not download again, even if the blob disappeared.
        blob_store.delete("v/1/part-0")
        assert blob_store.local_dir("v/1/", cache) == folder
        assert (folder / "part-0").read_bytes() == b"zero"
    with pytest.raises(BlobNotFoundError, match="nothing"):
        blob_store.local_dir("nothing", cache)


# -- atomicity -----------------------------------------------------------------------------


def test_concurrent_reader_sees_only_whole_payloads(blob_store: BlobStore, tmp_path: Path):
    first, second = payload(3 * MIB, seed=2), payload(3 * MIB + 4096, seed=3)
    expected = {sha(first): "first", sha(second): "second"}
    source = tmp_path / "second.bin"
    source.write_bytes(second)
    blob_store.put("race/blob", first)

    writes = 12
    seen: list[str] = []
    errors: list[BaseException] = []
    writer_done = threading.Event()

    def reader() -> None:
        try:
            # Bounded: stops when the writer is done, or after 500 reads at most.
            for _ in range(500):
                seen.append(sha(blob_store.get("race/blob")))
                if writer_done.is_set():
                    break
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(writes):
            if i % 2:
                blob_store.put("race/blob", first)
            else:
                blob_store.put_file("race/blob", source)  # the streamed path too
    finally:
        writer_done.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert errors == []
    assert seen, "the reader never read"
    assert [h for h in seen if h not in expected] == [], "a reader saw a partial or mixed blob"
    assert blob_store.get("race/blob") == first
    assert blob_store.info("race/blob").sha256 == sha(first)


def test_failed_put_file_leaves_previous_blob_intact(
    blob_store: BlobStore, tmp_path: Path, failing_source
):
    old = payload(2 * MIB, seed=4)
    blob_store.put("atomic/blob", old)
    new = tmp_path / "new.bin"
    new.write_bytes(payload(5 * MIB, seed=5))
    failing_source(new, fail_after=3 * MIB)

    with pytest.raises(BlobStoreError) as caught:
        blob_store.put_file("atomic/blob", new)
    assert "simulated read failure" in str(caught.value)
    assert blob_store.describe("atomic/blob") in str(caught.value)
    assert blob_store.get("atomic/blob") == old
    info = blob_store.info("atomic/blob")
    assert (info.size, info.sha256) == (len(old), sha(old))

    # A failed first write leaves no blob at all, and no debris in listings.
    with pytest.raises(BlobStoreError):
        blob_store.put_file("atomic/fresh", new)
    assert not blob_store.exists("atomic/fresh")
    assert [b.key for b in blob_store.list()] == ["atomic/blob"]


# -- backend specifics ---------------------------------------------------------------------


def test_local_location(tmp_path: Path):
    store = LocalBlobStore(tmp_path / "s")
    assert store.location == f"local:{(tmp_path / 's').resolve()}"
    assert store.describe("a/b") == f"local:{(tmp_path / 's').resolve()}/a/b"


@pytest.mark.azurite
def test_azure_from_account_url_and_key(azurite: azurite_fixtures.Azurite):
    store = AzureBlobStore.from_account_url(
        "by-account-url", azurite.account_url, credential=azurite.account_key
    )
    try:
        assert store.location == f"azure:{azurite.account_name}/by-account-url"
        store.put("x", b"via account url")
        # The same container through a connection string, which already exists.
        again = AzureBlobStore.from_connection_string("by-account-url", azurite.connection_string)
        assert again.get("x") == b"via account url"
        again.close()
    finally:
        store.container.delete_container()
        store.close()


@pytest.mark.azurite
def test_azure_missing_container_is_an_error_naming_it(azurite: azurite_fixtures.Azurite):
    store = AzureBlobStore(
        "does-not-exist", connection_string=azurite.connection_string, create_if_missing=False
    )
    try:
        with pytest.raises(BlobNotFoundError, match=r"does-not-exist/k.*container does not exist"):
            store.get("k")
        with pytest.raises(BlobStoreError, match="does-not-exist/k") as caught:
            store.put("k", b"x")
        assert not isinstance(caught.value, BlobNotFoundError)
        with pytest.raises(BlobStoreError, match="does-not-exist"):
            list(store.list())
    finally:
        store.close()


@pytest.mark.azurite
def test_azure_wrong_key_is_a_blob_store_error(azurite: azurite_fixtures.Azurite, azure_store):
    azure_store.put("k", b"x")
    wrong = AzureBlobStore(
        azure_store.container_name,
        account_url=azurite.account_url,
        credential="d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=",
        create_if_missing=False,
        retry_total=0,
    )
    try:
        with pytest.raises(BlobStoreError, match=f"{azure_store.container_name}/k"):
            wrong.get("k")
    finally:
        wrong.close()


def test_azurite_binary_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("AZURITE_BLOB_BIN", "/opt/custom/azurite-blob")
    assert azurite_fixtures.find_azurite_blob() == "/opt/custom/azurite-blob"
    monkeypatch.delenv("AZURITE_BLOB_BIN")
    repo_tool = azurite_fixtures.REPO_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if repo_tool.is_file():
        assert azurite_fixtures.find_azurite_blob() == str(repo_tool)
    monkeypatch.setattr(azurite_fixtures, "REPO_ROOT", tmp_path)
    fake = tmp_path / "bin" / "azurite-blob"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert azurite_fixtures.find_azurite_blob() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert azurite_fixtures.find_azurite_blob() is None


# -- compare-and-swap ----------------------------------------------------------------------


def test_put_if_none_creates_once_then_conflicts(blob_store: BlobStore):
    info = blob_store.put_if("cas/new", b"first", None)
    assert (info.size, info.sha256) == (5, sha(b"first"))
    assert info.etag
    with pytest.raises(BlobConflictError) as caught:
        blob_store.put_if("cas/new", b"second", None)
    assert blob_store.describe("cas/new") in str(caught.value)
    assert not isinstance(caught.value, BlobNotFoundError)
    assert blob_store.get("cas/new") == b"first"
    # The conflicting write left nothing behind (no temp file in listings either).
    assert [(b.key, b.sha256) for b in blob_store.list("cas/")] == [("cas/new", sha(b"first"))]


def test_get_with_etag_matches_write_etag_and_changes_on_every_write(blob_store: BlobStore):
    written = blob_store.put("cas/k", b"v1")
    data, etag = blob_store.get_with_etag("cas/k")
    assert (data, etag) == (b"v1", written.etag)
    # Rewriting identical content still changes the etag, as on Azure.
    again = blob_store.put_if("cas/k", b"v1", etag)
    assert again.etag != etag
    assert blob_store.get_with_etag("cas/k") == (b"v1", again.etag)
    with pytest.raises(BlobNotFoundError, match="cas/missing"):
        blob_store.get_with_etag("cas/missing")


def test_put_if_with_a_stale_etag_conflicts(blob_store: BlobStore):
    blob_store.put("cas/k", b"v1")
    _, etag1 = blob_store.get_with_etag("cas/k")
    info = blob_store.put_if("cas/k", b"v2", etag1)
    assert blob_store.get_with_etag("cas/k") == (b"v2", info.etag)
    assert blob_store.info("cas/k").sha256 == sha(b"v2")  # sha256 bookkeeping kept
    with pytest.raises(BlobConflictError, match="cas/k"):
        blob_store.put_if("cas/k", b"v3 from a stale read", etag1)
    # A plain put in between also invalidates the etag read before it.
    blob_store.put("cas/k", b"v2")
    with pytest.raises(BlobConflictError):
        blob_store.put_if("cas/k", b"v3", info.etag)
    # Deleted meanwhile: an etag no longer matches, and None now creates.
    _, etag = blob_store.get_with_etag("cas/k")
    blob_store.delete("cas/k")
    with pytest.raises(BlobConflictError):
        blob_store.put_if("cas/k", b"v4", etag)
    assert not blob_store.exists("cas/k")
    blob_store.put_if("cas/k", b"v5", None)
    assert blob_store.get("cas/k") == b"v5"


def test_put_if_of_a_multi_mb_payload(blob_store: BlobStore):
    """Above max_single_put_size Azure stages blocks: the condition goes on the commit."""
    big = payload(3 * MIB, seed=7)
    blob_store.put_if("cas/big", big, None)
    with pytest.raises(BlobConflictError):
        blob_store.put_if("cas/big", payload(3 * MIB, seed=8), None)
    _, etag = blob_store.get_with_etag("cas/big")
    newer = payload(3 * MIB, seed=9)
    blob_store.put_if("cas/big", newer, etag)
    with pytest.raises(BlobConflictError):
        blob_store.put_if("cas/big", big, etag)
    assert blob_store.get("cas/big") == newer
    assert blob_store.info("cas/big").sha256 == sha(newer)


def increment(store: BlobStore, key: str, times: int) -> int:
    """Add `times` to a decimal counter blob with get_with_etag/put_if; return the retries."""
    retries = 0
    for _ in range(times):
        while True:
            try:
                raw, etag = store.get_with_etag(key)
            except BlobNotFoundError:
                raw, etag = b"0", None
            try:
                store.put_if(key, str(int(raw) + 1).encode(), etag)
                break
            except BlobConflictError:
                retries += 1
    return retries


def test_threads_racing_on_a_counter_lose_no_increment(blob_store: BlobStore):
    threads, per_thread = 8, 15
    barrier = threading.Barrier(threads)
    retries: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            retries.append(increment(blob_store, "cas/counter", per_thread))
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=300)
    assert errors == []
    assert int(blob_store.get("cas/counter")) == threads * per_thread
    assert sum(retries) > 0, "the threads never actually raced"


def _process_increment(root: str, key: str, times: int, start, results) -> None:
    start.wait()
    results.put(increment(LocalBlobStore(root), key, times))


def test_local_processes_racing_on_a_counter_lose_no_increment(tmp_path: Path):
    """flock(2) locks exclude other processes too, not only other threads."""
    import multiprocessing

    processes, per_process = 4, 40
    # fork: the children need nothing but this already-imported module, and start fast.
    context = multiprocessing.get_context("fork")
    root = str(tmp_path / "store")
    start, results = context.Event(), context.Queue()
    pool = [
        context.Process(
            target=_process_increment, args=(root, "cas/counter", per_process, start, results)
        )
        for _ in range(processes)
    ]
    for process in pool:
        process.start()
    start.set()
    try:
        retries = [results.get(timeout=300) for _ in pool]
    finally:
        for process in pool:
            process.join(timeout=30)
    assert [process.exitcode for process in pool] == [0] * processes
    store = LocalBlobStore(root)
    assert int(store.get("cas/counter")) == processes * per_process
    assert sum(retries) > 0, "the processes never actually raced"
    # Lock files are internal: never listed.
    assert [b.key for b in store.list()] == ["cas/counter"]


def test_local_put_if_waits_for_the_key_lock_then_rechecks(tmp_path: Path):
    """The etag check happens under the lock: a swap made meanwhile is seen, not overwritten."""
    store = LocalBlobStore(tmp_path / "store")
    store.put("a", b"1")
    _, etag = store.get_with_etag("a")
    with store._locked("a"):
        # Same stripe, same key, from another thread: waits for the lock, then conflicts.
        done = threading.Event()
        outcome: list[object] = []

        def contender() -> None:
            try:
                outcome.append(store.put_if("a", b"2", etag))
            except BlobConflictError as exc:
                outcome.append(exc)
            done.set()

        thread = threading.Thread(target=contender)
        thread.start()
        assert not done.wait(0.3), "put_if did not wait for the key's lock"
        # Replace the blob while holding the lock, as a concurrent writer would.
        (store.root / "a").write_bytes(b"changed underneath")
    thread.join(timeout=10)
    assert isinstance(outcome[0], BlobConflictError)
    assert store.get("a") == b"changed underneath"


def test_content_digest_hashes_the_bytes_not_the_record(blob_store: BlobStore):
    """`info` may trust what was recorded at write time; `content_digest` reads every byte."""
    from ml_assets_tests.storage.tamper import rot

    data = os.urandom(3 << 20)  # several blocks on the test Azurite
    blob_store.put("rot/blob.bin", data)
    assert blob_store.content_digest("rot/blob.bin") == (
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    rot(blob_store, "rot/blob.bin", offset=len(data) - 1)
    rotten = bytearray(data)
    rotten[-1] ^= 1
    assert blob_store.info("rot/blob.bin").sha256 == hashlib.sha256(data).hexdigest()  # record
    assert blob_store.content_digest("rot/blob.bin") == (
        len(data),
        hashlib.sha256(rotten).hexdigest(),
    )
    with pytest.raises(BlobNotFoundError):
        blob_store.content_digest("rot/missing.bin")


def test_azure_content_replaced_with_metadata_kept_is_named_at_once(azure_store):
    from ml_assets.storage.base import BlobCorruptError
    from ml_assets_tests.storage.tamper import replace_keeping_metadata

    azure_store.put("k/blob.bin", b"the original content")
    replace_keeping_metadata(azure_store, "k/blob.bin", b"something else entirely")
    for read in (
        lambda: azure_store.get("k/blob.bin"),
        lambda: azure_store.get_with_etag("k/blob.bin"),
    ):
        with pytest.raises(BlobCorruptError) as caught:
            read()
        message = str(caught.value)
        assert "replaced with its metadata kept, or damaged" in message
        assert "k/blob.bin" in message and "continuously" not in message


def test_local_stale_temp_files_are_listed_and_deleted(tmp_path: Path):
    store = LocalBlobStore(tmp_path / "store")
    store.put("a/b.bin", b"kept")
    debris = store.root / "a" / ".tmp-killedwrite"
    debris.write_bytes(b"x" * 123)
    os.utime(debris, (1_000_000, 1_000_000))
    fresh = store.root / "a" / ".tmp-running"
    fresh.write_bytes(b"y")
    assert store.stale_temp_files(older_than=2_000_000) == [("a/.tmp-killedwrite", 123)]
    store.delete_temp_file("a/.tmp-killedwrite")
    assert not debris.exists() and fresh.exists() and store.get("a/b.bin") == b"kept"
    with pytest.raises(BlobStoreError, match="not a temp file"):
        store.delete_temp_file("a/b.bin")


def test_local_delete_prefix_drops_the_folders_a_rename_emptied(tmp_path: Path):
    # Publishing staged files renames them out of their folders: no delete prunes those folders then.
    store = LocalBlobStore(tmp_path / "s")
    store.put("staging/run-1/day=2024-01-01/part-0.parquet", b"rows")
    store.put("staging/run-1/_SUCCESS", b"")
    store.put("staging/run-2/part-0.parquet", b"other write")
    (tmp_path / "s" / "published").mkdir()
    os.replace(tmp_path / "s" / "staging/run-1/day=2024-01-01/part-0.parquet", tmp_path / "s" / "published/part-0.parquet")

    assert store.delete_prefix("staging/run-1/") == 1  # the marker; the data file was moved out
    assert not (tmp_path / "s" / "staging" / "run-1").exists()
    assert store.get("staging/run-2/part-0.parquet") == b"other write"  # another staging prefix is kept
    assert (tmp_path / "s" / "published" / "part-0.parquet").read_bytes() == b"rows"
