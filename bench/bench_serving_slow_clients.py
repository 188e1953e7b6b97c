"""How long half-sent requests hold connections of a real `ml-assets serve` process.

Run:  cd /work/main && .venv/bin/python bench/bench_serving_slow_clients.py \
          [--connections 300] [--body-timeout 1] [--header-timeout 1]

Prints ONE JSON object on stdout (progress on stderr). A small sklearn model (synthetic rows with
the flights spec's features) is published and promoted in a local store in a temp dir; `ml-assets
serve` runs as its own process with the given deadlines. Then, at once:
  - `--connections` clients send a predict request's headers announcing a 100,000-byte body and
    only its first 15 bytes (half-sent bodies);
  - `--connections` clients send half of the request headers;
and each waits for the server's answer and for the server to close the connection. Reported per
kind: how many were answered 408, how many closed, seconds until the last was closed. Meanwhile a
normal client keeps predicting (it must never fail). The issue measured 300 half-sent bodies
holding their connections for 72 s and more before the deadlines existed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"
NAME = "flights"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def publish_model(root: Path) -> dict:
    import numpy as np
    import pandas as pd

    from ml_assets.ml.models import FeatureColumns, SklearnParams, save_model, train_sklearn
    from ml_assets.spec import load_spec
    from ml_assets.storage import LocalBlobStore
    from ml_assets.storage.model_store import ModelStore

    spec = load_spec("flights")
    columns = FeatureColumns(spec.features.numeric_names, spec.features.categorical_names)
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame(
        {
            **{name: rng.normal(0, 100, n) for name in columns.numeric},
            **{name: rng.choice(["a", "b", "c"], n).astype(object) for name in columns.categorical},
        }
    )
    labels = (frame[columns.numeric[0]] + rng.normal(0, 50, n) > 0).astype("int64").to_numpy()
    model = train_sklearn(frame, labels, columns, SklearnParams(max_iter=10), seed=0)
    save_model(model, root / "artifact")
    store = ModelStore(LocalBlobStore(root / "blobs"), root / "cache")
    manifest = {
        "flavor": model.flavor,
        "columns": {"numeric": list(columns.numeric), "categorical": list(columns.categorical)},
    }
    version = store.publish(NAME, root / "artifact", manifest).version
    store.promote(NAME, version, expected=None, reason="bench")
    row = {**{k: 1.0 for k in columns.numeric}, **{k: "a" for k in columns.categorical}}
    return row


HALF_BODY = (
    f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json"
    "\r\ncontent-length: 100000\r\n\r\n"
).encode() + b'{"instances": ['
HALF_HEADERS = HALF_BODY[:45]
GIVE_UP_S = 120.0  # a connection still open then is reported "still open"


async def slow_client(port: int, payload: bytes, started: float) -> dict:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(payload)
    await writer.drain()
    try:  # read until the server closes the connection
        answer = await asyncio.wait_for(reader.read(), GIVE_UP_S)
    except TimeoutError:
        writer.close()
        return {"status": "still open", "closed_after_s": None}
    closed_after = time.perf_counter() - started
    writer.close()
    return {"status": answer[9:12].decode() if answer else "", "closed_after_s": closed_after}


async def normal_client(port: int, row: dict, stop: asyncio.Event) -> dict:
    import httpx

    answered = failed = 0
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=60) as client:
        while not stop.is_set():
            response = await client.post(f"/v1/models/{NAME}:predict", json={"instances": [row]})
            if response.status_code == 200:
                answered += 1
            else:
                failed += 1
            await asyncio.sleep(0.01)
    return {"answered": answered, "failed": failed}


async def measure(port: int, connections: int, row: dict) -> dict:
    stop = asyncio.Event()
    normal = asyncio.create_task(normal_client(port, row, stop))
    started = time.perf_counter()
    results: dict[str, list[dict]] = {}
    for kind, payload in (("half_sent_bodies", HALF_BODY), ("half_sent_headers", HALF_HEADERS)):
        results[kind] = await asyncio.gather(
            *(slow_client(port, payload, time.perf_counter()) for _ in range(connections))
        )
    stop.set()
    out: dict = {"normal_client_during": await normal}
    for kind, items in results.items():
        statuses: dict[str, int] = {}
        for item in items:
            statuses[item["status"] or "closed without answer"] = (
                statuses.get(item["status"] or "closed without answer", 0) + 1
            )
        held = [i["closed_after_s"] for i in items if i["closed_after_s"] is not None]
        out[kind] = {
            "connections": len(items),
            "statuses": statuses,
            "closed_by_server": len(held),
            "max_held_s": round(max(held), 3) if held else None,
        }
    out["wall_s"] = round(time.perf_counter() - started, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--body-timeout", type=float, default=1.0)
    parser.add_argument("--header-timeout", type=float, default=1.0)
    args = parser.parse_args()

    from ml_assets.ops.processes import free_port, spawn, stop_groups, wait_until

    with tempfile.TemporaryDirectory(prefix="bench-slow-clients-") as tmp:
        root = Path(tmp)
        log("training and publishing a small sklearn model")
        row = publish_model(root)
        port = free_port()
        env = {
            **os.environ,
            "ML_ASSETS_ENV": "local",
            "ML_ASSETS_STORE_ROOT": str(root / "blobs"),
            "ML_ASSETS_CACHE_DIR": str(root / "serve-cache"),
        }
        cli = Path(sys.executable).with_name("ml-assets")
        process = spawn(
            [str(cli), "serve", "--model", NAME, "--port", str(port), "--poll-interval", "0",
             "--body-timeout", str(args.body_timeout), "--header-timeout", str(args.header_timeout)],
            log_path=root / "serve.log",
            env=env,
        )
        try:
            import httpx

            def ready() -> bool:
                try:
                    return httpx.get(f"http://{HOST}:{port}/healthz", timeout=5).json()["ready"]
                except (httpx.HTTPError, ValueError):
                    return False

            wait_until(ready, timeout=180, what="ml-assets serve to be ready")
            log(f"{args.connections} half-sent bodies, then {args.connections} half-sent headers")
            result = asyncio.run(measure(port, args.connections, row))
        finally:
            stop_groups([process], timeout=15)
    print(json.dumps({
        "bench": "serving_slow_clients",
        "settings": {"connections": args.connections, "body_timeout_s": args.body_timeout,
                     "header_timeout_s": args.header_timeout},
        **result,
    }, indent=2))


if __name__ == "__main__":
    main()
