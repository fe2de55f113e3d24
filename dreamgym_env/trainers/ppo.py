"""PPO with GAE and a value head for text policies over admissible actions, CleanRL-style.

Each iteration runs one episode in each of ``num_envs`` envs (synthetic envs step as one
batched model call), computes GAE advantages per episode, and takes clipped policy and value
steps over shuffled minibatches, with an entropy bonus and an optional KL to the initial policy.

    dreamgym train --algo ppo --env DreamGym-MiniWoB-v0 --task-ids click-button --iterations 50
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from dreamgym_env.trainers.common import (Checkpointer, MetricLogger, TrainerConfig, kl_to_reference, make_envs,
                                           initial_weights, make_policy, maybe_evaluate, out_of_budget, progress_bar, advance,
                                           run_episodes)

logger = logging.getLogger(__name__)


@dataclass
class PPOConfig(TrainerConfig):
    num_envs: int = field(default=8, metadata={"help": "Episodes per iteration, stepped together."})
    gamma: float = field(default=0.99, metadata={"help": "Discount."})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE λ."})
    update_epochs: int = field(default=4, metadata={"help": "Passes over an iteration's steps."})
    minibatch_size: int = field(default=32, metadata={"help": "Steps per gradient step."})
    clip_coef: float = field(default=0.2, metadata={"help": "Ratio clipping."})
    vf_coef: float = field(default=0.5, metadata={"help": "Value loss weight."})
    ent_coef: float = field(default=0.01, metadata={"help": "Entropy bonus weight."})
    output_dir: str = field(default="runs/ppo", metadata={"help": "Checkpoints and metrics.csv."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_envs < 1 or self.iterations < 1 or self.minibatch_size < 1:
            raise ValueError("num_envs, iterations and minibatch_size must be >= 1")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError("gamma and gae_lambda must be in [0, 1]")


def gae(rewards: list[float], values: list[float], terminated: bool, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) of one episode. A terminated episode bootstraps 0; a truncated one
    bootstraps its last value estimate (the value of the state it was cut at is not computed)."""
    n = len(rewards)
    adv = np.zeros(n)
    last = 0.0
    next_value = 0.0 if terminated else (values[-1] if values else 0.0)
    for t in reversed(range(n)):
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
        next_value = values[t]
    return adv, adv + np.asarray(values)


def train(cfg: PPOConfig) -> dict[str, Any]:
    """Train; returns the last metrics (and the evaluations)."""
    # -- setup ---------------------------------------------------------------------------------
    logger.info("ppo config: %s", json.dumps(asdict(cfg), default=str))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    envs = make_envs(cfg.env_id, cfg.num_envs, cfg.env_kwargs)
    domain = getattr(envs[0], "domain", None)
    task_ids = list(cfg.task_ids) or ([t.task_id for t in domain.tasks] if domain is not None else [])
    policy = make_policy(cfg, envs[0])
    initial_weights(cfg, policy)
    reference = copy.deepcopy(policy).eval() if cfg.kl_coef > 0 else None
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    checkpoints = Checkpointer(cfg.output_dir)
    start, env_steps = checkpoints.resume(policy, optimizer)
    metrics_log = MetricLogger(cfg.output_dir)
    evaluations: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}

    bar = progress_bar(cfg, "ppo", start, env_steps)
    for iteration in range(start, cfg.iterations):
        if out_of_budget(cfg, env_steps):
            logger.info("max_env_steps %d spent (%d steps) after iteration %d", cfg.max_env_steps, env_steps, iteration)
            break
        began = time.perf_counter()
        # -- rollouts: one episode per env ---------------------------------------------------
        resets = [{"seed": int(rng.integers(2**31)),
                   **({"options": {"task_id": task_ids[int(rng.integers(len(task_ids)))]}} if task_ids else {})}
                  for _ in envs]
        policy.eval()
        episodes = run_episodes(policy, envs, resets, cfg.max_steps, gen)
        policy.train()
        # -- advantages: GAE per episode -------------------------------------------------------
        obs, acts, choice, old_logp, advs, rets = [], [], [], [], [], []
        for e in episodes:
            a, r = gae(e.rewards, e.values, e.terminated, cfg.gamma, cfg.gae_lambda)
            obs += e.observations; acts += e.actions; choice += e.choices; old_logp += e.logprobs
            advs += a.tolist(); rets += r.tolist()
        n = len(obs)
        env_steps += n
        old_logp_t = torch.tensor(old_logp)
        adv_t, ret_t = torch.tensor(advs, dtype=torch.float32), torch.tensor(rets, dtype=torch.float32)
        # -- update: clipped policy loss, value loss, entropy bonus ---------------------------
        losses = {"policy": [], "value": [], "entropy": []}
        for _ in range(cfg.update_epochs):
            for mb in np.array_split(rng.permutation(n), max(1, n // cfg.minibatch_size)):
                idx = torch.as_tensor(mb)
                mb_obs, mb_acts, mb_choice = [obs[i] for i in mb], [acts[i] for i in mb], [choice[i] for i in mb]
                logp, entropy, values = policy.evaluate_actions(mb_obs, mb_acts, mb_choice)
                ratio = (logp - old_logp_t[idx]).exp()
                a = adv_t[idx]
                a = (a - a.mean()) / (a.std() + 1e-8) if len(mb) > 1 else a
                pg_loss = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef) * a).mean()
                v_loss = 0.5 * ((values - ret_t[idx]) ** 2).mean()
                entropy = entropy.mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                if reference is not None:
                    loss = loss + cfg.kl_coef * kl_to_reference(reference, mb_obs, mb_acts, mb_choice, logp)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
                optimizer.step()
                losses["policy"].append(pg_loss.item()); losses["value"].append(v_loss.item())
                losses["entropy"].append(entropy.item())
        # -- log, evaluate, checkpoint -----------------------------------------------------------
        returns = np.array([e.ret for e in episodes])
        metrics = {"charts/episodic_return": float(returns.mean()), "charts/success_rate": float((returns > 0).mean()),
                   "losses/policy_loss": float(np.mean(losses["policy"])), "losses/value_loss": float(np.mean(losses["value"])),
                   "losses/entropy": float(np.mean(losses["entropy"])), "charts/env_steps": env_steps,
                   "perf/sps": n / (time.perf_counter() - began)}
        maybe_evaluate(cfg, policy, iteration, env_steps, task_ids, metrics, evaluations)
        metrics_log.log(iteration + 1, metrics)
        checkpoints.save(policy, optimizer, iteration + 1, env_steps)
        advance(bar, cfg, n)
    bar.close()
    for env in envs:
        env.close()
    checkpoints.finish(policy)
    return {"metrics": metrics, "evaluations": evaluations, "env_steps": env_steps}
