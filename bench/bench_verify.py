"""Cost of verifying model bytes (load, promote), tamper cases refused, and gc after killed publishes.

Run:  cd /work/main && .venv/bin/python bench/bench_verify.py [--sizes-mib 1 8 32] [--repeats 5]
          [--killed 5] [--no-azure] [--out bench/results/verify.json]  (bench/results/ is git-ignored)

Prints ONE JSON object on stdout (also written to --out). Per store (a local folder, and an
Azurite started here from .tools/node_modules/.bin/azurite-blob on a free loopback port):

- `sha256_ms_per_mib`: hashlib alone on bytes in memory (the floor).
- per model size (one large variables file + small files), medians of --repeats:
  `fetch_cold_ms` (download + hash of what was written), `fetch_warm_ms` (what every serving
  load pays when the cache holds the version: manifest read + listing + re-hash of the cached
  copy), `verify_ms` (promote's and rollback's byte check: every stored byte read and hashed),
  `listing_check_ms` (the previous check, recorded digests from the listing only, no bytes),
  `promote_ms` (verify + pointer CAS); each also per MiB.
- `tamper`: cases tried against a promoted pair of versions, and whether each was refused
  (and by what message); a refusal must leave the pointer where it was.
- `gc`: --killed publishes of a 48 MiB model each killed with SIGKILL mid-upload, then
  `collect_garbage` dry run and apply: bytes reclaimed, named versions still verifying.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ml_assets.ops.processes import free_port, spawn, stop_groups, wait_until
from ml_assets.storage import BlobStore, LocalBlobStore, ModelIntegrityError, ModelStore
from ml_assets.storage.model_gc import collect_garbage

REPO = Path(__file__).resolve().parents[1]
NAME = "bench"
MIB = 1 << 20
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_PUBLISHER = """
import json, os, sys
from pathlib import Path
from ml_assets.storage import AzureBlobStore, LocalBlobStore, ModelStore
cfg = json.loads(sys.argv[1])
if cfg["backend"] == "local":
    blobs = LocalBlobStore(cfg["root"])
else:
    blobs = AzureBlobStore(cfg["container"], connection_string=os.environ["AZ_CONN"],
                           create_if_missing=False, max_concurrency=1)
ModelStore(blobs, Path(cfg["cache"])).publish(cfg["name"], Path(cfg["source"]), {"flavor": "tf"})
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def model_folder(root: Path, size_mib: int) -> Path:
    folder = root / f"model-{size_mib}-{uuid.uuid4().hex[:6]}"
    (folder / "variables").mkdir(parents=True)
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(size_mib * MIB))
    (folder / "variables" / "variables.index").write_bytes(os.urandom(4096))
    (folder / "saved_model.pb").write_bytes(os.urandom(64 * 1024))
    return folder


def cost(blobs: BlobStore, work: Path, sizes: list[int], repeats: int) -> dict:
    data = os.urandom(32 * MIB)
    hashed = timed(lambda: hashlib.sha256(data).hexdigest(), repeats) / 32
    out: dict = {"sha256_ms_per_mib": round(hashed, 2), "sizes": {}}
    for size in sizes:
        out["sizes"][f"{size}MiB"] = cost_of_size(blobs, work, size, repeats)
        log(f"{blobs.location} {size} MiB: {out['sizes'][f'{size}MiB']}")
    return out


def cost_of_size(blobs: BlobStore, work: Path, size: int, repeats: int) -> dict:
    store = ModelStore(blobs, work / f"cache-{size}")
    name = f"{NAME}-{size}"
    version = store.publish(name, model_folder(work, size), {"flavor": "tf"}).version
    mib = (size * MIB + 4096 + 64 * 1024) / MIB

    def cold():
        store.fetch(name, version)
        cached = store.cache_dir / name / str(version) / "saved_model.pb"
        cached.unlink()  # damaged cache: the next fetch downloads again

    store.fetch(name, version)
    cold_ms = timed(cold, repeats)
    store.fetch(name, version)
    warm_ms = timed(lambda: store.fetch(name, version), repeats)
    verify_ms = timed(lambda: store.verify(name, version), repeats)
    listing_ms = timed(lambda: _listing_check(store, name, version), repeats)
    champion = [store.champion(name).version]

    def promote():
        champion[0] = store.promote(name, version, expected=champion[0], reason="bench").version

    promote_ms = timed(promote, repeats)
    return {
        "mib": round(mib, 3),
        "fetch_cold_ms": round(cold_ms, 1),
        "fetch_warm_ms": round(warm_ms, 1),
        "verify_ms": round(verify_ms, 1),
        "listing_check_ms": round(listing_ms, 1),
        "promote_ms": round(promote_ms, 1),
        "fetch_cold_ms_per_mib": round(cold_ms / mib, 2),
        "fetch_warm_ms_per_mib": round(warm_ms / mib, 2),
        "verify_ms_per_mib": round(verify_ms / mib, 2),
        "verify_vs_listing_check": round(verify_ms / max(listing_ms, 1e-9), 1),
    }


def _listing_check(store: ModelStore, name: str, version: int) -> None:
    """What verify did before: recorded digests from a listing, no bytes read."""
    files = store.get(name, version).manifest["files"]
    prefix = f"models/{name}/{version}/"
    listed = {b.key[len(prefix) :]: (b.size, b.sha256) for b in store.blobs.list(prefix)}
    assert all(listed[rel] == (f["size"], f["sha256"]) for rel, f in files.items())


def tamper_cases(blobs: BlobStore, work: Path) -> dict:
    """Every case: set up v1 -> v2 promoted, damage, try; refused must leave the pointer."""
    cases: list[dict] = []

    def case(label: str, damage, attempt) -> None:
        store = ModelStore(blobs, work / f"tamper-cache-{uuid.uuid4().hex[:6]}")
        name = f"t-{uuid.uuid4().hex[:8]}"
        for seed in (1, 2):
            store.publish(name, model_folder(work, 1), {"flavor": "tf", "metrics": {"auc": seed}})
        store.promote(name, 1, expected=None, reason="b")
        store.promote(name, 2, expected=1, reason="b")
        before = store.champion(name)
        damage(store, name)
        try:
            attempt(store, name, before)
            result = {"case": label, "refused": False}
        except ModelIntegrityError as error:
            result = {"case": label, "refused": True, "message": _short(str(error))}
        result["pointer_unchanged"] = store.champion(name) == before
        cases.append(result)

    def rollback(store, name, before):
        store.rollback(name, 1, reason="tamper")

    def load_champion(store, name, before):
        store.fetch(name, 2, manifest_sha256=before.manifest_sha256)

    data = "variables/variables.data-00000-of-00001"

    def v(version: int, file: str):
        return lambda store, name: f"models/{name}/{version}/{file}"

    damages = [
        (
            "bit rot, stat/metadata kept: rollback",
            lambda s, n: _rot(s.blobs, v(1, data)(s, n)),
            rollback,
        ),
        (
            "bit rot, stat/metadata kept: serving load",
            lambda s, n: _rot(s.blobs, v(2, data)(s, n)),
            load_champion,
        ),
        (
            "file deleted: rollback",
            lambda s, n: s.blobs.delete(v(1, "saved_model.pb")(s, n)),
            rollback,
        ),
        (
            "extra file: rollback",
            lambda s, n: s.blobs.put(v(1, "backdoor.pb")(s, n), b"x"),
            rollback,
        ),
        (
            "file replaced the ordinary way: rollback",
            lambda s, n: s.blobs.put(v(1, data)(s, n), b"new"),
            rollback,
        ),
        (
            "metrics edited: rollback",
            lambda s, n: _edit_metrics(s.blobs, v(1, "manifest.json")(s, n)),
            rollback,
        ),
        (
            "metrics edited: serving load",
            lambda s, n: _edit_metrics(s.blobs, v(2, "manifest.json")(s, n)),
            load_champion,
        ),
    ]
    for label, damage, attempt in damages:
        case(label, damage, attempt)
    # 30 single-byte edits spread over the rollback target's manifest.
    store = ModelStore(blobs, work / "tamper-cache-bytes")
    name = f"t-{uuid.uuid4().hex[:8]}"
    for _ in (1, 2):
        store.publish(name, model_folder(work, 1), {"flavor": "tf", "metrics": {"auc": 0.75}})
    store.promote(name, 1, expected=None, reason="b")
    store.promote(name, 2, expected=1, reason="b")
    before = store.champion(name)
    key = f"models/{name}/1/manifest.json"
    original = blobs.get(key)
    refused = 0
    for i in range(30):
        position = i * (len(original) - 1) // 29
        _rewrite(blobs, key, _edit_byte(original, position))
        try:
            store.rollback(name, 1, reason="tamper")
        except ModelIntegrityError:
            refused += store.champion(name) == before
    _rewrite(blobs, key, original)
    cases.append(
        {
            "case": "30 single-byte manifest edits: rollback",
            "refused_count": refused,
            "refused": refused == 30,
            "pointer_unchanged": store.champion(name) == before,
        }
    )
    return {
        "tried": len(cases),
        "refused": sum(c["refused"] for c in cases),
        "pointer_never_moved": all(c["pointer_unchanged"] for c in cases),
        "cases": cases,
    }


def _short(message: str) -> str:
    """Head (what was refused) and tail (which file, why) of a long refusal."""
    return message if len(message) <= 260 else f"{message[:100]} ... {message[-150:]}"


def _rot(blobs: BlobStore, key: str) -> None:
    data = bytearray(blobs.get(key))
    data[len(data) // 2] ^= 1
    if isinstance(blobs, LocalBlobStore):
        _rewrite(blobs, key, bytes(data))
        return
    client = blobs.container.get_blob_client(key)
    metadata = client.get_blob_properties().metadata
    client.upload_blob(bytes(data), overwrite=True, metadata=metadata)


def _rewrite(blobs: BlobStore, key: str, data: bytes) -> None:
    """Local: in place with the mtime put back; Azure: an ordinary upload."""
    if not isinstance(blobs, LocalBlobStore):
        blobs.put(key, data)
        return
    path = blobs.root / key
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _edit_metrics(blobs: BlobStore, key: str) -> None:
    manifest = json.loads(blobs.get(key))
    manifest["metrics"]["auc"] = 0.99
    _rewrite(blobs, key, json.dumps(manifest, indent=2, sort_keys=True).encode())


def _edit_byte(data: bytes, position: int) -> bytes:
    old = chr(data[position])
    if old.isdigit():
        new = str((int(old) + 1) % 10)
    elif old.isalpha():
        new = "b" if old != "b" else "c"
    else:
        new = " " if old != " " else "\t"
    return data[:position] + new.encode() + data[position + 1 :]


def gc_after_kills(blobs: BlobStore, work: Path, killed: int, env: dict[str, str]) -> dict:
    store = ModelStore(blobs, work / "gc-cache")
    name = f"gc-{uuid.uuid4().hex[:6]}"
    for _ in (1, 2):
        store.publish(name, model_folder(work, 1), {"flavor": "tf"})
    store.promote(name, 1, expected=None, reason="b")
    store.promote(name, 2, expected=1, reason="b")
    # Five small files uploaded first, then a large one (upload order is by name): a kill
    # after two committed files lands while the large one is in flight.
    source = work / "gc-source"
    source.mkdir()
    for letter in "abcde":
        (source / f"{letter}.bin").write_bytes(os.urandom(3 * MIB // 2))
    (source / "z.bin").write_bytes(os.urandom(48 * MIB))
    config = {"backend": "local", "name": name, "source": str(source), "cache": str(work / "pc")}
    if isinstance(blobs, LocalBlobStore):
        config["root"] = str(blobs.root)
    else:
        config.update(backend="azure", container=blobs.container_name)
    done = 0
    for attempt in range(killed + 5):
        if done == killed:
            break
        started = set(_folders(store, name))
        process = spawn(
            [sys.executable, "-c", _PUBLISHER, json.dumps(config)],
            log_path=work / f"pub-{attempt}.log",
            env=env,
        )
        try:
            deadline = time.monotonic() + 120
            while process.poll() is None and time.monotonic() < deadline:
                fresh = [f for v, f in _folders(store, name).items() if v not in started]
                if any(len(f) >= 3 for f in fresh):  # .reserved + some files committed
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)
                    done += 1
                    break
                time.sleep(0.002)
        finally:
            stop_groups([process])
    later = time.time() + 5
    dry = collect_garbage(store, grace_seconds=0, now=later)
    applied = collect_garbage(store, grace_seconds=0, now=later, apply=True)
    for version in (1, 2):
        store.verify(name, version)
    return {
        "killed_publishes": done,
        "debris_items": len(applied.debris),
        "dry_run_bytes": dry.bytes,
        "reclaimed_bytes": applied.bytes,
        "reclaimed_mib": round(applied.bytes / MIB, 1),
        "temp_files": sum(d.kind == "temp file" for d in applied.debris),
        "named_versions_verify_after": True,
        "second_run_bytes": collect_garbage(store, grace_seconds=0, now=later, apply=True).bytes,
    }


def _folders(store: ModelStore, name: str) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for blob in store.blobs.list(f"models/{name}/"):
        version, _, rest = blob.key.split("/", 2)[2].partition("/")
        folders.setdefault(version, set()).add(rest)
    return folders


def start_azurite(work: Path):
    binary = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        return None, None
    port = free_port()
    process = spawn(
        [
            str(binary),
            "--location",
            str(work / "azurite"),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--disableTelemetry",
            "--loose",
            "--skipApiVersionCheck",
        ],
        log_path=work / "azurite.log",
    )
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        f"{AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    wait_until(lambda: _answers(port), timeout=30, what="Azurite")
    return process, connection


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--killed", type=int, default=5)
    parser.add_argument("--no-azure", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "verify.json"))
    args = parser.parse_args(argv)
    report: dict = {"stores": {}}
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        work = Path(tmp)
        stores: list[tuple[str, BlobStore, dict]] = [
            ("local", LocalBlobStore(work / "store"), dict(os.environ))
        ]
        azurite = None
        try:
            if not args.no_azure:
                azurite, connection = start_azurite(work)
                if azurite is not None:
                    from ml_assets.storage import AzureBlobStore

                    blobs = AzureBlobStore("bench", connection_string=connection)
                    stores.append(("azurite", blobs, {**os.environ, "AZ_CONN": connection}))
            for label, blobs, env in stores:
                section = work / f"section-{label}"
                section.mkdir()
                report["stores"][label] = {
                    "cost": cost(blobs, section, args.sizes_mib, args.repeats),
                    "tamper": tamper_cases(blobs, section),
                    "gc": gc_after_kills(blobs, section, args.killed, env),
                }
        finally:
            if azurite is not None:
                stop_groups([azurite])
    text = json.dumps(report, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
