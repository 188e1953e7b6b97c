"""`ml-assets rollback` and `history` against a real local model store."""

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
