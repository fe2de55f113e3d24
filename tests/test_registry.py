"""Spec-driven tests over every registered DreamGym id."""

from __future__ import annotations

import os

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import dreamgym_env
from dreamgym_env.backends import ScriptedBackend

from dreamgym_env.domains.miniwob.browser import is_miniwob_available


def _param(env_id: str):
    """An env id with the skip mark its real twin needs where its browser is missing."""
    marks = []
    if env_id.startswith("DreamGym-MiniWoB-Real"):
        marks.append(pytest.mark.skipif(not is_miniwob_available(),
                                         reason='pip install "dreamgym-env[miniwob]"; apt-get install chromium chromium-driver'))
    if env_id.startswith("DreamGym-WebArena") and env_id.endswith("-Real-v0"):
        marks.append(pytest.mark.skipif(not os.environ.get("WA_SHOPPING"),
                                        reason="needs running WebArena sites (WA_* variables); its pipeline is "
                                        "tested on a loopback page in test_webarena_real.py"))
    return pytest.param(env_id, marks=marks, id=env_id)


DREAMGYM_IDS = [env_id for env_id in gym.registry if env_id.startswith("DreamGym-")]
PARAMS = [_param(env_id) for env_id in DREAMGYM_IDS]


def test_ids_are_registered_on_import():
    assert set(dreamgym_env.ENV_IDS) <= set(DREAMGYM_IDS)
    assert "DreamGym-WebArena-v0" in DREAMGYM_IDS


@pytest.mark.parametrize("env_id", PARAMS)
def test_check_env(env_id):
    env = gym.make(env_id, backend=ScriptedBackend(), buffer=False, render_mode="ansi")
    check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", PARAMS)
def test_seeded_rollouts_are_equal(env_id):
    def rollout():
        env = gym.make(env_id, backend=ScriptedBackend(), buffer=False)
        env.action_space.seed(7)
        obs, info = env.reset(seed=3)
        trace = [(obs, info["task_id"])]
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            trace.append((obs, reward, terminated, truncated, info["reasoning"], info["valid_action"]))
            if terminated or truncated:
                break
        env.close()
        return trace

    assert rollout() == rollout()


@pytest.mark.parametrize("env_id", PARAMS)
def test_step_limit_comes_from_the_registration(env_id):
    spec = gym.spec(env_id)
    assert spec.max_episode_steps
    env = gym.make(env_id, backend=ScriptedBackend(), buffer=False, max_episode_steps=2)
    env.reset(seed=0)
    assert env.step("click [2]")[3] is False
    assert env.step("click [2]")[3] is True


def test_make_with_module_prefix():
    env = gym.make("dreamgym_env:DreamGym-WebArena-v0", backend=ScriptedBackend(), buffer=False)
    env.reset(seed=0)
    env.close()
