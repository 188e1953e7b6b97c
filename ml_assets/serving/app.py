"""The champion model over HTTP, speaking the TensorFlow Serving REST API.

Endpoints (`{name}` is the registry's model name; `{v}` an integer version):

    GET  /healthz                                   {"status", "model", "ready", "version", ...}
    GET  /openapi.json                              OpenAPI 3.1 description (champion's features)
    GET  /v1/models/{name}                          status of the champion (plus versions that
                                                    failed to load or were refused: state END,
                                                    the reason in error_message)
    GET  /v1/models/{name}/versions/{v}             status of one version (loads it on demand)
    GET  /v1/models/{name}[/versions/{v}]/metadata  signature: one input per feature
    POST /v1/models/{name}[/versions/{v}]:predict   {"instances": [{feature: value}, ...]}
                                                    -> {"predictions": [p, ...]}
                                                    {"inputs": {feature: [value, ...]}}
                                                    -> {"outputs": [p, ...]}
    (`/labels/champion` is accepted wherever `/versions/{v}` is.)

Each prediction is P(label = 1). What a request may contain is decided in `serving.inputs` (the
rules of batch scoring's `records_to_frame` plus the flavor's float range). Errors are
`{"error": message}` and a request's content never causes a 5xx:
    400  malformed request: bad JSON, a wrong type, a missing feature, a number outside the
         model's float range (float64 for sklearn, float32 for Keras), a version that is not a
         decimal int64, or a model output that is not a finite number (NaN is never emitted);
         the message names the instance index and the feature
    404  unknown model, version or label       405  wrong HTTP method
    408  body not received within `ServingLimits.body_timeout_s`, or headers within
         `header_timeout_s` (`serving.protocol`); the connection is closed. A body nobody needs
         (a 404, a 415, ...) is read and dropped under the same deadline before the answer.
    413  body over `max_body_bytes`, or more than `max_instances` instances
    415  content-type not JSON (a request without one is read as JSON)
    503  a version that fails to load, or no version loaded while the champion is refused
    500  only for a bug in the server (logged), never for a request's content

Batching: `serving.batching`. The /v1/models/... paths are answered by one raw ASGI handler ahead
of Starlette's routing (Starlette still runs the lifespan, /healthz and 404s): at high load
Starlette's Request, URL and routing objects were a third of the per-request CPU.

A background task calls `registry.refresh()` every `poll_interval` seconds (TF Serving polls its
model base path every second by default); swaps never fail or drop a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ml_assets.serving.answer import dump_predictions
from ml_assets.serving.batching import Batcher
from ml_assets.serving.body import BODY_READ, Disconnected, declares_body, drained, read_body
from ml_assets.serving.inputs import (
    ApiError,
    RequestSchema,
    ServingLimits,
    check_content_type,
    parse_body,
    parse_version,
)
from ml_assets.serving.registry import LoadedModel, ModelNotFoundError, ModelRegistry
from ml_assets.serving.responses import failed_statuses, metadata, version_status

if TYPE_CHECKING:
    from ml_assets.storage.model_store import ModelStore

log = logging.getLogger(__name__)

CHAMPION_LABEL = "champion"

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[^/:]*))?/?$"
)
_PREFIX = "/v1/models/"
_JSON_HEADERS = {"content-type": "application/json"}


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _json_response(status: int, body: Any) -> Response:
    return Response(_dumps(body), status, headers=_JSON_HEADERS)


def _name(text: str) -> str:
    return text if len(text) <= 100 else f"{text[:100]}..."


# ---------------------------------------------------------------------------- the handler


class _Server:
    def __init__(
        self, registry: ModelRegistry, max_batch: int, max_wait: float, limits: ServingLimits,
        value_types: dict[str, str] | None = None,
    ):
        self.registry = registry
        self.value_types = value_types
        self.name = registry.name
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait))
        self.limits = limits
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="predict")
        self._loading: dict[int, asyncio.Future] = {}

    # -- resolving the version a request addresses

    def _selector(self, match: re.Match) -> int | None:
        if match["name"] != self.name:
            raise ApiError(404, f"Servable not found for request: Latest({_name(match['name'])})")
        version, label = match["version"], match["label"]
        if label is not None:
            if label != CHAMPION_LABEL:
                raise ApiError(
                    404,
                    f"Unrecognized servable version label: {_name(label)} "
                    f"(only '{CHAMPION_LABEL}' is defined)",
                )
            return None
        if version is None:
            return None
        return parse_version(version)

    def _no_champion(self) -> ApiError:
        """404 while there is no champion; 503 with the reasons when it was refused."""
        failures = self.registry.failures()
        if not failures:
            return ApiError(404, f"Servable not found for request: Latest({self.name})")
        reasons = "; ".join(f"version {v}: {m}" for v, m in sorted(failures.items()))
        return ApiError(
            503,
            f"no version of model {self.name} is loaded: {reasons}",
            extra={"model_version_status": failed_statuses(failures)},
        )

    async def _loaded(self, version: int | None) -> LoadedModel:
        loaded = self.registry.peek(version)
        if loaded is not None:
            return loaded
        if version is None:
            raise self._no_champion()
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

    def _batcher(self, loaded: LoadedModel) -> Batcher:
        batcher = loaded.state.get("batcher")
        if batcher is None:
            schema = RequestSchema(
                loaded.columns.numeric,
                loaded.columns.categorical,
                flavor=loaded.flavor,
                limits=self.limits,
                # How batch read each feature's raw values (ml_assets.ml.values): the manifest's, else
                # the ones the app was started with (the active spec's, for older manifests).
                value_types=loaded.manifest.get("value_types") or self.value_types,
            )
            batcher = loaded.state["batcher"] = Batcher(
                loaded, schema, self.executor, self.max_batch, self.max_wait
            )
        return batcher

    # -- the /v1/models/... endpoints, as one raw ASGI handler (the hot path skips Starlette's
    # -- Request/Response objects and routing: a third of the per-request cost at high load)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        close = False
        try:
            status, body = await self._dispatch(scope, receive)
        except ApiError as error:
            status = error.status
            body = _dumps({"error": error.message, **(error.extra or {})})
            close = error.close  # the rest of the body may still be on its way: do not read it
        except Disconnected:
            return
        except Exception as error:  # a bug, never bad input: still a JSON answer
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            status = 500
            body = _dumps({"error": f"internal error: {type(error).__name__}: {error}"})
        if not close and BODY_READ not in scope and declares_body(scope["headers"]):
            # Answered without reading a declared body (an error, or a GET): read and drop it
            # first, under the same deadline and size limit. Closing with unread data would
            # reset the connection and could lose the answer; a half-sent body gets its 408.
            try:
                await self.drain(scope, receive)
            except ApiError as error:
                status, close = error.status, True
                body = _dumps({"error": error.message})
            except Disconnected:
                return
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def drain(self, scope: dict, receive: Callable) -> None:
        """Read and drop a request body nobody needs (ApiError 408/413 as `_read_body`)."""
        await read_body(scope, receive, self.limits)

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
            version = self._selector(match)
            check_content_type(scope["headers"])
            return 200, await self._predict(version, scope, receive)
        if method != "GET":
            raise ApiError(405, f"{path[:200]} answers GET, got {method}")
        selector = self._selector(match)
        if match["metadata"]:
            return 200, _dumps(await self._metadata(selector))
        return 200, _dumps(await self._status(selector))

    async def _predict(self, version: int | None, scope: dict, receive: Callable) -> bytes:
        loaded = await self._loaded(version)
        batcher = self._batcher(loaded)
        schema = batcher.schema
        body = await read_body(scope, receive, self.limits)
        records, columnar = parse_body(body, schema)
        try:
            probabilities = await batcher.submit(records)
        except ValueError as error:  # models.InvalidRecordsError: input the model refused
            raise ApiError(400, str(error)) from None
        return dump_predictions(probabilities, records, schema, columnar)

    async def _status(self, version: int | None) -> dict:
        loaded = await self._loaded(version)
        statuses = [version_status(loaded.version, "AVAILABLE")]
        if version is None:  # versions that failed to load (and have not loaded since)
            failures = self.registry.failures()
            failures.pop(loaded.version, None)
            statuses.extend(failed_statuses(failures))
        return {"model_version_status": statuses}

    async def _metadata(self, version: int | None) -> dict:
        loaded = self.registry.peek(version)
        if loaded is not None:
            return metadata(
                self.name, loaded.version, loaded.columns.numeric, loaded.columns.categorical
            )
        if version is None:
            raise self._no_champion()
        try:
            manifest = await asyncio.to_thread(self._manifest, version)
        except ModelNotFoundError:
            raise ApiError(
                404, f"Servable not found for request: Specific({self.name}, {version})"
            ) from None
        except Exception as error:  # e.g. a manifest that fails verification
            raise ApiError(
                503, f"version {version} of model {self.name} cannot be read: "
                f"{type(error).__name__}: {error}"
            ) from None
        columns = manifest.get("columns") or {}
        return metadata(
            self.name, version, columns.get("numeric", []), columns.get("categorical", [])
        )

    def _manifest(self, version: int) -> dict:
        if version not in self.registry.store.versions(self.name):
            raise ModelNotFoundError(version)
        return self.registry.store.get(self.name, version).manifest

    async def openapi(self, request: Request) -> Response:
        from ml_assets.serving.openapi import describe

        current = self.registry.current
        if current is None:
            return _json_response(200, describe(self.name, self.limits))
        return _json_response(
            200,
            describe(
                self.name,
                self.limits,
                numeric=list(current.columns.numeric),
                categorical=list(current.columns.categorical),
                flavor=current.flavor,
                version=current.version,
            ),
        )

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
                "failures": {str(v): m for v, m in sorted(self.registry.failures().items())},
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


# ---------------------------------------------------------------------------- the app


class _ServingApp(Starlette):
    """Starlette (lifespan, /healthz, 404s) with /v1/models/... answered by the raw handler."""

    def __init__(self, server: _Server, **kwargs: Any):
        super().__init__(**kwargs)
        self.server = server

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif scope["path"].startswith(_PREFIX):
            await self.server(scope, receive, send)
        elif declares_body(scope["headers"]):
            # No route outside /v1/models reads a body: drop it first (under the deadline and
            # size limit), so that a half-sent body cannot hold the connection.
            try:
                await self.server.drain(scope, receive)
            except ApiError as error:
                body = _dumps({"error": error.message})
                await send({"type": "http.response.start", "status": error.status, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                    (b"connection", b"close"),
                ]})
                await send({"type": "http.response.body", "body": body})
                return
            except Disconnected:
                return
            await super().__call__(scope, drained, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    registry: ModelRegistry,
    poll_interval: float = 1.0,
    max_batch: int = 256,
    max_wait_ms: float = 2.0,
    limits: ServingLimits | None = None,
    value_types: dict[str, str] | None = None,
) -> Starlette:
    """The Starlette app serving `registry.name` (see the module docstring for the API).

    `limits` bounds each request (size, instances, body read time); defaults: `ServingLimits()`.
    `value_types` ({feature: raw type}, `ml_assets.ml.values.feature_value_types`) is used for model
    versions whose manifest has none.
    """
    limits = limits or ServingLimits()
    server = _Server(registry, max_batch, max_wait_ms / 1000.0, limits, value_types)

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
        server,
        routes=[
            Route("/healthz", server.healthz, methods=["GET"]),
            Route("/openapi.json", server.openapi, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    app.state.registry = registry
    app.state.limits = limits
    return app


def uvicorn_protocol(app: Starlette) -> type:
    """The uvicorn `http=` protocol for `app`: httptools with the app's header deadline."""
    from ml_assets.serving.protocol import header_timeout_protocol

    limits = getattr(app.state, "limits", None) or ServingLimits()
    return header_timeout_protocol(limits.header_timeout_s)


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

    `kw` goes to `create_app` (poll_interval, max_batch, max_wait_ms, limits).
    """
    import uvicorn

    app = create_app(registry_factory(store, name), **kw)
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=1,
        loop="asyncio",
        http=uvicorn_protocol(app),
        access_log=False,
        log_level=log_level,
    )


__all__ = ["ApiError", "ServingLimits", "create_app", "serve", "uvicorn_protocol"]
