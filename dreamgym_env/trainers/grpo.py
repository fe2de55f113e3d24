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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dreamgym_env.trainers.common import MetricLogger, evaluate, make_envs, run_episodes
from dreamgym_env.trainers.policy import TextActionPolicy

logger = logging.getLogger(__name__)


@dataclass
class GRPOConfig:
    env_id: str = field(default="DreamGym-MiniWoB-v0", metadata={"help": "Env to train on (synthetic or real)."})
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "gym.make arguments (backend, buffer...)."})
    task_ids: list[str] = field(default_factory=list, metadata={"help": "Train on these tasks (default: all of the domain)."})
    iterations: int = field(default=50, metadata={"help": "Policy updates."})
    groups: int = field(default=4, metadata={"help": "Tasks per iteration."})
    num_generations: int = field(default=4, metadata={"help": "Episodes per task (a group), same start."})
    max_steps: int = field(default=6, metadata={"help": "Step limit of an episode."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate."})
    update_epochs: int = field(default=2, metadata={"help": "Passes over an iteration's steps."})
    clip_coef: float = field(default=0.2, metadata={"help": "PPO-style ratio clipping."})
    kl_coef: float = field(default=0.0, metadata={"help": "KL penalty to the initial policy (0: off)."})
    curriculum: bool = field(default=True, metadata={"help": "Variance-based task sampling and generation."})
    generated_share: float = field(default=0.25, metadata={"help": "λ: most share of generated tasks."})
    eval_env_id: str | None = field(default=None, metadata={"help": "Env to measure greedy success on (e.g. the real twin)."})
    eval_every: int = field(default=10, metadata={"help": "Iterations between evaluations."})
    eval_episodes: int = field(default=20, metadata={"help": "Episodes per evaluation."})
    eval_seed: int = field(default=100_000, metadata={"help": "First seed of evaluation episodes (held out from training)."})
    output_dir: str = field(default="runs/grpo", metadata={"help": "Checkpoints and metrics.csv."})
    seed: int = field(default=0, metadata={"help": "Seed of tasks, starts and sampling."})

    def __post_init__(self) -> None:
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
    policy = TextActionPolicy()
    reference = copy.deepcopy(policy).eval() if cfg.kl_coef > 0 else None
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, start = out / "checkpoint.pt", 0
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        policy.load_state_dict(saved["policy"]); optimizer.load_state_dict(saved["optimizer"]); start = saved["iteration"]
        logger.info("resumed at iteration %d", start)
    metrics_log = MetricLogger(cfg.output_dir)
    evaluations: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    env_steps = 0

    for iteration in tqdm(range(start, cfg.iterations), desc="grpo", initial=start, total=cfg.iterations):
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
            choice = torch.tensor([e.choices[t] for e, t, _ in steps])
            old_logp = torch.tensor([e.logprobs[t] for e, t, _ in steps])
            adv = torch.tensor([a for _, _, a in steps], dtype=torch.float32)
            for _ in range(cfg.update_epochs):
                logits, _ = policy(obs, acts)
                logp = torch.distributions.Categorical(logits=logits).log_prob(choice)
                ratio = (logp - old_logp).exp()
                loss = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef) * adv).mean()
                if reference is not None:
                    with torch.no_grad():
                        ref_logits, _ = reference(obs, acts)
                    ref_logp = torch.distributions.Categorical(logits=ref_logits).log_prob(choice)
                    loss = loss + cfg.kl_coef * ((ref_logp - logp).exp() - (ref_logp - logp) - 1).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                optimizer.step()
                losses.append(float(loss))
        if cfg.curriculum:
            sampler.update(rng)
        # -- log, evaluate, checkpoint -----------------------------------------------------------
        metrics = {"charts/episodic_return": float(returns.mean()), "charts/success_rate": float((returns > 0).mean()),
                   "losses/policy_loss": float(np.mean(losses)) if losses else 0.0, "charts/env_steps": env_steps,
                   "perf/sps": len(steps) / (time.perf_counter() - began), **sampler.stats()}
        if cfg.eval_env_id and ((iteration + 1) % cfg.eval_every == 0 or iteration + 1 == cfg.iterations):
            result = evaluate(policy, cfg.eval_env_id, cfg.eval_episodes, cfg.eval_seed, cfg.max_steps,
                              task_ids=[t.task_id for t in tasks])
            metrics.update({f"eval/{k}": v for k, v in result.items()})
            evaluations.append({"iteration": iteration + 1, "env_steps": env_steps, **result})
        metrics_log.log(iteration + 1, metrics)
        torch.save({"policy": policy.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration + 1}, ckpt)
    for env in envs:
        env.close()
    torch.save(policy.state_dict(), out / "policy.pt")
    return {"metrics": metrics, "evaluations": evaluations, "env_steps": env_steps}

