"""GRPO for text policies over admissible actions, CleanRL-style: one file, read top to bottom.

Each iteration samples tasks (through the curriculum when on), runs a group of G episodes per
task from the same start (same seed), normalises the returns within each group into
advantages, and takes clipped policy-gradient steps, with an optional KL penalty to the initial
policy. Works on any Gymnasium env with text observations and ``info["admissible_actions"]``,
synthetic (one batched model call per step for all episodes) or real.

    dreamgym train --algo grpo --env DreamGym-MiniWoB-v0 --task-ids click-button --iterations 50
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
class GRPOConfig(TrainerConfig):
    groups: int = field(default=4, metadata={"help": "Tasks per iteration."})
    num_generations: int = field(default=4, metadata={"help": "Episodes per task (a group), same start."})
    update_epochs: int = field(default=2, metadata={"help": "Passes over an iteration's steps."})
    clip_coef: float = field(default=0.2, metadata={"help": "PPO-style ratio clipping."})
    curriculum: bool = field(default=True, metadata={"help": "Variance-based task sampling and generation."})
    generated_share: float = field(default=0.25, metadata={"help": "λ: most share of generated tasks."})
    output_dir: str = field(default="runs/grpo", metadata={"help": "Checkpoints and metrics.csv."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError(f"num_generations ({self.num_generations}) must be >= 2: a group needs a spread.")
        if self.groups < 1 or self.iterations < 1:
            raise ValueError("groups and iterations must be >= 1")


def group_advantages(returns: np.ndarray) -> np.ndarray:
    """(R - mean) / std within each row (a group); 0 where a group has no spread."""
    mean = returns.mean(axis=1, keepdims=True)
    std = returns.std(axis=1, keepdims=True)
    return np.where(std > 0, (returns - mean) / np.maximum(std, 1e-8), 0.0)


def train(cfg: GRPOConfig) -> dict[str, Any]:
    """Train; returns the last metrics (and the evaluations)."""
    # -- setup ---------------------------------------------------------------------------------
    from dreamgym_env.curriculum import CurriculumConfig, CurriculumSampler, TaskGenerator, runnable_in

    logger.info("grpo config: %s", json.dumps(asdict(cfg), default=str))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    envs = make_envs(cfg.env_id, cfg.groups * cfg.num_generations, cfg.env_kwargs)
    domain = getattr(envs[0], "domain", None)
    if domain is None:
        raise ValueError(f"{cfg.env_id} has no domain: GRPO needs a DreamGym env (synthetic or real twin)")
    tasks = [domain.get_task(t) for t in cfg.task_ids] if cfg.task_ids else list(domain.tasks)
    generator = None
    if cfg.curriculum and hasattr(envs[0], "backend"):
        generator = TaskGenerator(envs[0].backend, domain, buffer=getattr(envs[0], "buffer", None))
    sampler = CurriculumSampler(
        tasks, generator=generator, validate=runnable_in(envs[0]) if generator else None,
        config=CurriculumConfig(window=cfg.num_generations, generated_share=cfg.generated_share if cfg.curriculum else 0.0),
    )
    policy = make_policy(cfg, envs[0])
    initial_weights(cfg, policy)
    reference = copy.deepcopy(policy).eval() if cfg.kl_coef > 0 else None
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    checkpoints = Checkpointer(cfg.output_dir)
    start, env_steps = checkpoints.resume(policy, optimizer)
    metrics_log = MetricLogger(cfg.output_dir)
    evaluations: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}

    bar = progress_bar(cfg, "grpo", start, env_steps)
    for iteration in range(start, cfg.iterations):
        if out_of_budget(cfg, env_steps):
            logger.info("max_env_steps %d spent (%d steps) after iteration %d", cfg.max_env_steps, env_steps, iteration)
            break
        began = time.perf_counter()
        # -- rollouts: G episodes per task, from the same start ------------------------------
        picked = sampler.sample(cfg.groups, rng) if cfg.curriculum else [tasks[i] for i in rng.integers(len(tasks), size=cfg.groups)]
        resets = []
        for task in picked:
            seed = int(rng.integers(2**31))
            option = {"task": task} if task.metadata.get("generated") else {"task_id": task.task_id}
            resets += [{"seed": seed, "options": option}] * cfg.num_generations
        policy.eval()
        episodes = run_episodes(policy, envs, resets, cfg.max_steps, gen)
        policy.train()
        returns = np.array([e.ret for e in episodes]).reshape(cfg.groups, cfg.num_generations)
        for task, group in zip(picked, returns):
            for r in group:
                sampler.record(task.task_id, float(r))
        # -- advantages: group-normalised returns, one per episode, on every step --------------
        advantages = group_advantages(returns).reshape(-1)
        steps = [(e, t, a) for e, a in zip(episodes, advantages) for t in range(len(e.choices))]
        env_steps += len(steps)
        # -- update ---------------------------------------------------------------------------
        losses = []
        if steps and np.any(advantages != 0):
            obs = [e.observations[t] for e, t, _ in steps]
            acts = [e.actions[t] for e, t, _ in steps]
            choice = [e.choices[t] for e, t, _ in steps]
            old_logp = torch.tensor([e.logprobs[t] for e, t, _ in steps])
            adv = torch.tensor([a for _, _, a in steps], dtype=torch.float32)
            for _ in range(cfg.update_epochs):
                logp, _, _ = policy.evaluate_actions(obs, acts, choice)
                ratio = (logp - old_logp).exp()
                loss = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef) * adv).mean()
                if reference is not None:
                    loss = loss + cfg.kl_coef * kl_to_reference(reference, obs, acts, choice, logp)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                optimizer.step()
                losses.append(loss.item())
        if cfg.curriculum:
            sampler.update(rng)
        # -- log, evaluate, checkpoint -----------------------------------------------------------
        metrics = {"charts/episodic_return": float(returns.mean()), "charts/success_rate": float((returns > 0).mean()),
                   "losses/policy_loss": float(np.mean(losses)) if losses else 0.0, "charts/env_steps": env_steps,
                   "perf/sps": len(steps) / (time.perf_counter() - began), **sampler.stats()}
        maybe_evaluate(cfg, policy, iteration, env_steps, [t.task_id for t in tasks], metrics, evaluations)
        metrics_log.log(iteration + 1, metrics)
        checkpoints.save(policy, optimizer, iteration + 1, env_steps)
        advance(bar, cfg, len(steps))
    bar.close()
    for env in envs:
        env.close()
    checkpoints.finish(policy)
    return {"metrics": metrics, "evaluations": evaluations, "env_steps": env_steps}

