"""BatchingBackend: merge the model calls of concurrent sessions into batched backend calls.

A server of many sessions (OpenEnv, verl's agent loops) steps each session's env in its own
thread, so each step is a one-request ``generate``. This wrapper queues the requests of all
threads and hands the inner backend one ``generate`` for everything that arrived within
``max_wait_s``, which is what a batched in-process model (transformers, vLLM) needs to serve N
sessions in about the time of one. It also makes an inner backend that is not thread-safe safe
to share: only the wrapper's worker thread ever calls it.

:class:`SharedResources` builds that shared backend (and the replay buffer the sessions share)
once from a probe env.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from dreamgym_env.backends.base import (
    ExperienceModel,
    GenerationRequest,
    GenerationResult,
)
from dreamgym_env.errors import BackendError

logger = logging.getLogger(__name__)


class BatchingBackend:
    """An ExperienceModel that forwards to ``inner`` in merged batches, from one worker thread.

    Args:
        inner: the backend that runs the requests.
        max_batch: most requests per inner call.
        max_wait_s: how long the worker waits for more requests after the first one arrived.

    The attribute ``batch_sizes`` lists the size of every inner call (for tests and benchmarks).
    """

    def __init__(self, inner: ExperienceModel, *, max_batch: int = 64, max_wait_s: float = 0.005):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batch_sizes: list[int] = []
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="dreamgym-batching", daemon=True)
        self._worker.start()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self._closed:
            raise BackendError("BatchingBackend is closed")
        if not requests:
            return []
        future: Future = Future()
        self._queue.put((list(requests), future))
        return future.result()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            size = len(item[0])
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                timeout = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                items.append(nxt)
                size += len(nxt[0])
            self._serve(items)

    def _serve(self, items: list[tuple[list[GenerationRequest], Future]]) -> None:
        merged = [r for requests, _ in items for r in requests]
        self.batch_sizes.append(len(merged))
        try:
            results = self.inner.generate(merged)
            if len(results) != len(merged):
                raise BackendError(f"backend returned {len(results)} results for {len(merged)} requests")
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the error
            for _, future in items:
                future.set_exception(exc)
            return
        start = 0
        for requests, future in items:
            future.set_result(results[start : start + len(requests)])
            start += len(requests)

    def close(self) -> None:
        """Stop the worker (after the batch in flight); the inner backend stays open."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join(timeout=5)


class SharedResources:
    """What the sessions of one server (or the agent loops of one worker) share: backend and buffer.

    Built once from a probe env; only synthetic envs (``DreamGymEnv``) have anything to share,
    real twins get their own everything per session.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], *, batch_model_calls: bool = True,
                 max_batch: int = 64, max_batch_wait_s: float = 0.005):
        import gymnasium as gym

        self.backend: Any = None
        self.buffer: Any = None
        self.batching: BatchingBackend | None = None
        probe = gym.make(env_id, **env_kwargs)  # fails fast on a bad id or bad kwargs
        try:
            base = probe.unwrapped
            from dreamgym_env.env import DreamGymEnv

            if isinstance(base, DreamGymEnv):
                self.buffer = base.buffer
                self.backend = base.backend
                if batch_model_calls:
                    self.batching = BatchingBackend(base.backend, max_batch=max_batch, max_wait_s=max_batch_wait_s)
                    self.backend = self.batching
        finally:
            probe.close()

    def session_kwargs(self, env_kwargs: dict[str, Any]) -> dict[str, Any]:
        """``env_kwargs`` with the shared backend and buffer put in."""
        if self.backend is None:
            return dict(env_kwargs)
        return {**env_kwargs, "backend": self.backend, "buffer": self.buffer if self.buffer is not None else False}

    def close(self) -> None:
        if self.batching is not None:
            self.batching.close()
