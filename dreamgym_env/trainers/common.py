"""What PPO and GRPO share: making envs, stepping many at once (one batched model call for
synthetic envs), running episodes with a policy, evaluating success, logging."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch

logger = logging.getLogger(__name__)


def make_envs(env_id: str, n: int, env_kwargs: Mapping[str, Any] | None = None) -> list[gym.Env]:
    """``n`` envs of ``env_id``, unwrapped (the trainers apply the step limit). Synthetic
    DreamGym envs share one backend and buffer, so :func:`step_many` batches their model calls."""
    import dreamgym_env  # noqa: F401 - registers the ids

    envs = [gym.make(env_id, **dict(env_kwargs or {})) for _ in range(n)]
    return [e.unwrapped for e in envs]


def step_many(envs: Sequence[gym.Env], actions: Sequence[str]) -> list[tuple]:
    """Step each env with its action; DreamGymEnvs go to the experience model as ONE batch."""
    from dreamgym_env.env import DreamGymEnv, run_plans

    if envs and all(isinstance(e, DreamGymEnv) for e in envs) and len({id(e.backend) for e in envs}) == 1:
        plans = [e.plan_step(a) for e, a in zip(envs, actions)]
        run_plans(envs[0].backend, list(envs), plans)
        return [p.outcome for p in plans]
    return [e.step(a) for e, a in zip(envs, actions)]


@dataclass
class Episode:
    """One rollout: per step the observation, the admissible actions, the choice and its
    log-probability and value under the policy that acted, and the reward."""

    task_id: str
    observations: list[str] = field(default_factory=list)
    actions: list[list[str]] = field(default_factory=list)
    choices: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: bool = False

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))


@torch.no_grad()
def run_episodes(policy, envs: Sequence[gym.Env], resets: Sequence[Mapping[str, Any]], max_steps: int,
                 rng: torch.Generator, greedy: bool = False) -> list[Episode]:
    """One episode per env (``resets[i]``: ``reset`` keyword arguments), all stepped together."""
    episodes, obs, infos = [], [], []
    for env, kwargs in zip(envs, resets):
        o, info = env.reset(**kwargs)
        obs.append(o)
        infos.append(info)
        episodes.append(Episode(task_id=str(info.get("task_id", ""))))
    live = list(range(len(envs)))
    for _ in range(max_steps):
        if not live:
            break
        action_lists = [list(infos[i].get("admissible_actions") or ["noop"]) for i in live]
        logits, values = policy([obs[i] for i in live], action_lists)
        dist = torch.distributions.Categorical(logits=logits)
        picks = logits.argmax(-1) if greedy else torch.multinomial(dist.probs, 1, generator=rng).squeeze(-1)
        logps = dist.log_prob(picks)
        outcomes = step_many([envs[i] for i in live], [a[int(k)] for a, k in zip(action_lists, picks)])
        still = []
        for j, i in enumerate(live):
            ep = episodes[i]
            ep.observations.append(obs[i]); ep.actions.append(action_lists[j]); ep.choices.append(int(picks[j]))
            ep.logprobs.append(float(logps[j])); ep.values.append(float(values[j]))
            o, r, terminated, truncated, info = outcomes[j]
            ep.rewards.append(float(r))
            obs[i], infos[i] = o, info
            if terminated:
                ep.terminated = True
            elif not truncated:
                still.append(i)
        live = still
    return episodes


def evaluate(policy, env_id: str, episodes: int, seed: int, max_steps: int, env_kwargs: Mapping[str, Any] | None = None,
             batch: int = 8, task_ids: Sequence[str] | None = None) -> dict[str, float]:
    """Greedy success rate (return > 0) on ``episodes`` episodes with seeds ``seed, seed+1, ...``."""
    envs = make_envs(env_id, min(batch, episodes), env_kwargs)
    rng = torch.Generator().manual_seed(seed)
    returns: list[float] = []
    for start in range(0, episodes, len(envs)):
        n = min(len(envs), episodes - start)
        resets = [{"seed": seed + start + i, **({"options": {"task_id": task_ids[(start + i) % len(task_ids)]}} if task_ids else {})}
                  for i in range(n)]
        returns += [e.ret for e in run_episodes(policy, envs[:n], resets, max_steps, rng, greedy=True)]
    for env in envs:
        env.close()
    return {"success_rate": float(np.mean([r > 0 for r in returns])), "mean_return": float(np.mean(returns))}


class MetricLogger:
    """CSV always (``output_dir/metrics.csv``), TensorBoard when installed."""

    def __init__(self, output_dir: str):
        self.path = Path(output_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(output_dir) / "tb"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            self.tb = None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        self.rows.append(row)
        keys = sorted({k for r in self.rows for k in r})
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, step)
