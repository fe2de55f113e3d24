"""Stable-Baselines3 trains unchanged on DreamGym: MaskablePPO (sb3-contrib) on the synthetic
MiniWoB env, then on the real one (sim-to-real), evaluated on real MiniWoB.

    python examples/sb3_maskable_ppo.py --task click-button --sim-steps 2048 --real-steps 256

The synthetic phase runs the embedded MiniWoB experience model in process (or ``--backend
http://127.0.0.1:8000/v1`` for ``dreamgym serve``); the real phase needs Chromium (see README).
Prints a JSON summary: real success before training, after the synthetic phase, after the real one.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

import dreamgym_env  # noqa: F401 - registers the env ids
from dreamgym_env.wrappers import make_sb3_env

logger = logging.getLogger("sb3_maskable_ppo")


def real_success(model, task: str, episodes: int, seed: int, max_actions: int) -> float:
    """Success rate of ``model`` (greedy, masked) on real MiniWoB episodes of ``task``."""
    from sb3_contrib.common.maskable.utils import get_action_masks

    env = make_sb3_env("DreamGym-MiniWoB-Real-v0", max_actions=max_actions, task_id=task)
    wins = 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, action_masks=get_action_masks(env), deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        wins += total > 0
    env.close()
    return wins / episodes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="click-button", help="MiniWoB task family")
    parser.add_argument("--sim-steps", type=int, default=2048, help="synthetic env steps")
    parser.add_argument("--real-steps", type=int, default=256, help="real env steps after the synthetic phase")
    parser.add_argument("--n-steps", type=int, default=128, help="PPO rollout length")
    parser.add_argument("--max-actions", type=int, default=16)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=100_000, help="first seed of the real evaluation episodes")
    parser.add_argument("--backend", default=None, help="experience model backend (default: embedded)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from sb3_contrib import MaskablePPO

    kwargs = {"backend": args.backend} if args.backend else {}
    sim = make_sb3_env("DreamGym-MiniWoB-v0", max_actions=args.max_actions, task_id=args.task, **kwargs)
    sim.reset(seed=args.seed)
    model = MaskablePPO("MlpPolicy", sim, n_steps=args.n_steps, batch_size=min(64, args.n_steps),
                        seed=args.seed, verbose=0)
    summary: dict = {"task": args.task, "sim_steps": args.sim_steps, "real_steps": args.real_steps}
    summary["real_success_untrained"] = real_success(model, args.task, args.eval_episodes, args.eval_seed, args.max_actions)
    weights = np.concatenate([p.detach().flatten().numpy() for p in model.policy.parameters()])
    if args.sim_steps:
        model.learn(args.sim_steps)
        summary["real_success_after_sim"] = real_success(model, args.task, args.eval_episodes, args.eval_seed, args.max_actions)
    sim.close()
    if args.real_steps:
        real = make_sb3_env("DreamGym-MiniWoB-Real-v0", max_actions=args.max_actions, task_id=args.task)
        model.set_env(real)
        model.learn(args.real_steps, reset_num_timesteps=False)
        real.close()
        summary["real_success_after_real"] = real_success(model, args.task, args.eval_episodes, args.eval_seed, args.max_actions)
    after = np.concatenate([p.detach().flatten().numpy() for p in model.policy.parameters()])
    summary["parameters_changed"] = int((after != weights).sum())
    summary["timesteps"] = int(model.num_timesteps)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
