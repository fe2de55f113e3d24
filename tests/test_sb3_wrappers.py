"""SB3 wrappers: Discrete admissible actions with masks, Box embeddings, SB3 trains unchanged."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dreamgym_env  # noqa: F401
from dreamgym_env.wrappers import DiscreteAdmissibleActions, make_sb3_env

ENV_ID = "DreamGym-MiniWoB-v0"


def _env(**kw):
    return make_sb3_env(ENV_ID, backend="scripted", buffer=False, **kw)


def test_indices_map_to_admissible_actions_and_masks_follow_them():
    env = _env(max_actions=8)
    obs, info = env.reset(seed=0)
    actions = info["action_texts"]
    assert 0 < len(actions) <= 8 and actions == info["admissible_actions"][:8]
    assert env.observation_space.contains(obs) and obs.shape == ((2 + 8) * 64,)
    mask = env.action_masks()
    assert mask.tolist() == [i < len(actions) for i in range(8)]
    inner = env.env
    assert inner.action_text(0) == actions[0]
    assert inner.action_text(len(actions)) == actions[0]  # "wrap"
    _, _, _, _, info = env.step(0)
    assert info["action_text"] == actions[0] and info["valid_action"]
    with pytest.raises(ValueError, match="outside Discrete"):
        inner.action_text(8)


def test_reject_mode_sends_an_action_the_env_rejects():
    env = _env(max_actions=8, invalid="reject")
    _, info = env.reset(seed=0)
    n = len(info["action_texts"])
    assert n < 8
    _, reward, terminated, _, info = env.step(n)
    assert reward == 0.0 and not terminated and info["last_action_error"]


def test_action_embeddings_carry_the_element_line():
    env = _env(max_actions=4, dim=32)
    obs, info = env.reset(seed=0)
    rows = obs.reshape(6, 32)
    n = len(info["action_texts"][:4])
    assert np.allclose(np.linalg.norm(rows[: 2 + n], axis=1), 1.0, atol=1e-5)
    assert not rows[2 + n :].any()  # absent actions are zero rows


def test_env_without_admissible_actions_gets_a_clear_error():
    env = DiscreteAdmissibleActions(gym.make("DreamGym-WebArena-v0", backend="scripted", buffer=False))
    with pytest.raises(KeyError, match="admissible_actions"):
        env.reset(seed=0)


def test_sb3_env_checker_and_ppo_and_maskable_ppo_run_unchanged():
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env

    env = _env(max_actions=8)
    check_env(env)
    before = [p.detach().clone() for p in MaskablePPO("MlpPolicy", env, seed=0).policy.parameters()]
    model = MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0)
    model.learn(64)
    assert model.num_timesteps == 64
    assert any((a != b).any() for a, b in zip(before, model.policy.parameters()))
    PPO("MlpPolicy", _env(max_actions=8), n_steps=32, batch_size=16, n_epochs=1, seed=0).learn(32)


def _miniwob_available() -> bool:
    from dreamgym_env.domains.miniwob.browser import is_miniwob_available

    return is_miniwob_available()


@pytest.mark.skipif(not _miniwob_available(), reason="needs miniwob + selenium and Chromium + ChromeDriver")
def test_example_trains_on_synthetic_then_real_miniwob():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "examples" / "sb3_maskable_ppo.py"
    spec = importlib.util.spec_from_file_location("sb3_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--task", "click-test", "--backend", "scripted", "--sim-steps", "64",
                            "--real-steps", "64", "--n-steps", "32", "--eval-episodes", "2"])
    assert summary["timesteps"] == 128 and summary["parameters_changed"] > 0
    for key in ("real_success_untrained", "real_success_after_sim", "real_success_after_real"):
        assert 0.0 <= summary[key] <= 1.0
