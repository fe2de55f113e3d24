"""The synthetic MiniWoB twin speaks exactly the real env's language."""

from __future__ import annotations

import gymnasium as gym
import pytest

import dreamgym_env  # noqa: F401
from dreamgym_env.backends import ScriptedBackend
from dreamgym_env.buffer import ExperienceBuffer
from dreamgym_env.domains.miniwob import MiniWoBDomain, real_dataset_path
from dreamgym_env.domains.miniwob.browser import is_miniwob_available
from dreamgym_env.schema import Transition

#: Diagnostics only a browser can give (MiniWoB's own reward and seed).
REAL_ONLY_KEYS = {"raw_reward", "miniwob_seed"}


def test_synthetic_twin_registers_with_the_real_ids_and_data():
    spec, real_spec = gym.spec("DreamGym-MiniWoB-v0"), gym.spec("DreamGym-MiniWoB-Real-v0")
    assert spec.max_episode_steps == real_spec.max_episode_steps
    assert real_dataset_path().is_file()
    env = gym.make("DreamGym-MiniWoB-v0", backend=ScriptedBackend(), buffer=False)
    assert set(env.unwrapped.domain.task_ids) == set(MiniWoBDomain().task_ids)


@pytest.mark.skipif(not is_miniwob_available(), reason='pip install "dreamgym-env[miniwob]"; apt-get install chromium chromium-driver')
def test_real_and_synthetic_share_observation_grammar_and_info_keys(tmp_path):
    real = gym.make("DreamGym-MiniWoB-Real-v0")
    try:
        obs_real, info_real = real.reset(seed=123, options={"task_id": "click-button"})
        state = obs_real.split("State:\n", 1)[1]
        buffer = ExperienceBuffer(tmp_path / "buffer")
        buffer.add([Transition("miniwob", "click-button", "real-1", 0, state, "click [1]", state, 0.0, False,
                               goal=info_real["goal"], source="real")])
        synthetic = gym.make("DreamGym-MiniWoB-v0", backend=ScriptedBackend(), buffer=buffer)
        obs_syn, info_syn = synthetic.reset(seed=0, options={"task_id": "click-button"})
        # the same initial state gives the same observation and the same admissible actions
        assert obs_syn == obs_real
        assert info_syn["admissible_actions"] == info_real["admissible_actions"]
        assert set(info_real) - REAL_ONLY_KEYS == set(info_syn)
        assert info_real["source"] == "real" and info_syn["source"] == "synthetic"
        # the same grammar: malformed actions get the same report, valid ones are accepted by both
        for bad in ("clik [4]", 'type [4] "unterminated', "click 4"):
            out_real, out_syn = real.step(bad), synthetic.step(bad)
            assert out_real[4]["valid_action"] is False and out_syn[4]["valid_action"] is False
            assert out_real[4]["last_action_error"] == out_syn[4]["last_action_error"]
            assert out_real[1] == out_syn[1] == 0.0
            assert set(out_real[4]) - REAL_ONLY_KEYS == set(out_syn[4])
        action = info_real["admissible_actions"][0]
        _, _, _, _, step_real = real.step(action)
        _, _, _, _, step_syn = synthetic.step(action)
        assert step_real["last_action_error"] == "" and step_syn["last_action_error"] == ""
        assert set(step_real) - REAL_ONLY_KEYS == set(step_syn)
    finally:
        real.close()
