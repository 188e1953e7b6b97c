"""Dynamic batching, as TF Serving's batching session does, for one loaded model version.

A request is validated on the event loop (`serving.inputs`), then queued on its version's
batcher. The batcher runs one predict at a time in a worker thread; requests that arrive
meanwhile form the next batch (up to `max_batch` rows). When the previous batch held more than
one request (the server is under concurrent load) the batcher also waits up to `max_wait` for
more; a lone request at concurrency 1 never waits, so batching adds no latency there. Results are
split back per request. If a batch fails, its requests are retried one by one so that one request
cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import numpy as np

from ml_assets.serving.inputs import RequestSchema
from ml_assets.serving.registry import LoadedModel

log = logging.getLogger(__name__)


class Batcher:
    """Queues validated requests for one loaded version and predicts them in batches."""

    def __init__(
        self,
        loaded: LoadedModel,
        schema: RequestSchema,
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

