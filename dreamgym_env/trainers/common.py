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
    """One rollout: per step the observation, the admissible actions, the choice (an index into
    them, or the generated token ids) and its log-probability and value under the policy that
    acted, the action text sent to the env, and the reward."""

    task_id: str
    observations: list[str] = field(default_factory=list)
    actions: list[list[str]] = field(default_factory=list)
    choices: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
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
    """One episode per env (``resets[i]``: ``reset`` keyword arguments), all stepped together.
    ``policy`` scores the admissible actions or writes its own (see ``needs_admissible_actions``)."""
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
        action_lists = [list(infos[i].get("admissible_actions") or []) for i in live]
        if policy.needs_admissible_actions:
            missing = [envs[i].spec.id if envs[i].spec else type(envs[i]).__name__ for i, a in zip(live, action_lists) if not a]
            if missing:
                raise ValueError(f"{missing[0]} gives no info['admissible_actions']; use the generation policy (--policy generate)")
        texts, choices, logps, values = policy.act([obs[i] for i in live], action_lists, rng, greedy=greedy)
        outcomes = step_many([envs[i] for i in live], texts)
        still = []
        for j, i in enumerate(live):
            ep = episodes[i]
            ep.observations.append(obs[i]); ep.actions.append(action_lists[j]); ep.choices.append(choices[j])
            ep.texts.append(texts[j]); ep.logprobs.append(float(logps[j])); ep.values.append(float(values[j]))
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
    """Greedy success rate (return > 0) on ``episodes`` episodes with seeds ``seed, seed+1, ...``
    (cycling through ``task_ids`` when given), overall and per task (``success/<task_id>``)."""
    envs = make_envs(env_id, min(batch, episodes), env_kwargs)
    rng = torch.Generator().manual_seed(seed)
    done: list[Episode] = []
    for start in range(0, episodes, len(envs)):
        n = min(len(envs), episodes - start)
        resets = [{"seed": seed + start + i, **({"options": {"task_id": task_ids[(start + i) % len(task_ids)]}} if task_ids else {})}
                  for i in range(n)]
        done += run_episodes(policy, envs[:n], resets, max_steps, rng, greedy=True)
    for env in envs:
        env.close()
    returns = [e.ret for e in done]
    result = {"success_rate": float(np.mean([r > 0 for r in returns])), "mean_return": float(np.mean(returns))}
    for task in sorted({e.task_id for e in done}):
        result[f"success/{task}"] = float(np.mean([e.ret > 0 for e in done if e.task_id == task]))
    return result


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


@dataclass
class TrainerConfig:
    """Fields every bundled trainer has (PPOConfig and GRPOConfig add their own)."""

    env_id: str = field(default="DreamGym-MiniWoB-v0", metadata={"help": "Env to train on (synthetic or real)."})
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "gym.make arguments (backend, buffer...)."})
    task_ids: list[str] = field(default_factory=list, metadata={"help": "Train on these tasks (default: all of the domain)."})
    iterations: int = field(default=50, metadata={"help": "Policy updates."})
    max_steps: int = field(default=6, metadata={"help": "Step limit of an episode."})
    policy: str = field(default="score", metadata={"help": "score: a small transformer ranks info['admissible_actions']; generate: a causal LM writes the action."})
    policy_model: str = field(default="", metadata={"help": "generate: HF causal LM directory ('' = embedded SmolLM2-135M-Instruct)."})
    max_new_tokens: int = field(default=24, metadata={"help": "generate: most tokens of an action."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate (use ~1e-5 for a generating LM)."})
    kl_coef: float = field(default=0.0, metadata={"help": "KL penalty to the initial policy (0: off)."})
    max_env_steps: int = field(default=0, metadata={"help": "Stop once this many env steps are spent (0: no cap); the budget of a real-step run."})
    init_from: str = field(default="", metadata={"help": "Start from this policy.pt (e.g. trained on synthetic experience, then real: sim-to-real)."})
    eval_env_id: str | None = field(default=None, metadata={"help": "Env to measure greedy success on (e.g. the real twin)."})
    eval_every: int = field(default=10, metadata={"help": "Iterations between evaluations."})
    eval_episodes: int = field(default=20, metadata={"help": "Episodes per evaluation."})
    eval_seed: int = field(default=100_000, metadata={"help": "First seed of evaluation episodes (held out from training)."})
    output_dir: str = field(default="runs/train", metadata={"help": "Checkpoints and metrics.csv."})
    seed: int = field(default=0, metadata={"help": "Seed of tasks, starts and sampling."})

    def __post_init__(self) -> None:
        if self.policy not in ("score", "generate"):
            raise ValueError(f"policy must be 'score' or 'generate', got {self.policy!r}")


def kl_to_reference(reference, observations: list[str], actions: list[list[str]], choices: Sequence[Any],
                    logp: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(current || reference) on the taken actions."""
    with torch.no_grad():
        ref_logp, _, _ = reference.evaluate_actions(observations, actions, choices)
    return ((ref_logp - logp).exp() - (ref_logp - logp) - 1).mean()


def make_policy(cfg: "TrainerConfig", env: gym.Env):
    """The policy ``cfg.policy`` names: "score" (TextActionPolicy over admissible actions) or
    "generate" (GenerativeTextPolicy writing actions in the env's grammar)."""
    if cfg.policy == "score":
        from dreamgym_env.trainers.policy import TextActionPolicy

        return TextActionPolicy()
    from dreamgym_env.trainers.generative import GenerativeTextPolicy

    domain = getattr(env, "domain", None)
    return GenerativeTextPolicy(cfg.policy_model or None, action_help=domain.grammar.describe() if domain else "",
                                max_new_tokens=cfg.max_new_tokens)


class Checkpointer:
    """``output_dir/checkpoint.pt`` after every iteration; a rerun resumes from it."""

    def __init__(self, output_dir: str):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "checkpoint.pt"

    def resume(self, policy, optimizer) -> tuple[int, int]:
        """Load the last checkpoint, if any; returns (iteration to start at, env steps spent)."""
        if not self.path.is_file():
            return 0, 0
        saved = torch.load(self.path, weights_only=False)
        policy.load_state_dict(saved["policy"])
        optimizer.load_state_dict(saved["optimizer"])
        logger.info("resumed at iteration %d", saved["iteration"])
        return int(saved["iteration"]), int(saved.get("env_steps", 0))

    def save(self, policy, optimizer, iteration: int, env_steps: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save({"policy": policy.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
                    "env_steps": env_steps}, tmp)
        tmp.replace(self.path)

    def finish(self, policy) -> None:
        torch.save(policy.state_dict(), self.dir / "policy.pt")


def maybe_evaluate(cfg: TrainerConfig, policy, iteration: int, env_steps: int, task_ids: Sequence[str] | None,
                   metrics: dict[str, Any], evaluations: list[dict[str, Any]]) -> None:
    """Greedy success on ``cfg.eval_env_id`` every ``eval_every`` iterations and at the end
    (the last iteration, or the one that spends ``max_env_steps``)."""
    last = iteration + 1 == cfg.iterations or out_of_budget(cfg, env_steps)
    if not cfg.eval_env_id or ((iteration + 1) % cfg.eval_every and not last):
        return
    result = evaluate(policy, cfg.eval_env_id, cfg.eval_episodes, cfg.eval_seed, cfg.max_steps, task_ids=task_ids or None)
    metrics.update({f"eval/{k}": v for k, v in result.items()})
    evaluations.append({"iteration": iteration + 1, "env_steps": env_steps, **result})


def progress_bar(cfg: TrainerConfig, desc: str, iteration: int, env_steps: int):
    """A tqdm bar over env steps when ``cfg.max_env_steps`` bounds the run, else over iterations;
    advance it with :func:`advance` after each iteration."""
    from tqdm.auto import tqdm

    if cfg.max_env_steps > 0:
        return tqdm(total=cfg.max_env_steps, initial=min(env_steps, cfg.max_env_steps), desc=desc, unit="step")
    return tqdm(total=cfg.iterations, initial=iteration, desc=desc, unit="it")


def advance(bar, cfg: TrainerConfig, steps: int) -> None:
    """Move :func:`progress_bar`'s bar past one iteration that took ``steps`` env steps."""
    bar.update(min(steps, bar.total - bar.n) if cfg.max_env_steps > 0 else 1)


def out_of_budget(cfg: TrainerConfig, env_steps: int) -> bool:
    """Whether ``cfg.max_env_steps`` (when set) is spent."""
    return cfg.max_env_steps > 0 and env_steps >= cfg.max_env_steps


def initial_weights(cfg: TrainerConfig, policy) -> None:
    """Load ``cfg.init_from`` (a ``policy.pt``) into ``policy`` when given."""
    if cfg.init_from:
        path = Path(cfg.init_from)
        if not path.is_file():
            raise FileNotFoundError(f"init_from {str(path)!r} does not exist (expected a policy.pt written by dreamgym train)")
        policy.load_state_dict(torch.load(path, weights_only=True))
        logger.info("policy initialised from %s", path)
