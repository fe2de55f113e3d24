"""The env against a real local OpenAI-compatible HTTP server: answers, timeouts, server down."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

import dreamgym_env  # noqa: F401
from dreamgym_env.backends.openai_backend import OpenAIBackend
from dreamgym_env.errors import BackendError
from helpers.fake_openai_server import FakeOpenAIServer, free_port

INITIAL = json.dumps({"state": "[1] RootWebArea 'Shop'\n[2] link 'Orders'"})


def reply(body):
    user = body["messages"][-1]["content"]
    if "Action:" not in user:
        return INITIAL
    return json.dumps({"reasoning": "the orders page opens", "next_state": "[1] RootWebArea 'Orders'",
                       "reward": 0, "done": False, "valid_action": True})


def test_env_steps_through_the_server_then_reports_it_down():
    server = FakeOpenAIServer(model="served-model", reply=reply).start()
    backend = OpenAIBackend(server.url, max_retries=1, backoff_s=0.01, timeout_s=5)
    env = gym.make("DreamGym-WebArena-v0", backend=backend, buffer=False)
    obs, info = env.reset(seed=0)
    assert "[2] link 'Orders'" in obs
    obs, reward, terminated, truncated, info = env.step("click [2]")
    assert "RootWebArea 'Orders'" in obs and info["reasoning"] == "the orders page opens"
    body = server.bodies[-1]
    assert body["model"] == "served-model"
    assert body["response_format"]["type"] == "json_schema"  # structured outputs requested
    assert isinstance(body["seed"], int)
    server.stop()
    obs2, reward, terminated, truncated, info = env.step("click [1]")
    assert truncated and not terminated and reward == 0.0 and obs2 == obs
    assert server.url.split("/v1")[0] in info["error"]


def test_timeout_truncates_and_strict_raises():
    # Only step requests are slow; the timeout leaves the instant reset requests room on a busy machine.
    server = FakeOpenAIServer(reply=reply, delay_s=lambda b: 4.0 if "Action:" in b["messages"][-1]["content"] else 0.0)
    with server:
        backend = OpenAIBackend(server.url, model="m", max_retries=0, timeout_s=1.5)
        env = gym.make("DreamGym-WebArena-v0", backend=backend, buffer=False, max_retries=0)
        env.reset(seed=0)
        _, _, _, truncated, info = env.step("click [2]")
        assert truncated and "time" in info["error"].lower()
        strict = gym.make("DreamGym-WebArena-v0", backend=backend, buffer=False, max_retries=0, strict=True)
        strict.reset(seed=0)
        with pytest.raises(BackendError):
            strict.step("click [2]")


def test_unreachable_server_with_no_model_name_fails_clearly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError, match="127.0.0.1"):
        gym.make("DreamGym-WebArena-v0", backend=url, buffer=False)


def test_environment_variables_choose_the_served_model(monkeypatch):
    with FakeOpenAIServer(model="env-model", reply=reply) as server:
        monkeypatch.setenv("DREAMGYM_BASE_URL", server.url)
        monkeypatch.setenv("DREAMGYM_MODEL", "env-model")
        env = gym.make("DreamGym-WebArena-v0", buffer=False)  # no backend argument
        assert isinstance(env.unwrapped.backend, OpenAIBackend)
        env.reset(seed=0)
        _, _, _, _, info = env.step("click [2]")
        assert info["error"] is None and server.bodies[-1]["model"] == "env-model"
