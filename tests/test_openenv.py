"""The OpenEnv server against real clients: a uvicorn server process on loopback, WebSocket sessions.

The env is DreamGym-WebArena-v0 on the scripted backend (deterministic, instant): these are
contract tests of the server (sessions, isolation, seeding, errors), not claims about a model.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from importlib.util import find_spec

import httpx
import pytest
from helpers.fake_openai_server import free_port

pytestmark = pytest.mark.skipif(
    find_spec("openenv") is None, reason='openenv-core is not installed: pip install "dreamgym-env[openenv]"'
)

ENV_ID = "DreamGym-WebArena-v0"
SESSIONS = 10


@pytest.fixture(scope="module")
def server_url():
    """``python -m dreamgym_env.integrations.openenv_server`` in a subprocess, until /health answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "dreamgym_env.integrations.openenv_server", "--env", ENV_ID, "--host", "127.0.0.1",
        "--port", str(port), "--max-concurrent", str(SESSIONS + 2), "--backend", "scripted", "--buffer", "none",
        "--log-level", "warning",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    import dreamgym_env.integrations.openenv_client  # noqa: F401 - the slow import, while the server starts

    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start in 90 s:\n{proc.stdout.read()}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        output, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    assert "Traceback" not in output, output


def run(coro):
    return asyncio.run(coro)


async def _episode(url: str, i: int) -> dict:
    """Reset with seed 100+i, three marked steps, a bad action, stop, one step too many."""
    from dreamgym_env.integrations.openenv_client import DreamGymEnvClient

    async with DreamGymEnvClient(base_url=url) as env:
        first = await env.reset(seed=100 + i)
        steps = []
        for k in range(3):
            steps.append(await env.step(f'type [3] "session-{i}-step-{k}"'))
            await asyncio.sleep(0)  # let the other sessions interleave
        bad = await env.step("clik [3]")
        stop = await env.step(f"stop [answer-{i}]")
        late = await env.step("click [2]")
        state = await env.state()
    return {"first": first, "steps": steps, "bad": bad, "stop": stop, "late": late, "state": state}


def test_concurrent_sessions_run_whole_episodes_and_never_see_each_other(server_url):
    async def main():
        return await asyncio.wait_for(asyncio.gather(*[_episode(server_url, i) for i in range(SESSIONS)]), 120)

    results = run(main())
    task_ids = set()
    for i, r in enumerate(results):
        first = r["first"].observation
        assert first.text.startswith("Goal: ") and first.goal and first.goal in first.text
        assert r["first"].reward is None and not r["first"].done
        task_ids.add(first.task_id)
        for k, step in enumerate(r["steps"]):
            obs = step.observation
            assert step.reward == 0.0 and not step.done and obs.last_action_error == ""
            assert obs.task_id == first.task_id and obs.goal == first.goal  # same episode, same task
            for j in range(SESSIONS):  # its own marks, every one so far, and nobody else's
                for kk in range(3):
                    assert (f"session-{j}-step-{kk}" in obs.text) == (j == i and kk <= k), (i, k, j, kk)
            assert obs.metadata["reasoning"].startswith("scripted: type [3]")  # info, through the wire
            assert obs.info["valid_action"] is True and obs.info["retrieved"] == []
        assert "unknown action 'clik'" in r["bad"].observation.last_action_error and r["bad"].reward == 0.0
        assert not r["bad"].done
        assert r["stop"].reward == 1.0 and r["stop"].done and not r["stop"].observation.truncated
        assert r["stop"].observation.metadata["reasoning"] == f"scripted: stop [answer-{i}]"
        assert r["late"].done and "call reset()" in r["late"].observation.last_action_error
        assert r["late"].reward == 0.0
        state = r["state"]
        assert (state.seed, state.step_count, state.cum_reward, state.done) == (100 + i, 5, 1.0, True)
        assert state.task_id == first.task_id and state.env_id == ENV_ID
    assert len(task_ids) > 1  # different seeds drew different tasks


def test_same_seed_same_start_over_websocket_and_http(server_url):
    from dreamgym_env.integrations.openenv_client import DreamGymEnvClient

    async def start(seed, **kwargs):
        async with DreamGymEnvClient(base_url=server_url) as env:
            return (await env.reset(seed=seed, **kwargs)).observation

    async def main():
        return await asyncio.gather(start(7), start(7), start(8), start(7, task_id="27"))

    a, b, c, pinned = run(main())
    assert a.text == b.text and a.task_id == b.task_id  # GRPO groups start identically
    assert (c.task_id, c.text) != (a.task_id, a.text)
    assert pinned.task_id == "27"
    # The stateless HTTP route builds its own env and must agree.
    body = httpx.post(f"{server_url}/reset", json={"seed": 7}, timeout=30).json()
    assert body["observation"]["text"] == a.text and body["done"] is False
    schema = httpx.get(f"{server_url}/schema", timeout=30).json()
    assert "action_str" in schema["action"]["properties"]
    assert {"text", "goal", "last_action_error", "admissible_actions", "truncated", "info"} <= set(
        schema["observation"]["properties"]
    )
    assert httpx.get(f"{server_url}/metadata", timeout=30).json()["name"] == ENV_ID


@pytest.mark.parametrize(
    "action",
    ["clik [3]", "", "click", 'type [3] no quotes', "stop [unclosed", "x" * 3000, "click [3]\nclick [4]", "🙂 [1]"],
    ids=["typo", "empty", "no-ref", "unquoted", "unclosed", "long", "two-lines", "emoji"],
)
def test_malformed_action_is_error_text_and_the_episode_goes_on(server_url, action):
    from dreamgym_env.integrations.openenv_client import DreamGymEnvClient

    async def main():
        async with DreamGymEnvClient(base_url=server_url) as env:
            first = await env.reset(seed=3)
            bad = await env.step(action)
            good = await env.step("click [2]")
            return first, bad, good

    first, bad, good = run(main())
    assert bad.observation.last_action_error, action
    assert bad.reward == 0.0 and not bad.done and bad.observation.info["valid_action"] is False
    assert bad.observation.task_id == first.observation.task_id
    assert good.observation.last_action_error == "" and "after click [2]" in good.observation.text


def test_invalid_messages_get_error_replies_and_the_session_survives(server_url):
    from websockets.asyncio.client import connect

    async def main():
        async with connect(server_url.replace("http", "ws") + "/ws") as ws:
            replies = []
            for message in [
                {"type": "step", "data": {"action_str": "click [2]"}},  # before any reset
                {"type": "reset", "data": {"seed": 5}},
                {"type": "step", "data": {"no_action": 1}},  # fails the Action schema
                {"type": "step", "data": {"action_str": 42}},  # wrong type
                {"type": "warp"},  # unknown message type
            ]:
                await ws.send(json.dumps(message))
                replies.append(json.loads(await ws.recv()))
            await ws.send("not json")
            replies.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "step", "data": {"action_str": "click [2]"}}))
            replies.append(json.loads(await ws.recv()))
            return replies

    before, reset, missing, wrong, unknown, garbage, after = run(main())
    assert before["type"] == "observation" and "reset() first" in before["data"]["observation"]["last_action_error"]
    assert reset["type"] == "observation"
    for reply in (missing, wrong, unknown, garbage):
        assert reply["type"] == "error", reply
    assert after["type"] == "observation" and "after click [2]" in after["data"]["observation"]["text"]


def test_remote_gymnasium_env_plays_the_server(server_url):
    from dreamgym_env.integrations.openenv_client import RemoteDreamGymEnv

    env = RemoteDreamGymEnv(server_url)
    try:
        obs, info = env.reset(seed=11, options={"task_id": "27"})
        assert info["task_id"] == "27" and obs.startswith("Goal: ")
        obs, reward, terminated, truncated, info = env.step("scroll [down]")
        assert (reward, terminated, truncated) == (0.0, False, False) and "after scroll [down]" in obs
        _, reward, terminated, truncated, _ = env.step("stop [done]")
        assert (reward, terminated, truncated) == (1.0, True, False)
    finally:
        env.close()


def test_trl_tool_env_plays_the_server_by_url(server_url):
    from dreamgym_env.integrations.trl_env import make_tool_env

    cls = make_tool_env(server_url, verbs=["click", "type", "stop"])
    assert cls.__name__ == "DreamGymRemoteToolEnv"
    env, twin = cls(), cls()
    try:
        first = env.reset(prompt=[], seed=21)
        assert first == twin.reset(seed=21)  # same seed, same start, over the wire too
        assert "after click [2]" in env.click("2")
        assert "Episode over (task completed), reward 1" in env.stop("done") and env.get_reward() == 1.0
    finally:
        env.env.close()
        twin.env.close()


def test_batching_backend_merges_concurrent_calls_and_keeps_them_apart():
    from dreamgym_env.backends import GenerationRequest, ScriptedBackend
    from dreamgym_env.integrations.batching import BatchingBackend

    inner = ScriptedBackend(latency_s=0.05)
    batching = BatchingBackend(inner, max_wait_s=0.02)
    results: dict[int, str] = {}

    def call(i: int) -> None:
        request = GenerationRequest([], metadata={"kind": "transition", "action": f"click [{i}]", "step": 0})
        results[i] = batching.generate([request])[0].text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(f"click [{i}]" in results[i] for i in range(8))  # each caller got its own answer
    assert sum(batching.batch_sizes) == 8 and max(batching.batch_sizes) > 1
    assert inner.calls == batching.batch_sizes

    def broken(request):
        raise RuntimeError("boom")

    failing = BatchingBackend(ScriptedBackend(responder=broken))
    assert "boom" in failing.generate([GenerationRequest([])])[0].error  # per-request errors stay results
    failing.close()
    batching.close()


def test_unknown_env_id_fails_when_the_app_is_built():
    import gymnasium as gym

    from dreamgym_env.integrations.openenv_server import create_dreamgym_app

    with pytest.raises(gym.error.Error, match="WebArena"):
        create_dreamgym_app("DreamGym-WebAren-v0", backend="scripted", buffer=False)


def _miniwob_available() -> bool:
    try:
        from dreamgym_env.domains.miniwob.browser import is_miniwob_available
    except ImportError:
        return False
    return is_miniwob_available()


@pytest.mark.skipif(not _miniwob_available(), reason="needs miniwob + selenium and Chromium + ChromeDriver")
def test_real_twin_through_the_server_two_sessions_solve_their_tasks():
    """DreamGym-MiniWoB-Real-v0 behind the same server: each session drives its own browser."""
    import uvicorn

    from dreamgym_env.domains.miniwob.oracles import OraclePolicy
    from dreamgym_env.integrations.openenv_client import DreamGymEnvClient
    from dreamgym_env.integrations.openenv_server import create_dreamgym_app

    port = free_port()
    app = create_dreamgym_app("DreamGym-MiniWoB-Real-v0", max_concurrent_envs=2)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)

    async def solve(family: str, seed: int):
        policy = OraclePolicy()
        async with DreamGymEnvClient(base_url=f"http://127.0.0.1:{port}", message_timeout_s=120) as env:
            result = await env.reset(seed=seed, task_id=family)
            assert result.observation.info["source"] == "real"
            for _ in range(10):
                action = policy.act(result.observation.text, result.observation.info)
                result = await env.step(action)
                if result.done:
                    break
            return family, result

    async def main():
        return await asyncio.gather(solve("click-button", 0), solve("choose-list", 1))

    try:
        for family, result in run(main()):
            assert result.done and result.reward == 1.0, (family, result.observation.text[-300:])
            assert result.observation.task_id == family
    finally:
        server.should_exit = True
        thread.join(15)
