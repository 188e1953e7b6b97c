"""The champion model over HTTP, speaking the TensorFlow Serving REST API.

Endpoints (`{name}` is the registry's model name; `{v}` an integer version):

    GET  /healthz                                   {"status", "model", "ready", "version", ...}
    GET  /v1/models/{name}                          status of the champion (plus versions that
                                                    failed to load: state END, error message)
    GET  /v1/models/{name}/versions/{v}             status of one version (loads it on demand)
    GET  /v1/models/{name}[/versions/{v}]/metadata  signature: one input per feature
    POST /v1/models/{name}[/versions/{v}]:predict   {"instances": [{feature: value}, ...]}
                                                    -> {"predictions": [p, ...]}
                                                    {"inputs": {feature: [value, ...]}}
                                                    -> {"outputs": [p, ...]}
    (`/labels/champion` is accepted wherever `/versions/{v}` is.)

Each prediction is P(label = 1). Inputs follow `ml_assets.ml.models.records_to_frame` (what batch
scoring accepts): numbers or null for numeric features, strings, integers or null for categorical
ones; keys that are not features are ignored. Errors are `{"error": message}` with 400 (malformed
request; the message names the instance index and the feature), 404 (unknown model or version),
405 (wrong HTTP method), 413 (body over MAX_BODY_BYTES) or 503 (a version that fails to load).

Dynamic batching, as TF Serving's batching session does: a request is validated on the event loop
(pure Python, no pandas), then queued on its version's batcher. The batcher runs one predict at a
time in a worker thread; requests that arrive meanwhile form the next batch (up to `max_batch`
rows). When the previous batch held more than one request (the server is under concurrent load)
the batcher also waits up to `max_wait_ms` for more; a lone request at concurrency 1 never waits,
so batching adds no latency there. Results are split back per request. If a batch fails, its
requests are retried one by one so that one request cannot fail the others.

The /v1/models/... paths are answered by one raw ASGI handler ahead of Starlette's routing
(Starlette still runs the lifespan, /healthz and 404s): at high load Starlette's Request, URL and
routing objects were a third of the per-request CPU.

A background task calls `registry.refresh()` every `poll_interval` seconds (TF Serving polls its
model base path every second by default); swaps never fail or drop a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ml_assets.serving.registry import LoadedModel, ModelNotFoundError, ModelRegistry

if TYPE_CHECKING:
    from ml_assets.storage.model_store import ModelStore

log = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"
OUTPUT_NAME = "probability"
CHAMPION_LABEL = "champion"

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[^/:]*))?/?$"
)
_PREFIX = "/v1/models/"
_JSON_HEADERS = {"content-type": "application/json"}


class ApiError(Exception):
    """An answer other than 200: HTTP status and the message for {"error": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


#: Largest request body accepted (TF Serving has no limit of its own; a proxy usually has one).
MAX_BODY_BYTES = 64 * 1024 * 1024


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _error_body(message: str) -> bytes:
    return _dumps({"error": message})


def _json_response(status: int, body: Any) -> Response:
    return Response(_dumps(body), status, headers=_JSON_HEADERS)


async def _read_body(receive: Callable) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# ---------------------------------------------------------------------------- request parsing

# float() of a larger int raises OverflowError; models.py rejects such numbers too.
_FLOAT_INT_LIMIT = 2**1024


class _Schema:
    """The features one version expects, and the validation of a request against them.

    The rules are those of `ml_assets.ml.models.records_to_frame` (the batch-scoring path), so
    the server accepts exactly what batch scoring accepts: a numeric feature is a number (int or
    float, finite) or null / NaN (missing); a categorical feature is a string, an integer (its
    decimal string) or null (missing). Keys that are not features are ignored. Checking here,
    per request, keeps one bad request from failing the batch it would have joined.
    """

    def __init__(self, numeric: list[str], categorical: list[str]):
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        self.features = self.numeric + self.categorical

    def records_from_instances(self, instances: Any) -> list[dict]:
        if type(instances) is not list:
            raise ApiError(
                400, f"'instances' must be a list of objects, got {_json_type(instances)}"
            )
        if not instances:
            raise ApiError(400, "'instances' is empty: send at least one instance")
        numeric, categorical = self.numeric, self.categorical
        for index, instance in enumerate(instances):
            if type(instance) is not dict:
                raise ApiError(
                    400,
                    f"instances[{index}] must be an object {{feature: value}}, "
                    f"got {_json_type(instance)}",
                )
            name = ""
            try:
                for name in numeric:
                    value = instance[name]
                    kind = type(value)
                    if kind is float:
                        if value in _INFINITIES:
                            raise _bad_instance(index, name, value, "a finite number or null")
                    elif kind is int:
                        if not -_FLOAT_INT_LIMIT < value < _FLOAT_INT_LIMIT:
                            raise _bad_instance(index, name, value, "a number within float range")
                    elif value is not None:
                        raise _bad_instance(index, name, value, "a number or null (DT_FLOAT)")
                for name in categorical:
                    value = instance[name]
                    kind = type(value)
                    if kind is not str and value is not None and kind is not int:
                        if kind is float and value != value:  # NaN: missing, as in models.py
                            continue
                        raise _bad_instance(
                            index, name, value, "a string, an integer or null (DT_STRING)"
                        )
            except KeyError:
                missing = [feature for feature in self.features if feature not in instance]
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise ApiError(
                    400, f"instances[{index}] is missing feature '{missing[0]}'{more}"
                ) from None
        return instances

    def records_from_inputs(self, inputs: Any) -> list[dict]:
        if type(inputs) is not dict:
            raise ApiError(
                400, f"'inputs' must be an object {{feature: [values]}}, got {_json_type(inputs)}"
            )
        missing = [name for name in self.features if name not in inputs]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ApiError(400, f"'inputs' is missing feature '{missing[0]}'{more}")
        size = None
        for name in self.features:
            values = inputs[name]
            if type(values) is not list:
                raise ApiError(
                    400, f"inputs['{name}'] must be a list of values, got {_json_type(values)}"
                )
            if size is None:
                size = len(values)
            elif len(values) != size:
                raise ApiError(
                    400,
                    f"inputs['{name}'] has {len(values)} values but inputs['{self.features[0]}'] "
                    f"has {size}: every feature needs one value per instance",
                )
        if not size:
            raise ApiError(400, "'inputs' is empty: send at least one value per feature")
        names = self.features
        columns = [inputs[name] for name in names]
        records = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        try:
            self.records_from_instances(records)
        except ApiError as error:  # name the column and index, as the client sent them
            match = re.match(r"instances\[(\d+)\]\['([^']*)'\](.*)", error.message, re.S)
            if match is None:
                raise
            index, name, rest = match.groups()
            raise ApiError(400, f"inputs['{name}'][{index}]{rest}") from None
        return records


_INFINITIES = (float("inf"), float("-inf"))


def _bad_instance(index: int, name: str, value: Any, expected: str) -> ApiError:
    return ApiError(
        400, f"instances[{index}]['{name}'] must be {expected}, got {_json_type(value)}"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int):
        text = (
            str(value)
            if value.bit_length() < 200
            else f"{str(value)[:20]}... ({len(str(value))} digits)"
        )
        return f"number {text}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {json.dumps(value[:40])}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _parse_body(body: bytes, schema: _Schema) -> tuple[list[dict], bool]:
    """(records, columnar?) or ApiError(400)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"JSON Parse error: {str(error)[:200]}") from None
    if type(payload) is not dict:
        raise ApiError(
            400,
            "request body must be a JSON object with 'instances' or 'inputs', "
            f"got {_json_type(payload)}",
        )
    signature = payload.get("signature_name", SIGNATURE_NAME)
    if signature != SIGNATURE_NAME:
        raise ApiError(
            400,
            f"unknown signature_name {str(signature)[:60]!r}: this model has only "
            f"'{SIGNATURE_NAME}'",
        )
    has_instances = "instances" in payload
    has_inputs = "inputs" in payload
    if has_instances and has_inputs:
        raise ApiError(400, "request has both 'instances' and 'inputs': send exactly one of them")
    if has_instances:
        return schema.records_from_instances(payload["instances"]), False
    if has_inputs:
        return schema.records_from_inputs(payload["inputs"]), True
    raise ApiError(
        400, "request has neither 'instances' (row format) nor 'inputs' (columnar format)"
    )


# ---------------------------------------------------------------------------- dynamic batching


class _Batcher:
    """Queues validated requests for one loaded version and predicts them in batches."""

    def __init__(
        self,
        loaded: LoadedModel,
        schema: _Schema,
        executor: ThreadPoolExecutor,
        max_batch: int,
        max_wait: float,
    ):
        self.loaded = loaded
        self.schema = schema
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.pending: deque[tuple[list[dict], int, asyncio.Future]] = deque()
        self.task: asyncio.Task | None = None
        self.waiter: asyncio.Future | None = None
        self.last_requests = 0
        self.batches = 0
        self.rows = 0

    def submit(self, records: list[dict]) -> asyncio.Future:
        """Queue validated records; the future resolves to their probabilities (a list)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((records, len(records), future))
        if self.task is None:
            self.task = loop.create_task(self._drain())
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        return future

    def _take(self, batch: list, rows: int) -> int:
        pending = self.pending
        while pending and (not batch or rows + pending[0][1] <= self.max_batch):
            item = pending.popleft()
            batch.append(item)
            rows += item[1]
        return rows

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch: list = []
                rows = self._take(batch, 0)
                if self.max_wait > 0 and self.last_requests > 1 and rows < self.max_batch:
                    deadline = loop.time() + self.max_wait
                    while rows < self.max_batch and (
                        not self.pending or rows + self.pending[0][1] <= self.max_batch
                    ):
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        if not self.pending:
                            self.waiter = loop.create_future()
                            timer = loop.call_later(remaining, _resolve, self.waiter)
                            try:
                                await self.waiter
                            finally:
                                timer.cancel()
                                self.waiter = None
                        rows = self._take(batch, rows)
                self.last_requests = len(batch)
                await self._run(batch, rows)
        finally:
            self.task = None

    async def _run(self, batch: list, rows: int) -> None:
        loop = asyncio.get_running_loop()
        live = [item for item in batch if not item[2].done()]  # a client may have gone away
        if not live:
            return
        try:
            probabilities = await loop.run_in_executor(self.executor, self._predict, live)
        except Exception as error:
            if len(live) == 1:
                if not live[0][2].done():
                    live[0][2].set_exception(error)
                return
            # Isolate the failure: predict each request alone so one cannot fail the others.
            for item in live:
                await self._run([item], item[1])
            return
        self.batches += 1
        self.rows += sum(item[1] for item in live)
        start = 0
        for _, size, future in live:
            if not future.done():
                future.set_result(probabilities[start : start + size])
            start += size

    def _predict(self, batch: list) -> list[float]:
        _limit_native_threads(self.loaded)
        records = batch[0][0] if len(batch) == 1 else list(chain.from_iterable(i[0] for i in batch))
        probabilities = self.loaded.predict(records)
        total = len(records)
        if len(probabilities) != total:
            raise RuntimeError(f"model returned {len(probabilities)} predictions for {total} rows")
        return np.asarray(probabilities, dtype=np.float64).tolist()


_thread_state = threading.local()


def _limit_native_threads(loaded: LoadedModel) -> None:
    """One OpenMP/BLAS thread per predict worker, set once per worker and model.

    Batches are small and the event loop needs the other core: OpenMP's spinning worker
    threads (HistGradientBoosting's predict) cost ~10x the latency of one thread on 2 busy
    cores. threadpoolctl only limits libraries already loaded, hence per model, not per thread.
    """
    seen = getattr(_thread_state, "limited", None)
    if seen is None:
        seen = _thread_state.limited = set()
    key = id(loaded.model)
    if key in seen:
        return
    seen.add(key)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except Exception:  # threadpoolctl missing or a library it cannot drive: not fatal
        log.debug("could not limit native thread pools", exc_info=True)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


# ---------------------------------------------------------------------------- the app


class _Server:
    def __init__(self, registry: ModelRegistry, max_batch: int, max_wait: float):
        self.registry = registry
        self.name = registry.name
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait))
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="predict")
        self._loading: dict[int, asyncio.Future] = {}

    # -- resolving the version a request addresses

    def _selector(self, match: re.Match) -> int | None:
        if match["name"] != self.name:
            raise ApiError(404, f"Servable not found for request: Latest({match['name']})")
        version, label = match["version"], match["label"]
        if label is not None:
            if label != CHAMPION_LABEL:
                raise ApiError(
                    404,
                    f"Unrecognized servable version label: {label} "
                    f"(only '{CHAMPION_LABEL}' is defined)",
                )
            return None
        if version is None:
            return None
        if not version.isdigit() or not version.isascii():
            raise ApiError(400, f"version must be a non-negative integer, got {version!r}")
        return int(version)

    async def _loaded(self, version: int | None) -> LoadedModel:
        loaded = self.registry.peek(version)
        if loaded is not None:
            return loaded
        if version is None:
            raise ApiError(404, f"Servable not found for request: Latest({self.name})")
        # One load per version however many requests ask for it meanwhile; shielded, so a
        # request that goes away does not cancel the load the others wait for.
        loading = self._loading.get(version)
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(self.registry.get, version))
            self._loading[version] = loading
            loading.add_done_callback(lambda _: self._loading.pop(version, None))
        try:
            return await asyncio.shield(loading)
        except ModelNotFoundError:
            raise ApiError(
                404, f"Servable not found for request: Specific({self.name}, {version})"
            ) from None
        except Exception as error:
            log.warning("loading %s version %s failed: %s", self.name, version, error)
            raise ApiError(
                503, f"version {version} of model {self.name} failed to load: {error}"
            ) from None

    def _batcher(self, loaded: LoadedModel) -> _Batcher:
        batcher = loaded.state.get("batcher")
        if batcher is None:
            schema = _Schema(loaded.columns.numeric, loaded.columns.categorical)
            batcher = loaded.state["batcher"] = _Batcher(
                loaded, schema, self.executor, self.max_batch, self.max_wait
            )
        return batcher

    # -- the /v1/models/... endpoints, as one raw ASGI handler (the hot path skips Starlette's
    # -- Request/Response objects and routing: a third of the per-request cost at high load)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            status, body = await self._dispatch(scope, receive)
        except ApiError as error:
            status, body = error.status, _error_body(error.message)
        except _Disconnected:
            return
        except Exception as error:  # a bug, never bad input: still a JSON answer
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            status, body = 500, _error_body(f"internal error: {type(error).__name__}: {error}")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _dispatch(self, scope: dict, receive: Callable) -> tuple[int, bytes]:
        path, method = scope["path"], scope["method"]
        match = _PATH.match(path)
        if match is None:
            raise ApiError(404, f"Malformed request: {method} {path[:200]}")
        verb = match["verb"]
        if verb is not None:
            if method != "POST":
                raise ApiError(405, f"':{verb[:40]}' needs POST, got {method}")
            if verb != "predict":
                raise ApiError(
                    400, f"unsupported method ':{verb[:40]}': this server answers ':predict'"
                )
            return 200, await self._predict(self._selector(match), receive)
        if method != "GET":
            raise ApiError(405, f"{path[:200]} answers GET, got {method}")
        selector = self._selector(match)
        if match["metadata"]:
            return 200, _dumps(await self._metadata(selector))
        return 200, _dumps(await self._status(selector))

    async def _predict(self, version: int | None, receive: Callable) -> bytes:
        loaded = await self._loaded(version)
        batcher = self._batcher(loaded)
        records, columnar = _parse_body(await _read_body(receive), batcher.schema)
        try:
            probabilities = await batcher.submit(records)
        except ValueError as error:  # models.InvalidRecordsError: input the model refused
            raise ApiError(400, str(error)) from None
        key = b'{"outputs":' if columnar else b'{"predictions":'
        return key + json.dumps(probabilities).encode() + b"}"

    async def _status(self, version: int | None) -> dict:
        loaded = await self._loaded(version)
        statuses = [_version_status(loaded.version, "AVAILABLE")]
        if version is None:  # versions that failed to load (and have not loaded since)
            for failed, message in sorted(self.registry.failures().items()):
                if failed != loaded.version:
                    statuses.append(_version_status(failed, "END", "UNKNOWN", message))
        return {"model_version_status": statuses}

    async def _metadata(self, version: int | None) -> dict:
        loaded = self.registry.peek(version)
        if loaded is not None:
            return _metadata(
                self.name, loaded.version, loaded.columns.numeric, loaded.columns.categorical
            )
        if version is None:
            raise ApiError(404, f"Servable not found for request: Latest({self.name})")
        try:
            manifest = await asyncio.to_thread(self._manifest, version)
        except ModelNotFoundError:
            raise ApiError(
                404, f"Servable not found for request: Specific({self.name}, {version})"
            ) from None
        columns = manifest.get("columns") or {}
        return _metadata(
            self.name, version, columns.get("numeric", []), columns.get("categorical", [])
        )

    def _manifest(self, version: int) -> dict:
        if version not in self.registry.store.versions(self.name):
            raise ModelNotFoundError(version)
        return self.registry.store.get(self.name, version).manifest

    async def healthz(self, request: Request) -> Response:
        current = self.registry.current
        return _json_response(
            200,
            {
                "status": "ok",
                "model": self.name,
                "ready": current is not None,
                "version": None if current is None else current.version,
                "loaded_versions": self.registry.loaded_versions(),
            },
        )

    # -- background refresh

    async def poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.refresh()

    async def refresh(self) -> None:
        try:
            await asyncio.to_thread(self.registry.refresh)
        except Exception:
            log.exception(
                "refreshing model %s from the store failed; serving what is loaded", self.name
            )


def _version_status(version: int, state: str, code: str = "OK", message: str = "") -> dict:
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": code, "error_message": message},
    }


def _tensor(name: str, dtype: str) -> dict:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": name,
    }


def _metadata(name: str, version: int, numeric: list[str], categorical: list[str]) -> dict:
    inputs = {feature: _tensor(feature, "DT_FLOAT") for feature in numeric}
    inputs.update({feature: _tensor(feature, "DT_STRING") for feature in categorical})
    signature = {
        "inputs": inputs,
        "outputs": {OUTPUT_NAME: _tensor(OUTPUT_NAME, "DT_FLOAT")},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": name, "signature_name": SIGNATURE_NAME, "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE_NAME: signature}}},
    }


class _ServingApp(Starlette):
    """Starlette (lifespan, /healthz, 404s) with /v1/models/... answered by the raw handler."""

    def __init__(self, server: _Server, **kwargs: Any):
        super().__init__(**kwargs)
        self.server = server

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_PREFIX):
            await self.server(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    registry: ModelRegistry,
    poll_interval: float = 1.0,
    max_batch: int = 256,
    max_wait_ms: float = 2.0,
) -> Starlette:
    """The Starlette app serving `registry.name` (see the module docstring for the API)."""
    server = _Server(registry, max_batch, max_wait_ms / 1000.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.refresh()  # load the champion before the first request is accepted
        poller = asyncio.create_task(server.poll(poll_interval)) if poll_interval > 0 else None
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            server.executor.shutdown(wait=False, cancel_futures=True)

    app = _ServingApp(
        server, routes=[Route("/healthz", server.healthz, methods=["GET"])], lifespan=lifespan
    )
    app.state.server = server
    app.state.registry = registry
    return app


def serve(
    store: ModelStore,
    name: str,
    host: str = "127.0.0.1",
    port: int = 8501,
    *,
    registry_factory: Callable[[ModelStore, str], ModelRegistry] = ModelRegistry,
    log_level: str = "info",
    **kw: Any,
) -> None:
    """Serve model `name` from `store` until interrupted (uvicorn, one worker, asyncio loop).

    `kw` goes to `create_app` (poll_interval, max_batch, max_wait_ms).
    """
    import uvicorn

    app = create_app(registry_factory(store, name), **kw)
    uvicorn.run(
        app, host=host, port=port, workers=1, loop="asyncio", access_log=False, log_level=log_level
    )


__all__ = ["ApiError", "create_app", "serve"]
