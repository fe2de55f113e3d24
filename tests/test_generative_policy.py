"""Generation mode: a causal LM writes the action; its sampled log-probabilities match the
teacher-forced ones the update uses, and PPO moves it towards rewarded text on an env without
admissible actions."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from dreamgym_env.trainers.generative import GenerativeTextPolicy
from tests.helpers.tiny_model import build_tiny_llama


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return str(build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", hidden_size=64, num_layers=1))


PROMPT = "Goal: click the second button.\nState:\n[1] button\n[2] button\n[3] button"
CANDIDATES = ["click [1]", "click [2]", "click [3]"]


class SecondButtonEnv(gym.Env):
    """Text observations, no admissible actions: reward 1 for exactly "click [2]"."""

    observation_space = gym.spaces.Text(256)
    action_space = gym.spaces.Text(256)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return PROMPT, {}

    def step(self, action):
        return "done", float(action == "click [2]"), True, False, {}


@pytest.fixture(scope="module")
def warm_lm(tiny_lm, tmp_path_factory):
    """The tiny LM taught (SFT) to write each of the three clicks about equally often: the
    random-weight model spreads its mass over 49k tokens, with nothing for RL to shift."""
    policy = GenerativeTextPolicy(tiny_lm, max_new_tokens=6)
    eos = policy.tokenizer.eos_token_id
    targets = [tuple(policy.tokenizer.encode(c, add_special_tokens=False) + [eos]) for c in CANDIDATES]
    # lr 1e-2 oscillated (whole-sequence probabilities 0.001-0.08 after 100 steps, CPU-dependent);
    # 3e-3 for 150 steps converges smoothly to ~0.31 each on AVX2 and AVX-512 CPUs alike
    optimizer = torch.optim.Adam(policy.lm.parameters(), lr=3e-3)
    for _ in range(150):
        logp, _, _ = policy.evaluate_actions([PROMPT] * 3, None, targets)
        optimizer.zero_grad()
        (-logp.mean()).backward()
        optimizer.step()
    probabilities = logp.detach().exp()
    assert bool((probabilities > 0.2).all()), f"warm-up did not converge: {probabilities.tolist()}"
    out = tmp_path_factory.mktemp("models") / "warm-lm"
    policy.lm.save_pretrained(out)
    policy.tokenizer.save_pretrained(out)
    return str(out)


def test_sampled_logprobs_match_teacher_forced(tiny_lm):
    policy = GenerativeTextPolicy(tiny_lm, action_help="click [ref]", max_new_tokens=5)
    observations = ["Goal: click OK.\nState:\n[1] button \"OK\"", "short", "Goal: a longer page\n" + "[2] text\n" * 20]
    texts, choices, logp, values = policy.act(observations, None, torch.Generator().manual_seed(0))
    assert len(texts) == 3 and all("\n" not in t for t in texts) and values.shape == (3,)
    assert all(1 <= len(c) <= 5 for c in choices)
    again, entropy, values_again = policy.evaluate_actions(observations, None, choices)
    assert torch.allclose(logp, again, atol=1e-4), (logp, again)
    assert torch.allclose(values, values_again, atol=1e-5)
    assert bool((entropy > 0).all())
    greedy_a = policy.act(observations, None, torch.Generator().manual_seed(1), greedy=True)[0]
    greedy_b = policy.act(observations, None, torch.Generator().manual_seed(2), greedy=True)[0]
    assert greedy_a == greedy_b


def _sampled_success(policy, n: int = 64) -> float:
    texts, _, _, _ = policy.act([PROMPT] * n, None, torch.Generator().manual_seed(123))
    return float(np.mean([t == "click [2]" for t in texts]))


def test_ppo_generation_mode_learns_on_an_env_without_admissible_actions(warm_lm, tmp_path):
    from dreamgym_env.trainers.ppo import PPOConfig, train

    gym.register("SecondButton-v0", entry_point=SecondButtonEnv)
    try:
        before_policy = GenerativeTextPolicy(warm_lm, max_new_tokens=6)
        before = _sampled_success(before_policy)
        assert set(CANDIDATES) <= set(before_policy.act([PROMPT] * 32, None, torch.Generator().manual_seed(0))[0])
        cfg = PPOConfig(env_id="SecondButton-v0", policy="generate", policy_model=warm_lm, max_new_tokens=6,
                        num_envs=16, iterations=12, max_steps=1, learning_rate=1e-3, minibatch_size=16,
                        output_dir=str(tmp_path), seed=0)
        train(cfg)
    finally:
        gym.registry.pop("SecondButton-v0", None)
    policy = GenerativeTextPolicy(warm_lm, max_new_tokens=6)
    policy.load_state_dict(torch.load(tmp_path / "policy.pt"))
    after = _sampled_success(policy)
    assert before < 0.6 and after >= 0.9, (before, after)


def test_scoring_policy_refuses_an_env_without_admissible_actions(tmp_path):
    from dreamgym_env.trainers.ppo import PPOConfig, train

    gym.register("SecondButton-v0", entry_point=SecondButtonEnv)
    try:
        with pytest.raises(ValueError, match="--policy generate"):
            train(PPOConfig(env_id="SecondButton-v0", num_envs=2, iterations=1, max_steps=1, output_dir=str(tmp_path)))
    finally:
        gym.registry.pop("SecondButton-v0", None)
    with pytest.raises(ValueError, match="policy must be"):
        PPOConfig(policy="llm")


def test_grpo_generation_mode_runs_on_synthetic_miniwob(tiny_lm, tmp_path):
    from dreamgym_env.backends.scripted import ScriptedBackend
    from dreamgym_env.trainers.grpo import GRPOConfig, train

    def respond(request):
        if request.metadata.get("kind") == "initial_state":
            return json.dumps({"state": '[1] button "OK"'})
        return json.dumps({"reasoning": "", "patch": [], "reward": 1, "done": True, "valid_action": True})

    cfg = GRPOConfig(env_kwargs={"backend": ScriptedBackend(respond), "buffer": False}, task_ids=["click-button"],
                     policy="generate", policy_model=tiny_lm, max_new_tokens=4, iterations=2, groups=1,
                     num_generations=2, max_steps=2, curriculum=False, kl_coef=0.1, output_dir=str(tmp_path))
    result = train(cfg)
    assert result["env_steps"] >= 2 and (tmp_path / "policy.pt").is_file()
