"""Bundled trainers learn: on a scripted env where one button wins, GRPO turns a random
policy (~1/3 success) into one that always clicks it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreamgym_env.backends.scripted import ScriptedBackend
from dreamgym_env.trainers.common import evaluate
from dreamgym_env.trainers.grpo import GRPOConfig, group_advantages, train

PAGE = '[1] button "Alpha"\n[2] button "Beta"\n[3] button "Gamma"'


def _one_button_wins(winner: str):
    """Initial state: three buttons; clicking ``winner`` wins (reward 1), any other click loses."""

    def respond(request):
        if request.metadata.get("kind") == "initial_state":
            return json.dumps({"state": PAGE})
        win = request.metadata.get("action") == winner
        return json.dumps({"reasoning": "", "patch": [], "reward": int(win), "done": True, "valid_action": True})

    return respond


def _winner_the_untrained_policy_misses() -> str:
    """A button the policy that train() initialises (seed 0) does not click greedily."""
    import gymnasium as gym

    from dreamgym_env.trainers.policy import TextActionPolicy

    probe = gym.make("DreamGym-MiniWoB-v0", backend=ScriptedBackend(_one_button_wins("")), buffer=False)
    obs, info = probe.reset(seed=0, options={"task_id": "click-button"})
    torch.manual_seed(0)
    with torch.no_grad():
        logits, _ = TextActionPolicy()([obs], [info["admissible_actions"]])
    first_choice = info["admissible_actions"][int(logits.argmax())]
    return next(a for a in info["admissible_actions"] if a != first_choice)


def test_group_advantages_normalise_within_groups():
    adv = group_advantages(np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    assert np.allclose(adv[0], [1, -1, -1, 1]) and np.allclose(adv[1], 0)
    with pytest.raises(ValueError, match="num_generations"):
        GRPOConfig(num_generations=1)


def test_grpo_learns_the_winning_action(tmp_path):
    from dreamgym_env.trainers.policy import TextActionPolicy

    winner = _winner_the_untrained_policy_misses()
    backend = ScriptedBackend(_one_button_wins(winner))
    kwargs = {"backend": backend, "buffer": False}
    cfg = GRPOConfig(env_kwargs=kwargs, task_ids=["click-button"], iterations=25, groups=2, num_generations=4,
                     max_steps=2, learning_rate=2e-3, curriculum=False, output_dir=str(tmp_path), seed=0)
    torch.manual_seed(cfg.seed)
    before = evaluate(TextActionPolicy(), "DreamGym-MiniWoB-v0", 12, 0, 2, kwargs, task_ids=["click-button"])
    result = train(cfg)
    policy = TextActionPolicy()
    policy.load_state_dict(torch.load(tmp_path / "policy.pt"))
    after = evaluate(policy, "DreamGym-MiniWoB-v0", 12, 0, 2, kwargs, task_ids=["click-button"])
    assert before["success_rate"] < 0.9
    assert after["success_rate"] == 1.0
    assert max(backend.calls) > 1  # steps of a batch went to the model together
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 26 and "charts/episodic_return" in rows[0]
    assert result["env_steps"] > 0


def test_grpo_with_curriculum_generates_and_logs_tasks(tmp_path):
    def respond(request):
        if request.metadata.get("kind") == "task_generation":
            return json.dumps({"goal": f"Click on the button {request.seed % 1000}."})
        return _one_button_wins("click [2]")(request)

    cfg = GRPOConfig(env_kwargs={"backend": ScriptedBackend(respond), "buffer": False}, task_ids=["click-button", "click-test"],
                     iterations=4, groups=2, num_generations=4, max_steps=2, curriculum=True, generated_share=0.5, kl_coef=0.1,
                     output_dir=str(tmp_path), seed=1)
    result = train(cfg)
    assert result["metrics"]["curriculum/generated_tasks"] > 0  # groups with a spread seeded the generator
    assert "curriculum/variance_hist" not in (tmp_path / "metrics.csv").read_text().splitlines()[0]  # lists not in CSV
    assert "curriculum/mean_variance" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_ppo_learns_the_winning_action(tmp_path):
    from dreamgym_env.trainers.ppo import PPOConfig, gae
    from dreamgym_env.trainers.ppo import train as train_ppo

    adv, ret = gae([0.0, 1.0], [0.5, 0.5], True, 1.0, 1.0)
    assert np.allclose(adv, [0.5, 0.5]) and np.allclose(ret, [1.0, 1.0])
    backend = ScriptedBackend(_one_button_wins(_winner_the_untrained_policy_misses()))
    kwargs = {"backend": backend, "buffer": False}
    from dreamgym_env.trainers.policy import TextActionPolicy

    torch.manual_seed(0)
    assert evaluate(TextActionPolicy(), "DreamGym-MiniWoB-v0", 8, 0, 2, kwargs, task_ids=["click-button"])["success_rate"] == 0.0
    cfg = PPOConfig(env_kwargs=kwargs, task_ids=["click-button"], iterations=25, num_envs=8, max_steps=2,
                    learning_rate=1e-3, minibatch_size=8, output_dir=str(tmp_path), seed=0)
    train_ppo(cfg)
    policy = TextActionPolicy()
    policy.load_state_dict(torch.load(tmp_path / "policy.pt"))
    assert evaluate(policy, "DreamGym-MiniWoB-v0", 8, 0, 2, kwargs, task_ids=["click-button"])["success_rate"] == 1.0
    assert "losses/value_loss" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_train_cli_builds_the_config_of_the_chosen_algorithm(tmp_path, capsys):
    from dreamgym_env.cli import build_parser

    args = build_parser().parse_args(["train", "--algo", "ppo", "--num-envs", "3", "--iterations", "2",
                                      "--no-curriculum", "--env-kwargs", '{"buffer": false}'])
    assert (args.algo, args.num_envs, args.iterations, args.env_kwargs) == ("ppo", 3, 2, {"buffer": False})
    args = build_parser().parse_args(["train", "--algo", "grpo", "--num-generations", "2"])
    assert args.num_generations == 2 and args.curriculum is True


def test_ppo_stops_at_the_env_step_budget_and_resumes_from_it(tmp_path):
    from dreamgym_env.trainers.ppo import PPOConfig
    from dreamgym_env.trainers.ppo import train as train_ppo

    kwargs = {"backend": ScriptedBackend(_one_button_wins("click [2]")), "buffer": False}
    cfg = PPOConfig(env_kwargs=kwargs, task_ids=["click-button"], iterations=50, num_envs=4, max_steps=1,
                    max_env_steps=10, output_dir=str(tmp_path / "a"), seed=0)
    first = train_ppo(cfg)
    assert first["env_steps"] == 12  # three iterations of 4 one-step episodes: the one that crosses 10 is the last
    assert len((tmp_path / "a" / "metrics.csv").read_text().splitlines()) == 4
    assert train_ppo(cfg)["env_steps"] == 12  # a rerun resumes with the budget already spent
    warm = PPOConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / "b"), "init_from": str(tmp_path / "a" / "policy.pt"),
                        "iterations": 1, "max_env_steps": 0})
    from dreamgym_env.trainers.common import initial_weights, make_policy

    policy = make_policy(warm, None)
    initial_weights(warm, policy)
    saved = torch.load(tmp_path / "a" / "policy.pt")
    assert all(torch.equal(v, saved[k]) for k, v in policy.state_dict().items())
    with pytest.raises(FileNotFoundError, match="init_from"):
        initial_weights(PPOConfig(init_from=str(tmp_path / "missing.pt")), policy)
