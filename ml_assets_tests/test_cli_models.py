"""`ml-assets rollback` and `history` against a real local model store."""

import os

import pytest

from ml_assets.cli import main
from ml_assets.storage import LocalBlobStore
from ml_assets.storage.model_store import ModelStore


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_STORE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("ML_ASSETS_CACHE_DIR", str(tmp_path / "cache"))
    models = ModelStore(LocalBlobStore(tmp_path / "store"), tmp_path / "cache" / "models")
    for flavor in ("sklearn", "keras", "sklearn"):
        artifact = tmp_path / f"artifact-{flavor}"
        artifact.mkdir(exist_ok=True)
        (artifact / "model.bin").write_bytes(flavor.encode())
        models.publish("flights", artifact, {"flavor": flavor})
    models.promote("flights", 1, expected=None, reason="first model")
    models.promote("flights", 3, expected=1, reason="beat v1")
    return models


def test_rollback_moves_the_champion_back_and_keeps_history(store, capsys):
    assert main(["rollback", "--model", "flights", "--to", "1", "--reason", "v3 drifts on carrier WN"]) == 0
    assert store.champion("flights").version == 1
    assert "champion is now v1" in capsys.readouterr().out
    assert [entry["version"] for entry in store.history("flights")] == [1, 3, 1]

    assert main(["history", "--model", "flights"]) == 0
    out = capsys.readouterr().out
    assert "champion v1; versions [1, 2, 3]" in out
    assert "v3 drifts on carrier WN" in out


def test_rollback_forward_is_refused(store, capsys):
    assert main(["rollback", "--model", "flights", "--to", "3", "--reason", "not a rollback"]) == 2
    assert "ml-assets:" in capsys.readouterr().err
    assert store.champion("flights").version == 3


def test_rollback_needs_a_reason():
    with pytest.raises(SystemExit) as exit_info:
        main(["rollback", "--to", "1"])
    assert exit_info.value.code == 2


def test_rollback_to_a_tampered_version_is_refused_and_the_pointer_stays(store, capsys):
    path = store.blobs.root / "models/flights/1/model.bin"
    stat = path.stat()
    path.write_bytes(b"sklearm")  # one byte rotted, same size, mtime put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = store.champion("flights")
    assert main(["rollback", "--model", "flights", "--to", "1", "--reason", "v3 drifts"]) == 2
    err = capsys.readouterr().err
    assert "refusing to roll flights back to version 1 (the champion stays version 3)" in err
    assert "model.bin: changed" in err
    assert store.champion("flights") == before


def test_gc_is_a_dry_run_unless_applied(store, capsys):
    # What a publish killed after its first file leaves: a claim and a file, no manifest.
    store.blobs.put("models/flights/4/.reserved", b"{}")
    store.blobs.put("models/flights/4/model.bin", b"x" * 5000)
    assert main(["gc", "--grace-hours", "1"]) == 0
    assert "would free 0 bytes" in capsys.readouterr().out  # younger than the grace period
    assert main(["gc", "--grace-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert "incomplete version: " in out and "models/flights/4/model.bin (5000 bytes)" in out
    assert "would free 5000 bytes" in out
    assert store.blobs.exists("models/flights/4/model.bin")
    assert main(["gc", "--grace-hours", "0", "--apply"]) == 0
    assert "freed 5000 bytes" in capsys.readouterr().out
    assert not store.blobs.exists("models/flights/4/model.bin")
    assert store.versions("flights") == [1, 2, 3]
    store.verify("flights", 1)
    assert main(["gc", "--grace-hours", "-1"]) == 2
    assert "grace period must be >= 0" in capsys.readouterr().err
