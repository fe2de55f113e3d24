"""OpenAIBackend against a real local HTTP server that speaks the chat-completions API."""

from __future__ import annotations

import asyncio
import time

import pytest

from dreamgym_env.backends.base import ExperienceModel, GenerationRequest
from dreamgym_env.backends.openai_backend import OpenAIBackend, normalize_base_urls
from dreamgym_env.errors import BackendUnavailableError
from dreamgym_env.schema import output_json_schema
from helpers.fake_openai_server import FakeOpenAIServer, free_port, last_user_content


def ask(text: str, **kwargs) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], **kwargs)


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def servers():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        yield a, b


def make_backend(urls, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("model", "fake-model")
    kwargs.setdefault("backoff_s", 0.01)
    kwargs.setdefault("timeout_s", 5.0)
    return OpenAIBackend(urls, **kwargs)


def test_normalize_base_urls():
    assert normalize_base_urls("http://127.0.0.1:8000/v1, http://127.0.0.1:8001/") == [
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8001/v1",
    ]
    assert normalize_base_urls(["http://h:1", "http://h:2/v1/"]) == ["http://h:1/v1", "http://h:2/v1"]
    with pytest.raises(ValueError, match="Invalid server URL"):
        normalize_base_urls("127.0.0.1:8000")
    with pytest.raises(ValueError, match="No server URL"):
        normalize_base_urls(" , ")


def test_results_in_order_with_usage(server):
    # Later requests answer sooner, so completion order differs from request order.
    server.delay_s = lambda body: 0.3 - 0.05 * int(last_user_content(body).split()[-1])
    with make_backend(server.url) as backend:
        assert isinstance(backend, ExperienceModel)
        results = backend.generate([ask(f"request {i}") for i in range(6)])
    assert [r.text for r in results] == [f"echo: request {i}" for i in range(6)]
    assert all(r.ok for r in results)
    assert results[0].prompt_tokens == 2 and results[0].completion_tokens == 3
    assert all(r.latency_s > 0 for r in results)


def test_concurrency_is_bounded(server):
    server.delay_s = 0.15
    with make_backend(server.url, max_concurrency=4) as backend:
        start = time.perf_counter()
        results = backend.generate([ask(str(i)) for i in range(16)])
        elapsed = time.perf_counter() - start
    assert all(r.ok for r in results)
    assert 2 <= server.max_in_flight <= 4
    assert elapsed >= 4 * 0.15  # 16 requests, 4 at a time


def test_retries_with_backoff_then_success(server):
    server.fail_next(500, 429, 503)
    with make_backend(server.url, max_retries=3, backoff_s=0.05) as backend:
        start = time.perf_counter()
        [result] = backend.generate([ask("hello")])
        elapsed = time.perf_counter() - start
    assert result.ok, result.error
    assert result.text == "echo: hello"
    assert server.n_chat_requests == 4
    assert elapsed >= 0.05 + 0.1 + 0.2  # exponential backoff


def test_gives_up_after_max_retries(server):
    server.fail_next(500, 500, 500)
    with make_backend(server.url, max_retries=2) as backend:
        [result] = backend.generate([ask("hello")])
    assert not result.ok
    assert "HTTP 500" in result.error and server.url in result.error
    assert "3 attempts" in result.error
    assert server.n_chat_requests == 3


def test_client_error_is_not_retried(server):
    server.fail_next(400)
    with make_backend(server.url, max_retries=3) as backend:
        results = backend.generate([ask("bad"), ask("good")])
    assert server.n_chat_requests == 2
    bad = next(r for r in results if not r.ok)
    assert "HTTP 400" in bad.error and "injected failure" in bad.error
    assert sum(r.ok for r in results) == 1


def test_timeout_becomes_error_result(server):
    server.delay_s = 2.0
    with make_backend(server.url, timeout_s=0.2, max_retries=1) as backend:
        start = time.perf_counter()
        [result] = backend.generate([ask("slow")])
        elapsed = time.perf_counter() - start
    assert not result.ok
    assert "timed out" in result.error and server.url in result.error
    assert elapsed < 1.5
    assert server.n_chat_requests == 2


def test_timeout_comes_from_the_environment_when_not_given(server, monkeypatch):
    monkeypatch.setenv("DREAMGYM_TIMEOUT_S", "0.2")
    server.delay_s = 2.0
    with OpenAIBackend(server.url, model="fake-model", max_retries=0) as backend:
        assert backend.timeout_s == 0.2
        [result] = backend.generate([ask("slow")])
    assert not result.ok and "timed out after 0.2 s" in result.error
    monkeypatch.setenv("DREAMGYM_TIMEOUT_S", "0")
    with pytest.raises(ValueError, match="timeout_s"):
        OpenAIBackend(server.url, model="fake-model")
    monkeypatch.setenv("DREAMGYM_TIMEOUT_S", "15min")
    with pytest.raises(ValueError, match="DREAMGYM_TIMEOUT_S must be a number of seconds, got '15min'"):
        OpenAIBackend(server.url, model="fake-model")


def test_unreachable_server_names_url_and_how_to_start():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with make_backend(url, max_retries=2) as backend:
        start = time.perf_counter()
        results = backend.generate([ask("a"), ask("b")])
        elapsed = time.perf_counter() - start
        with pytest.raises(BackendUnavailableError, match=url.removesuffix("/v1")):
            backend.check_health()
    assert elapsed < 5
    for result in results:
        assert not result.ok
        assert url in result.error
        assert "dreamgym serve" in result.error and "vllm.entrypoints.openai.api_server" in result.error


def test_check_health(servers):
    a, _ = servers
    dead = f"http://127.0.0.1:{free_port()}"
    with make_backend([a.url, dead]) as backend:
        backend.check_health()  # one server answers: enough


def test_sampling_parameters_and_schema_arrive(server):
    schema = output_json_schema("patch")
    with make_backend(server.url) as backend:
        backend.generate(
            [
                ask("x", temperature=0.7, top_p=0.9, max_tokens=77, seed=123, stop=["\n\n"],
                    json_schema=schema),
                ask("y"),
            ]
        )
    by_text = {last_user_content(b): b for b in server.bodies}
    body = by_text["x"]
    assert body["model"] == "fake-model"
    assert body["messages"] == [{"role": "user", "content": "x"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 77)
    assert body["seed"] == 123 and body["stop"] == ["\n\n"]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "dreamgym_output", "schema": schema, "strict": True},
    }
    plain = by_text["y"]
    assert "seed" not in plain and "stop" not in plain and "response_format" not in plain
    assert plain["temperature"] == 0.0


def test_structured_outputs_off_sends_no_response_format(server):
    with make_backend(server.url, structured_outputs=False) as backend:
        backend.generate([ask("x", json_schema=output_json_schema("whole"))])
    assert "response_format" not in server.bodies[0]


def test_round_robin_spreads_evenly(servers):
    a, b = servers
    with make_backend(f"{a.url},{b.url}", routing="round_robin", max_concurrency=1) as backend:
        results = backend.generate([ask(str(i)) for i in range(10)])
    assert all(r.ok for r in results)
    assert (a.n_chat_requests, b.n_chat_requests) == (5, 5)


def test_least_loaded_spreads_and_prefers_the_faster_server(servers):
    a, b = servers
    with make_backend([a.url, b.url], max_concurrency=8) as backend:
        a.delay_s = b.delay_s = 0.1
        backend.generate([ask(str(i)) for i in range(16)])
        assert a.n_chat_requests >= 5 and b.n_chat_requests >= 5
        a.bodies.clear(), b.bodies.clear()
        # a is slow: its requests stay in flight, so new ones go to b.
        a.delay_s, b.delay_s = 1.0, 0.02  # a wide gap: the split must hold on a loaded CI machine too
        results = backend.generate([ask(str(i)) for i in range(24)])
    assert all(r.ok for r in results)
    assert b.n_chat_requests > 2 * a.n_chat_requests


@pytest.mark.parametrize("routing", ["least_loaded", "round_robin"])
def test_failed_endpoint_is_retried_on_another(server, routing):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with make_backend([dead, server.url], routing=routing, max_retries=1) as backend:
        results = backend.generate([ask(str(i)) for i in range(8)])
    assert all(r.ok for r in results), [r.error for r in results]
    assert server.n_chat_requests == 8


def test_model_none_discovers_served_model():
    with FakeOpenAIServer(model="served/tiny-llama") as srv:
        with OpenAIBackend(srv.url.removesuffix("/v1")) as backend:
            assert backend.name == "served/tiny-llama"
            backend.generate([ask("hi")])
        assert srv.bodies[0]["model"] == "served/tiny-llama"


def test_model_discovery_failure_raises():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendUnavailableError, match=url):
        OpenAIBackend(url)


def test_works_inside_a_running_event_loop(server):
    async def main() -> list[str]:
        with make_backend(server.url) as backend:
            return [r.text for r in backend.generate([ask("from async"), ask("too")])]

    assert asyncio.run(main()) == ["echo: from async", "echo: too"]


def test_close_is_idempotent_and_generate_after_close_fails(server):
    backend = make_backend(server.url)
    assert backend.generate([]) == []
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([ask("late")])


def test_invalid_arguments(server):
    with pytest.raises(ValueError, match="routing"):
        OpenAIBackend(server.url, "m", routing="random")
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIBackend(server.url, "m", max_concurrency=0)
