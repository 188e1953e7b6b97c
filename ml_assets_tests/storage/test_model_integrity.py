"""Verified bytes: promote, rollback and fetch hash what they read, and the champion pointer
pins each manifest's digest. Every test runs on the local store and on Azurite."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ml_assets.storage import BlobStore, ModelIntegrityError, ModelStore
from ml_assets_tests.storage.tamper import rewrite, rot

NAME = "flights"
DATA = "variables/variables.data-00000-of-00001"


@pytest.fixture
def store(blob_store: BlobStore, tmp_path: Path) -> ModelStore:
    return ModelStore(blob_store, tmp_path / "cache")


def publish(store: ModelStore, tmp_path: Path, seed: int):
    folder = tmp_path / f"model-{seed}"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(f"graph {seed}".encode())
    (folder / DATA).write_bytes(bytes(range(256)) * 64 + bytes([seed]))
    return store.publish(NAME, folder, {"flavor": "tf", "metrics": {"roc_auc": 0.7 + seed / 100}})


def key(version: int, file: str) -> str:
    return f"models/{NAME}/{version}/{file}"


def two_champions(store: ModelStore, tmp_path: Path) -> None:
    """v1 promoted, then v2: the history names both, with their manifest digests."""
    for seed in (1, 2):
        publish(store, tmp_path, seed)
    store.promote(NAME, 1, expected=None, reason="first")
    store.promote(NAME, 2, expected=1, reason="better")


def test_pointer_and_history_record_the_manifest_digest(store, tmp_path):
    published = publish(store, tmp_path, 1)
    stored = store.blobs.get(key(1, "manifest.json"))
    assert published.manifest_sha256 == hashlib.sha256(stored).hexdigest()
    pointer = store.promote(NAME, 1, expected=None, reason="first")
    assert pointer.manifest_sha256 == published.manifest_sha256
    assert store.champion(NAME).manifest_sha256 == published.manifest_sha256
    assert store.history(NAME)[-1]["manifest_sha256"] == published.manifest_sha256


def test_bit_rot_with_metadata_kept_is_refused_everywhere(store, tmp_path):
    """A byte flipped under an unchanged stat (local) or unchanged metadata (Azure)."""
    two_champions(store, tmp_path)
    publish(store, tmp_path, 3)
    before = store.champion(NAME)

    rot(store.blobs, key(1, DATA), offset=1000)
    with pytest.raises(ModelIntegrityError) as caught:
        store.rollback(NAME, 1, reason="v2 misbehaves")
    message = str(caught.value)
    assert "refusing to roll flights back to version 1" in message
    assert "the champion stays version 2" in message
    assert DATA in message and "changed" in message
    assert store.champion(NAME) == before  # pointer, history and etag untouched

    rot(store.blobs, key(3, "saved_model.pb"))
    with pytest.raises(ModelIntegrityError, match=r"saved_model\.pb: changed"):
        store.promote(NAME, 3, expected=2, reason="never")
    assert store.champion(NAME) == before

    with pytest.raises(ModelIntegrityError) as caught:
        store.fetch(NAME, 3)
    assert caught.value.file == "saved_model.pb"
    assert "continuously" not in str(caught.value)
    if store.blobs.location.startswith("azure:"):
        assert "replaced with its metadata kept, or damaged" in str(caught.value)
    assert not (store.cache_dir / NAME / "3").exists()


def test_a_rotten_cached_copy_is_fetched_again(store, tmp_path):
    publish(store, tmp_path, 1)
    cached = store.fetch(NAME, 1)
    good = (cached / DATA).read_bytes()
    path = cached / DATA
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"\x00")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (store.fetch(NAME, 1) / DATA).read_bytes() == good


def single_byte_edit(data: bytes, position: int) -> bytes:
    """Another plausible byte: a digit for a digit, a letter for a letter, else a space."""
    old = chr(data[position])
    if old.isdigit():
        new = str((int(old) + 1) % 10)
    elif old.isalpha():
        new = "b" if old != "b" else "c"
    else:
        new = " " if old != " " else "\t"
    return data[:position] + new.encode() + data[position + 1 :]


def test_30_single_byte_manifest_edits_are_all_refused(store, tmp_path):
    two_champions(store, tmp_path)
    pointer = store.champion(NAME)
    original = store.blobs.get(key(1, "manifest.json"))
    positions = [i * (len(original) - 1) // 29 for i in range(30)]
    refused = []
    for position in positions:
        edited = single_byte_edit(original, position)
        assert edited != original and len(edited) == len(original)
        rewrite(store.blobs, key(1, "manifest.json"), edited)
        with pytest.raises(ModelIntegrityError) as caught:
            store.rollback(NAME, 1, reason="tampered")
        assert "refusing to roll flights back to version 1" in str(caught.value)
        refused.append(position)
        assert store.champion(NAME).version == 2
    assert len(refused) == 30
    rewrite(store.blobs, key(1, "manifest.json"), original)
    # Restored byte for byte: the same rollback now goes through.
    assert store.rollback(NAME, 1, reason="restored").version == 1
    assert store.champion(NAME).etag != pointer.etag


def test_an_edited_metrics_field_is_refused_on_load_and_rollback(store, tmp_path):
    two_champions(store, tmp_path)
    pointer = store.champion(NAME)
    for version in (1, 2):
        manifest = json.loads(store.blobs.get(key(version, "manifest.json")))
        manifest["metrics"]["roc_auc"] = 0.99  # valid JSON, names and files unchanged
        rewrite(store.blobs, key(version, "manifest.json"), json.dumps(manifest).encode())
    # Loading the champion (what the server does): the pointer's digest refuses it.
    with pytest.raises(ModelIntegrityError, match="changed after it was promoted"):
        store.fetch(NAME, 2, manifest_sha256=pointer.manifest_sha256)
    with pytest.raises(ModelIntegrityError, match="changed after it was promoted"):
        store.rollback(NAME, 1, reason="tampered")
    assert store.champion(NAME) == pointer


def test_promote_refuses_a_manifest_edited_since_publish(store, tmp_path):
    published = publish(store, tmp_path, 1)
    manifest = json.loads(store.blobs.get(key(1, "manifest.json")))
    manifest["metrics"]["roc_auc"] = 0.99
    rewrite(store.blobs, key(1, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(ModelIntegrityError, match="changed after it was promoted"):
        store.promote(
            NAME, 1, expected=None, reason="gate", manifest_sha256=published.manifest_sha256
        )
    assert store.champion(NAME).version is None
