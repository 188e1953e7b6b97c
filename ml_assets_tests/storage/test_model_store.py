"""ModelStore: versioned model artifacts and the champion pointer, on every backend."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime
from pathlib import Path

import pytest

from ml_assets.storage import (
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    ModelIntegrityError,
    ModelStore,
    PromotionConflictError,
)

NAME = "flights"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_dir(root: Path, seed: int = 0) -> Path:
    """A SavedModel-shaped folder: graph, variables in a subfolder, an asset."""
    folder = root / f"model-{seed}"
    (folder / "variables").mkdir(parents=True)
    (folder / "assets").mkdir()
    (folder / "saved_model.pb").write_bytes(f"graph {seed}".encode())
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(range(256)) * 40)
    (folder / "variables" / "variables.index").write_bytes(f"index {seed}".encode())
    (folder / "assets" / "vocab.txt").write_text(f"JFK\nLGA\nEWR\n{seed}\n")
    return folder


FILES = [
    "assets/vocab.txt",
    "saved_model.pb",
    "variables/variables.data-00000-of-00001",
    "variables/variables.index",
]


@pytest.fixture
def store(blob_store: BlobStore, tmp_path: Path) -> ModelStore:
    return ModelStore(blob_store, tmp_path / "cache")


def publish(store: ModelStore, tmp_path: Path, seed: int, **extra) -> int:
    return store.publish(NAME, model_dir(tmp_path / "src", seed), {"flavor": "tf", **extra}).version


# -- publish -------------------------------------------------------------------------------


def test_publish_allocates_1_2_3(store: ModelStore, tmp_path: Path):
    assert store.versions(NAME) == []
    assert [publish(store, tmp_path, seed) for seed in range(3)] == [1, 2, 3]
    assert store.versions(NAME) == [1, 2, 3]
    # Other names have their own sequence; "flights" is not a prefix match of "flights2".
    assert store.publish("flights2", model_dir(tmp_path / "o", 9), {}).version == 1
    assert store.versions(NAME) == [1, 2, 3]
    # TF Serving's base-path layout: integer folders under models/<name>/.
    keys = [b.key for b in store.blobs.list(f"models/{NAME}/2/")]
    assert sorted(keys) == sorted(
        [f"models/{NAME}/2/{f}" for f in FILES]
        + [f"models/{NAME}/2/manifest.json", f"models/{NAME}/2/.reserved"]
    )


def test_manifest_holds_caller_fields_and_per_file_sha256(store: ModelStore, tmp_path: Path):
    source = model_dir(tmp_path / "src", 1)
    published = store.publish(NAME, source, {"flavor": "tf", "metrics": {"auc": 0.71}})
    assert (published.name, published.version) == (NAME, 1)
    manifest = store.get(NAME, 1).manifest
    assert manifest == published.manifest
    assert manifest["flavor"] == "tf" and manifest["metrics"] == {"auc": 0.71}
    assert (manifest["name"], manifest["version"]) == (NAME, 1)
    created = datetime.fromisoformat(manifest["created_at"])
    assert created.utcoffset().total_seconds() == 0
    assert sorted(manifest["files"]) == FILES
    for rel, entry in manifest["files"].items():
        data = (source / rel).read_bytes()
        assert entry == {"sha256": sha(data), "size": len(data)}
    # The stored manifest is the same JSON document.
    assert json.loads(store.blobs.get(f"models/{NAME}/1/manifest.json")) == manifest


def test_publish_refuses_bad_input_before_claiming_a_version(store: ModelStore, tmp_path: Path):
    with pytest.raises(ValueError, match="version"):
        store.publish(NAME, model_dir(tmp_path / "a"), {"version": 7})
    with pytest.raises(ValueError, match="invalid model name"):
        store.publish("../escape", model_dir(tmp_path / "b"), {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlobStoreError, match="empty"):
        store.publish(NAME, tmp_path / "empty", {})
    clash = model_dir(tmp_path / "c")
    (clash / "manifest.json").write_text("{}")
    with pytest.raises(BlobStoreError, match=r"manifest\.json"):
        store.publish(NAME, clash, {})
    with pytest.raises(TypeError):
        store.publish(NAME, model_dir(tmp_path / "d"), {"not json": object()})
    assert list(store.blobs.list("models/")) == []
    assert publish(store, tmp_path, 5) == 1


def test_failed_upload_leaves_an_invisible_version(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert publish(store, tmp_path, 0) == 1
    real_put_file = store.blobs.put_file
    calls = []

    def failing_put_file(key, path):
        calls.append(key)
        if len(calls) == 2:
            raise BlobStoreError(f"simulated network failure writing {key}")
        return real_put_file(key, path)

    monkeypatch.setattr(store.blobs, "put_file", failing_put_file)
    with pytest.raises(BlobStoreError, match="simulated network failure"):
        publish(store, tmp_path, 1)
    monkeypatch.undo()

    assert store.versions(NAME) == [1]
    with pytest.raises(ModelIntegrityError) as caught:
        store.get(NAME, 2)
    assert (caught.value.name, caught.value.version, caught.value.file) == (
        NAME,
        2,
        "manifest.json",
    )
    assert "incomplete" in str(caught.value)
    with pytest.raises(ModelIntegrityError):
        store.fetch(NAME, 2)
    with pytest.raises(ModelIntegrityError):
        store.promote(NAME, 2, expected=None, reason="must not work")
    assert store.champion(NAME).version is None
    # The number stays burnt: the next publish does not reuse it.
    assert publish(store, tmp_path, 2) == 3
    assert store.versions(NAME) == [1, 3]


def test_missing_version_is_not_found(store: ModelStore, tmp_path: Path):
    publish(store, tmp_path, 0)
    with pytest.raises(BlobNotFoundError, match=f"{NAME} has no version 9"):
        store.get(NAME, 9)
    with pytest.raises(ValueError):
        store.get(NAME, 0)


def test_concurrent_publishes_get_distinct_versions(store: ModelStore, tmp_path: Path):
    threads = 6
    sources = [model_dir(tmp_path / "src", seed) for seed in range(threads)]
    barrier = threading.Barrier(threads)
    published: list[int] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            published.append(store.publish(NAME, sources[index], {"seed": index}).version)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=300)
    assert errors == []
    assert sorted(published) == list(range(1, threads + 1))
    assert store.versions(NAME) == list(range(1, threads + 1))
    # Each version holds the files of the publisher that claimed it.
    seeds = {store.get(NAME, v).manifest["seed"] for v in store.versions(NAME)}
    assert seeds == set(range(threads))
    for version in store.versions(NAME):
        seed = store.get(NAME, version).manifest["seed"]
        fetched = store.fetch(NAME, version)
        assert (fetched / "saved_model.pb").read_bytes() == f"graph {seed}".encode()


# -- fetch ---------------------------------------------------------------------------------


def test_fetch_returns_every_file_verified_and_cached(store: ModelStore, tmp_path: Path):
    source = model_dir(tmp_path / "src", 3)
    store.publish(NAME, source, {})
    folder = store.fetch(NAME, 1)
    assert folder.is_relative_to(store.cache_dir)
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert found == FILES
    for rel in FILES:
        assert (folder / rel).read_bytes() == (source / rel).read_bytes()
    assert store.fetch(NAME, 1) == folder  # cached


@pytest.mark.parametrize("damage", ["tampered", "missing", "extra"])
def test_fetch_refuses_a_damaged_version_naming_the_file(
    store: ModelStore, tmp_path: Path, damage: str
):
    publish(store, tmp_path, 0)
    store.fetch(NAME, 1)  # a good copy in the cache does not hide damage in the store
    prefix = f"models/{NAME}/1"
    if damage == "tampered":
        store.blobs.put(f"{prefix}/variables/variables.index", b"index 666")
        bad = "variables/variables.index"
    elif damage == "missing":
        store.blobs.delete(f"{prefix}/assets/vocab.txt")
        bad = "assets/vocab.txt"
    else:
        store.blobs.put(f"{prefix}/variables/backdoor.bin", b"surprise")
        bad = "variables/backdoor.bin"
    with pytest.raises(ModelIntegrityError) as caught:
        store.fetch(NAME, 1)
    assert caught.value.file == bad
    assert bad in str(caught.value)
    assert (caught.value.name, caught.value.version) == (NAME, 1)
    assert damage in str(caught.value) or (damage == "tampered" and "changed" in str(caught.value))
    with pytest.raises(ModelIntegrityError):
        store.promote(NAME, 1, expected=None, reason="damaged")


def test_fetch_refuses_a_download_that_does_not_match(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Content changed behind consistent-looking metadata is caught on download."""
    publish(store, tmp_path, 0)
    real_download = store.blobs.download_file

    def corrupting_download(key, path):
        real_download(key, path)
        if key.endswith("saved_model.pb"):
            Path(path).write_bytes(b"corrupted in transit")

    monkeypatch.setattr(store.blobs, "download_file", corrupting_download)
    with pytest.raises(ModelIntegrityError) as caught:
        store.fetch(NAME, 1)
    assert caught.value.file == "saved_model.pb"
    assert not (store.cache_dir / NAME / "1").exists()
    monkeypatch.undo()
    assert (store.fetch(NAME, 1) / "saved_model.pb").read_bytes() == b"graph 0"


def test_fetch_replaces_a_locally_tampered_cached_copy(store: ModelStore, tmp_path: Path):
    publish(store, tmp_path, 0)
    folder = store.fetch(NAME, 1)
    (folder / "saved_model.pb").write_bytes(b"edited in the cache")
    (folder / "stray.txt").write_text("left behind")
    again = store.fetch(NAME, 1)
    assert again == folder
    assert (again / "saved_model.pb").read_bytes() == b"graph 0"
    assert not (again / "stray.txt").exists()
    (folder / "variables" / "variables.index").unlink()
    assert (store.fetch(NAME, 1) / "variables" / "variables.index").read_bytes() == b"index 0"


# -- champion ------------------------------------------------------------------------------


def test_promote_and_history(store: ModelStore, tmp_path: Path):
    for seed in range(3):
        publish(store, tmp_path, seed)
    empty = store.champion(NAME)
    assert (empty.version, empty.history, empty.etag) == (None, [], None)
    first = store.promote(NAME, 1, expected=None, reason="first model", actor="ci")
    assert (first.version, first.etag) == (1, store.champion(NAME).etag)
    second = store.promote(NAME, 2, expected=1, reason="better", forced=True, actor="alice")
    assert second.version == 2
    assert store.champion(NAME).version == 2
    history = store.history(NAME)
    assert [
        (h["version"], h["previous"], h["forced"], h["actor"], h["reason"]) for h in history
    ] == [
        (1, None, False, "ci", "first model"),
        (2, 1, True, "alice", "better"),
    ]
    assert all(datetime.fromisoformat(h["at"]).utcoffset().total_seconds() == 0 for h in history)
    # A stale expectation is refused and changes nothing.
    with pytest.raises(PromotionConflictError) as caught:
        store.promote(NAME, 3, expected=1, reason="stale view")
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert "expected champion version 1" in str(caught.value)
    assert "version 2" in str(caught.value)
    assert len(store.history(NAME)) == 2


def test_promote_of_a_missing_version_refuses(store: ModelStore, tmp_path: Path):
    publish(store, tmp_path, 0)
    with pytest.raises(BlobNotFoundError, match="no version 5"):
        store.promote(NAME, 5, expected=None, reason="does not exist")
    assert store.champion(NAME).version is None
    assert store.history(NAME) == []


@pytest.mark.parametrize("expected", [None, 1], ids=["first-champion", "replace-champion"])
def test_concurrent_promotions_exactly_one_wins(
    store: ModelStore, tmp_path: Path, expected: int | None
):
    for seed in range(3):
        publish(store, tmp_path, seed)
    if expected is not None:
        store.promote(NAME, expected, expected=None, reason="setup")
    before = len(store.history(NAME))
    barrier = threading.Barrier(2)
    outcomes: dict[int, object] = {}

    def promote(version: int) -> None:
        barrier.wait()
        try:
            outcomes[version] = store.promote(
                NAME, version, expected=expected, reason=f"to {version}"
            )
        except BaseException as exc:
            outcomes[version] = exc

    pool = [threading.Thread(target=promote, args=(v,)) for v in (2, 3)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    winners = [v for v, o in outcomes.items() if not isinstance(o, BaseException)]
    losers = [o for o in outcomes.values() if isinstance(o, BaseException)]
    assert len(winners) == 1, outcomes
    assert len(losers) == 1 and isinstance(losers[0], PromotionConflictError), outcomes
    assert losers[0].expected == expected
    assert losers[0].actual == winners[0]
    assert store.champion(NAME).version == winners[0]
    history = store.history(NAME)
    assert len(history) == before + 1
    assert (history[-1]["version"], history[-1]["previous"]) == (winners[0], expected)


def test_rollback_moves_the_pointer_back_and_keeps_history(store: ModelStore, tmp_path: Path):
    for seed in range(3):
        publish(store, tmp_path, seed)
    with pytest.raises(ValueError, match="no champion"):
        store.rollback(NAME, 1, reason="nothing to roll back")
    store.promote(NAME, 1, expected=None, reason="v1")
    store.promote(NAME, 3, expected=1, reason="v3")
    with pytest.raises(ValueError, match="not earlier"):
        store.rollback(NAME, 3, reason="same")
    with pytest.raises(ValueError):
        store.rollback(NAME, 4, reason="later")
    pointer = store.rollback(NAME, 1, reason="v3 misbehaves in production")
    assert pointer.version == 1
    assert store.champion(NAME).version == 1
    history = store.history(NAME)
    assert [(h["action"], h["version"], h["previous"]) for h in history] == [
        ("promote", 1, None),
        ("promote", 3, 1),
        ("rollback", 1, 3),
    ]
    assert history[-1]["reason"] == "v3 misbehaves in production"
    # Rolling forward again is an ordinary promotion from the rolled-back champion.
    store.promote(NAME, 3, expected=1, reason="fixed")
    assert len(store.history(NAME)) == 4


def test_rollback_to_an_incomplete_version_refuses(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    publish(store, tmp_path, 0)
    real_put_if = store.blobs.put_if

    def no_manifest(key, data, etag):
        if key.endswith("manifest.json"):
            raise BlobStoreError("simulated crash before the manifest")
        return real_put_if(key, data, etag)

    monkeypatch.setattr(store.blobs, "put_if", no_manifest)
    with pytest.raises(BlobStoreError):
        publish(store, tmp_path, 1)
    monkeypatch.undo()
    publish(store, tmp_path, 2)
    store.promote(NAME, 3, expected=None, reason="v3")
    with pytest.raises(ModelIntegrityError):
        store.rollback(NAME, 2, reason="v2 never completed")
    assert store.champion(NAME).version == 3


def test_promotion_loses_when_the_pointer_moves_between_read_and_swap(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The deterministic version of the race: the etag check, not the version check, refuses."""
    for seed in range(3):
        publish(store, tmp_path, seed)
    store.promote(NAME, 1, expected=None, reason="v1")
    rival = ModelStore(store.blobs, tmp_path / "rival-cache")
    real_put_if = store.blobs.put_if

    def rival_first(key, data, etag):
        if key.endswith("CHAMPION"):
            monkeypatch.setattr(store.blobs, "put_if", real_put_if)
            rival.promote(NAME, 2, expected=1, reason="rival")
        return real_put_if(key, data, etag)

    monkeypatch.setattr(store.blobs, "put_if", rival_first)
    with pytest.raises(PromotionConflictError) as caught:
        store.promote(NAME, 3, expected=1, reason="mine")
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert "another promotion won" in str(caught.value)
    assert [h["reason"] for h in store.history(NAME)] == ["v1", "rival"]


def test_a_promotion_whose_response_was_lost_still_succeeds(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A client retry of a conditional write that took effect reports a conflict; the
    store recognises its own content and does not claim a conflict."""
    publish(store, tmp_path, 0)
    real_put_if = store.blobs.put_if

    def write_then_conflict(key, data, etag):
        real_put_if(key, data, etag)
        from ml_assets.storage import BlobConflictError

        raise BlobConflictError(f"simulated retry of {key} after a lost response")

    monkeypatch.setattr(store.blobs, "put_if", write_then_conflict)
    pointer = store.promote(NAME, 1, expected=None, reason="v1")
    assert pointer.version == 1
    assert pointer.etag == store.champion(NAME).etag
    # The reservation of a version number recovers the same way.
    version = publish(store, tmp_path, 1)
    assert version == 2
    monkeypatch.undo()
    assert store.versions(NAME) == [1, 2]
    assert len(store.history(NAME)) == 1
