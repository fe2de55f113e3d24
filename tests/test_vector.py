"""DreamGymVectorEnv: one batched backend call per step, Gymnasium autoreset semantics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import dreamgym_env  # noqa: F401
from dreamgym_env.backends import ScriptedBackend
from dreamgym_env.vector import DreamGymVectorEnv

ENV_ID = "DreamGym-WebArena-v0"


def test_make_vec_uses_the_vector_entry_point_and_batches_steps():
    backend = ScriptedBackend()
    envs = gym.make_vec(ENV_ID, num_envs=4, backend=backend, buffer=False)
    assert isinstance(envs, DreamGymVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, infos = envs.reset(seed=0)
    assert len(obs) == 4 and obs in envs.observation_space
    backend.calls.clear()
    obs, rewards, terminated, truncated, infos = envs.step(["click [2]"] * 4)
    assert backend.calls == [4]  # ONE backend call for the four steps
    assert rewards.shape == (4,) and terminated.dtype == bool
    assert list(infos["reasoning"]) == ["scripted: click [2]"] * 4
    assert infos["_reasoning"].all()
    envs.close()


def test_sub_envs_match_single_envs_seeded_alike():
    envs = gym.make_vec(ENV_ID, num_envs=3, backend=ScriptedBackend(), buffer=False)
    vec_obs, _ = envs.reset(seed=10)
    vec_obs, *_ = envs.step(["click [1]", "click [2]", "click [3]"])
    for i in range(3):
        env = gym.make(ENV_ID, backend=ScriptedBackend(), buffer=False)
        env.reset(seed=10 + i)
        obs, *_ = env.step(f"click [{i + 1}]")
        assert obs == vec_obs[i]


def test_next_step_autoreset():
    envs = gym.make_vec(ENV_ID, num_envs=2, backend=ScriptedBackend(), buffer=False)
    envs.reset(seed=0)
    obs, rewards, terminated, truncated, infos = envs.step(["stop [yes]", "click [2]"])
    assert terminated.tolist() == [True, False] and rewards.tolist() == [1.0, 0.0]
    obs, rewards, terminated, truncated, infos = envs.step(["click [3]", "click [3]"])
    # env 0 was reset: the action was ignored, reward 0, a fresh episode at step 0
    assert rewards[0] == 0.0 and not terminated[0] and not truncated[0]
    assert infos["step"][0] == 0 and infos["step"][1] == 2
    assert "after click [3]" not in obs[0] and "after click [3]" in obs[1]


def test_same_step_autoreset_puts_final_obs_in_info():
    envs = DreamGymVectorEnv(2, backend=ScriptedBackend(), buffer=False, autoreset_mode="SameStep")
    envs.reset(seed=0)
    obs, rewards, terminated, truncated, infos = envs.step(["stop [yes]", "click [2]"])
    assert terminated[0] and "after stop [yes]" in infos["final_obs"][0]
    assert "after stop" not in obs[0]


def test_time_limit_truncates_in_the_vector_env():
    envs = gym.make_vec(ENV_ID, num_envs=2, backend=ScriptedBackend(), buffer=False, max_episode_steps=2)
    envs.reset(seed=0)
    assert not envs.step(["click [1]"] * 2)[3].any()
    assert envs.step(["click [1]"] * 2)[3].all()


def test_reset_mask_and_seed_lists():
    envs = DreamGymVectorEnv(3, backend=ScriptedBackend(), buffer=False)
    obs, _ = envs.reset(seed=[1, 2, 3])
    envs.step(["click [1]"] * 3)
    stepped = envs._last_obs
    obs2, infos = envs.reset(options={"reset_mask": np.array([True, False, False])})
    assert obs2[1] == stepped[1] and obs2[0] != stepped[0]
    with pytest.raises(ValueError, match="3 envs"):
        envs.step(["click [1]"])
