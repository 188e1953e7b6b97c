"""`collect_garbage` after publishes killed with SIGKILL, on the local store and on Azurite.

Each killed publish is a real subprocess running `ModelStore.publish`, killed -9 while its
upload is under way (local: while a `.tmp-` file is being written; Azure: once some files of
the version are committed), so the debris is exactly what a crash leaves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_assets.ops.processes import spawn, stop_groups
from ml_assets.storage import BlobStore, LocalBlobStore, ModelStore
from ml_assets.storage.model_gc import collect_garbage

NAME = "flights"
KILLED = 3
_PUBLISHER = """
import json, os, sys
from pathlib import Path
from ml_assets.storage import AzureBlobStore, LocalBlobStore, ModelStore
cfg = json.loads(sys.argv[1])
if cfg["backend"] == "local":
    blobs = LocalBlobStore(cfg["root"])
else:
    blobs = AzureBlobStore(cfg["container"], connection_string=os.environ["AZ_CONN"],
                           create_if_missing=False, max_single_put_size=1 << 20,
                           max_block_size=1 << 20, max_concurrency=1)
ModelStore(blobs, Path(cfg["cache"])).publish("flights", Path(cfg["source"]), {"flavor": "tf"})
"""


@pytest.fixture
def store(blob_store: BlobStore, tmp_path: Path) -> ModelStore:
    return ModelStore(blob_store, tmp_path / "cache")


def small_version(store: ModelStore, tmp_path: Path, seed: int) -> int:
    folder = tmp_path / f"small-{seed}"
    folder.mkdir()
    (folder / "model.bin").write_bytes(f"model {seed}".encode() * 100)
    return store.publish(NAME, folder, {"flavor": "tf"}).version


def big_source(tmp_path: Path) -> Path:
    """Five small files uploaded first, then a large one (upload order is by name)."""
    folder = tmp_path / "big"
    folder.mkdir()
    for letter in "abcde":
        (folder / f"{letter}.bin").write_bytes(os.urandom(3 << 19))
    (folder / "z.bin").write_bytes(os.urandom(48 << 20))
    return folder


def version_folders(store: ModelStore) -> dict[str, set[str]]:
    """Version folder -> names of its committed blobs."""
    folders: dict[str, set[str]] = {}
    for blob in store.blobs.list(f"models/{NAME}/"):
        version, _, rest = blob.key.split("/", 2)[2].partition("/")
        folders.setdefault(version, set()).add(rest)
    return folders


def upload_under_way(store: ModelStore, before: set[str]) -> bool:
    """A version folder started after `before` has its small files committed and (local)
    the large one being written to a `.tmp-` file: killing now leaves both kinds of debris."""
    for version, files in version_folders(store).items():
        if version in before or len(files - {".reserved"}) < 2:
            continue
        if not isinstance(store.blobs, LocalBlobStore):
            return True
        folder = store.blobs.root / "models" / NAME / version
        for name in os.listdir(folder):
            try:
                if name.startswith(".tmp-") and (folder / name).stat().st_size > 0:
                    return True
            except FileNotFoundError:
                continue  # renamed into place meanwhile
    return False


def start_publish(store: ModelStore, tmp_path: Path, request, source: Path, attempt: int):
    """`ModelStore.publish` of `source` in a subprocess (its own process group)."""
    config = {"backend": "local", "source": str(source), "cache": str(tmp_path / "pub-cache")}
    env = dict(os.environ)
    if isinstance(store.blobs, LocalBlobStore):
        config["root"] = str(store.blobs.root)
    else:
        config.update(backend="azure", container=store.blobs.container_name)
        env["AZ_CONN"] = request.getfixturevalue("azurite").connection_string
    return spawn(
        [sys.executable, "-c", _PUBLISHER, json.dumps(config)],
        log_path=tmp_path / f"publisher-{attempt}.log",
        env=env,
    )


def wait_until_under_way(store: ModelStore, process: subprocess.Popen, before: set[str]) -> bool:
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if upload_under_way(store, before):
            return True
        time.sleep(0.001)
    return False


def kill_publishes(store: ModelStore, tmp_path: Path, request, count: int) -> int:
    """Start publishes and SIGKILL each mid-upload; the number killed mid-way."""
    source = big_source(tmp_path)
    killed = 0
    for attempt in range(count + 3):  # a publish that wins the race just completes
        if killed == count:
            break
        before = set(version_folders(store))
        process = start_publish(store, tmp_path, request, source, attempt)
        try:
            if wait_until_under_way(store, process, before):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                killed += process.returncode == -signal.SIGKILL
        finally:
            stop_groups([process])
    return killed


def debris_bytes(store: ModelStore) -> int:
    """What gc should reclaim, counted independently: files of manifest-less version folders
    (except their `.reserved` claim) and `.tmp-` files anywhere in a local store."""
    blobs = store.blobs
    total = 0
    by_version: dict[str, dict[str, int]] = {}
    for blob in blobs.list(f"models/{NAME}/"):  # sizes, so not version_folders()
        version, _, rest = blob.key.split("/", 2)[2].partition("/")
        if version.isdigit():
            by_version.setdefault(version, {})[rest] = blob.size
    named = {str(e["version"]) for e in store.history(NAME)}
    for version, files in by_version.items():
        if "manifest.json" not in files and version not in named:
            total += sum(size for rel, size in files.items() if rel != ".reserved")
    if isinstance(blobs, LocalBlobStore):
        for d, _, names in os.walk(blobs.root):
            total += sum(Path(d, n).stat().st_size for n in names if n.startswith(".tmp-"))
    return total


def test_gc_reclaims_killed_publishes_and_never_touches_named_versions(store, tmp_path, request):
    v1, v2, v3 = (small_version(store, tmp_path, seed) for seed in (1, 2, 3))
    store.promote(NAME, v1, expected=None, reason="first")
    store.promote(NAME, v2, expected=v1, reason="better")
    assert kill_publishes(store, tmp_path, request, KILLED) == KILLED
    # A named version damaged into looking incomplete is evidence: never collected.
    store.blobs.delete(f"models/{NAME}/{v1}/manifest.json")
    # A fetch killed mid-download leaves a `.tmp-` folder in the cache.
    leftover = store.cache_dir / NAME / ".tmp-9-killed"
    leftover.mkdir(parents=True)
    (leftover / "part").write_bytes(b"x" * 1000)
    expected = debris_bytes(store) + 1000
    assert expected > 0
    listing = sorted((b.key, b.size) for b in store.blobs.list(""))

    young = collect_garbage(store, grace_seconds=3600)
    assert young.debris == []
    assert sum("younger than the grace period" in why for why in young.kept) == KILLED

    later = time.time() + 5  # everything above is now older than a zero grace period
    dry = collect_garbage(store, grace_seconds=0, now=later)
    assert dry.bytes == expected
    assert sorted((b.key, b.size) for b in store.blobs.list("")) == listing  # dry run
    assert leftover.exists()

    applied = collect_garbage(store, grace_seconds=0, now=later, apply=True)
    assert applied.bytes == expected
    assert [item.where for item in applied.debris] == [item.where for item in dry.debris]
    assert debris_bytes(store) == 0 and not leftover.exists()
    assert any("named by the champion pointer" in why for why in applied.kept)
    assert store.blobs.exists(f"models/{NAME}/{v1}/model.bin")
    assert store.champion(NAME).version == v2
    store.verify(NAME, v2)
    store.verify(NAME, v3)
    # Collected numbers stay claimed: the next publish gets a new one.
    assert small_version(store, tmp_path, 4) == v3 + KILLED + 1
    assert collect_garbage(store, grace_seconds=0, now=time.time() + 5, apply=True).debris == []


def test_a_publish_outliving_the_grace_period_fails_instead_of_going_visible(
    store, tmp_path, request
):
    """Paused (SIGSTOP) mid-upload while gc collects its version: resumed, it must fail."""
    process = start_publish(store, tmp_path, request, big_source(tmp_path), 0)
    try:
        assert wait_until_under_way(store, process, set())
        os.killpg(process.pid, signal.SIGSTOP)
        report = collect_garbage(store, grace_seconds=0, now=time.time() + 5, apply=True)
        assert report.debris
        claim = json.loads(store.blobs.get(f"models/{NAME}/1/.reserved"))
        assert claim["collected_by"] == "ml-assets gc"
        os.killpg(process.pid, signal.SIGCONT)
        assert process.wait(timeout=120) != 0
    finally:
        stop_groups([process])
    log = (tmp_path / "publisher-0.log").read_text()
    if not isinstance(store.blobs, LocalBlobStore):  # local: its temp file vanished first
        assert "was collected by `ml-assets gc` while the publish ran" in log
    assert "BlobStoreError" in log
    assert store.versions(NAME) == []


def test_gc_refuses_a_negative_grace_period(store):
    with pytest.raises(ValueError, match="grace period must be >= 0"):
        collect_garbage(store, grace_seconds=-1)


def test_gc_sweeps_spark_staging_left_by_killed_writes_and_no_table(store, tmp_path):
    """`_staging/<table>-<id>/` (DatasetStore.new_staging) is debris once past the grace period."""
    store.blobs.put("_staging/features-1-abc/date=2013-01-01/part-0.parquet", b"p" * 300)
    store.blobs.put("_staging/features-1-abc/_SUCCESS", b"")
    store.blobs.put("tables/features/date=2013-01-01/v=1/part-0.parquet", b"t" * 50)
    assert collect_garbage(store, grace_seconds=3600, apply=True).debris == []
    report = collect_garbage(store, grace_seconds=0, now=time.time() + 5, apply=True)
    assert {(item.kind, item.size) for item in report.debris} == {
        ("spark staging", 300),
        ("spark staging", 0),
    }
    assert [blob.key for blob in store.blobs.list("_staging/")] == []
    assert store.blobs.get("tables/features/date=2013-01-01/v=1/part-0.parquet") == b"t" * 50
