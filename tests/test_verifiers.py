"""A plain Gymnasium consumer runs DreamGym unchanged: ``verifiers``' GymEnv.

verifiers' ``GymEnv`` (``verifiers.envs.experimental.gym_env``, verifiers 0.2-0.3; 0.4 dropped
it) takes any class with ``reset(seed=...)`` / ``step(action)`` and turns episodes into
multi-turn chat rollouts. Here it gets ``gym.make`` itself as the class and a DreamGym id in its
kwargs: no adapter. The policy is a scripted OpenAI-compatible HTTP server (it answers the
actions below), so the whole loop is real: verifiers -> HTTP policy -> verifiers -> DreamGymEnv.

verifiers 0.3 pins ``mcp<2`` while openenv-core needs ``mcp>=2``, so the two cannot share an
environment: the test runs in process when verifiers imports, else in the Python named by
``DREAMGYM_VERIFIERS_PYTHON`` (a venv made with ``scripts/install_overlay_venv.sh`` over the main one plus
``pip install "verifiers==0.3.1"``), else it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from importlib.util import find_spec
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
#: The policy's actions, by turn: two page actions, then a successful stop.
ACTIONS = ['click [2]', 'type [3] "blue mug"', "stop [done]"]


def run_gymenv_episodes(num_episodes: int = 2) -> dict:
    """Run verifiers' GymEnv on DreamGym-WebArena-v0 (scripted backend) against a scripted policy."""
    import gymnasium as gym
    from helpers.fake_openai_server import FakeOpenAIServer
    from openai import AsyncOpenAI
    from verifiers.envs.experimental.gym_env import GymEnv

    import dreamgym_env  # noqa: F401 - registers the ids

    def policy(body: dict) -> str:
        turn = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        return ACTIONS[min(turn, len(ACTIONS) - 1)]

    env = GymEnv(
        env_cls=gym.make,  # unchanged: verifiers calls env_cls(**env_kwargs)
        env_kwargs={"id": "DreamGym-WebArena-v0", "backend": "scripted", "buffer": False},
        num_train_episodes=num_episodes, num_eval_episodes=num_episodes, max_episode_steps=10, seed=123,
        system_prompt="Answer with one action of the grammar, e.g. click [12] or stop [answer].",
    )
    with FakeOpenAIServer(model="policy", reply=policy) as server:
        import verifiers as vf

        client = vf.OpenAIChatCompletionsClient(AsyncOpenAI(base_url=server.url, api_key="none"))
        results = env.evaluate_sync(client, model="policy", num_examples=num_episodes, rollouts_per_example=1)
        requests = len(server.bodies)
    outputs = results["outputs"] if isinstance(results, dict) else results.outputs
    episodes = []
    for out in outputs:
        out = dict(out)
        completion = out.get("completion") or []
        episodes.append({
            "reward": float(out.get("reward") or 0.0),
            "question": str(out.get("prompt", [{}])[-1].get("content", "")) if out.get("prompt") else "",
            "assistant": [m.get("content") for m in completion if m.get("role") == "assistant"],
            "env_messages": [m.get("content") for m in completion if m.get("role") == "user"],
        })
    import importlib.metadata as md

    return {"episodes": episodes, "policy_requests": requests, "verifiers": md.version("verifiers")}


def _result() -> dict:
    if find_spec("verifiers") is not None:
        return run_gymenv_episodes()
    python = os.environ.get("DREAMGYM_VERIFIERS_PYTHON")
    if not python:
        pytest.skip("verifiers is not installed here (it pins mcp<2, which openenv-core's mcp>=2 excludes); "
                    "set DREAMGYM_VERIFIERS_PYTHON to a Python with verifiers==0.3.1 (docs/integrations.md)")
    code = (
        f"import json, sys; sys.path[:0] = [{str(HERE)!r}]; "
        "import test_verifiers as t; print('RESULT ' + json.dumps(t.run_gymenv_episodes()))"
    )
    proc = subprocess.run([python, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_verifiers_gymenv_runs_dreamgym_episodes_unchanged():
    result = _result()
    episodes = result["episodes"]
    assert len(episodes) == 2
    for ep in episodes:
        assert ep["question"].startswith("Goal: ") and "State:\n" in ep["question"]
        # verifiers 0.3 asks the policy once more after the step that ended the episode
        assert ep["assistant"][: len(ACTIONS)] == ACTIONS and len(ep["assistant"]) <= len(ACTIONS) + 1
        assert repr("after click [2]") in ep["env_messages"][0]  # every action reached the env, and
        assert repr('after type [3] "blue mug"') in ep["env_messages"][1]  # its next states came back
        assert "Episode already ended" in ep["env_messages"][2]
        assert ep["reward"] == 1.0  # verifiers' episodic sum of DreamGym's outcome reward
    assert episodes[0]["question"] != episodes[1]["question"]  # seeds 123 and 124: two tasks
