"""Curriculum task generation (DreamGym §curriculum): seed the task generator with the tasks
whose rewards vary most, mix what it makes into training with at most a λ share.

The reward variance of a task over its last n rollouts, V_tau = (1/n) Σ (r_i − r̄)², is highest
for tasks the policy solves sometimes: the most informative to train on and to vary. A task
generator M_task (any experience-model backend) writes new instances of those tasks; each is
validated (parseable, not a duplicate, runnable in the synthetic env) before it is used. When
every variance is zero (all solved or all failed) sampling falls back to uniform over tasks.

    sampler = CurriculumSampler(domain.tasks, generator=TaskGenerator(backend, domain), validate=...)
    for iteration in ...:
        tasks = sampler.sample(batch_size, rng)
        ... rollouts ...
        sampler.record(task.task_id, reward)
        sampler.update(rng)          # new tasks from the highest-variance seeds
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from dreamgym_env.domains.base import Domain, Task

logger = logging.getLogger(__name__)


@dataclass
class CurriculumConfig:
    """How the curriculum picks seeds and mixes generated tasks."""

    window: int = field(default=8, metadata={"help": "Rollouts per task kept for its reward variance (a GRPO group)."})
    min_rollouts: int = field(default=2, metadata={"help": "Rollouts before a task's variance counts."})
    num_seeds: int = field(default=4, metadata={"help": "Highest-variance tasks given to the generator per update."})
    tasks_per_update: int = field(default=4, metadata={"help": "New tasks asked of the generator per update."})
    generated_share: float = field(default=0.25, metadata={"help": "λ: most share of generated tasks in a sampled batch."})
    variance_floor: float = field(default=0.02, metadata={"help": "Added to every variance when sampling, so no task starves."})
    max_generated: int = field(default=256, metadata={"help": "Generated tasks kept (oldest dropped)."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.generated_share <= 1.0:
            raise ValueError(f"generated_share (λ) must be in [0, 1], got {self.generated_share}")
        if self.window < 2 or self.min_rollouts < 2 or self.min_rollouts > self.window:
            raise ValueError("need 2 <= min_rollouts <= window so that a variance exists")


def reward_variance(rewards: Sequence[float]) -> float:
    """V_tau = (1/n) Σ (r_i − r̄)² (0 for fewer than two rewards)."""
    if len(rewards) < 2:
        return 0.0
    return float(np.var(np.asarray(rewards, dtype=np.float64)))


class TaskGenerator:
    """M_task: asks a backend for new instances of seed tasks.

    For domains whose tasks start from a page (MiniWoB), a seed carries its initial state and
    the generator writes a new goal for the same family on that page, so real success can still
    be checked per family.

    Args:
        backend: any :class:`~dreamgym_env.backends.base.ExperienceModel`.
        domain: the domain of the tasks (names it in the prompt).
        buffer: a replay buffer; a seed without a page gets a real initial state of its family
            from it (and that state's goal as the example), and the new task starts there.
        temperature: sampling temperature of generation.
    """

    SYSTEM = (
        "You write new tasks for a {domain} web environment. Given example tasks of one family, "
        "with the page the task starts on, write one new task of the same family that can be done "
        "on that page: same kind of goal, different target (another item, name, option or text). "
        'Answer JSON {{"goal": "..."}}.'
    )
    SCHEMA = {
        "type": "object",
        "properties": {"goal": {"type": "string", "maxLength": 240}},
        "required": ["goal"],
        "additionalProperties": False,
    }

    def __init__(self, backend: Any, domain: Domain, buffer: Any = None, temperature: float = 0.8,
                 max_tokens: int = 96):
        self.backend = backend
        self.domain = domain
        self.buffer = buffer
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._count = 0

    def _with_page(self, seed: Task, rng: np.random.Generator) -> Task:
        """``seed`` with a real initial state of its family (when it has none and one is stored)."""
        if seed.metadata.get("initial_state") or self.buffer is None:
            return seed
        family = str(seed.metadata.get("family", seed.task_id))
        real = self.buffer.initial_states(domain=self.domain.name, task_id=family)
        if not real:
            return seed
        first = real[int(rng.integers(len(real)))]
        return Task(seed.task_id, first.goal or seed.goal, {**dict(seed.metadata), "family": family,
                                                             "initial_state": first.state})

    def _request(self, seed: Task, seed_id: int):
        from dreamgym_env.backends.base import GenerationRequest

        state = str(seed.metadata.get("initial_state", ""))[:1200]
        user = f"Family: {seed.metadata.get('family', seed.task_id)}\nExample goal: {seed.goal}\n"
        if state:
            user += f"Page:\n{state}\n"
        return GenerationRequest(
            [{"role": "system", "content": self.SYSTEM.format(domain=self.domain.name)},
             {"role": "user", "content": user}],
            temperature=self.temperature, max_tokens=self.max_tokens, seed=seed_id,
            json_schema=self.SCHEMA, metadata={"kind": "task_generation", "seed_task": seed.task_id},
        )

    def generate(self, seeds: Sequence[Task], n: int, rng: np.random.Generator) -> list[Task]:
        """Up to ``n`` candidate tasks (unvalidated), seeds taken round-robin."""
        if not seeds or n <= 0:
            return []
        picked = [self._with_page(seeds[i % len(seeds)], rng) for i in range(n)]
        results = self.backend.generate([self._request(s, int(rng.integers(2**31))) for s in picked])
        out = []
        for seed, result in zip(picked, results):
            if not result.ok:
                logger.debug("task generation failed: %s", result.error)
                continue
            try:
                goal = json.loads(result.text[result.text.find("{"):]).get("goal", "")
            except (ValueError, AttributeError):
                continue
            if not isinstance(goal, str) or not goal.strip():
                continue
            self._count += 1
            family = str(seed.metadata.get("family", seed.task_id))
            meta = {**dict(seed.metadata), "family": family, "generated": True, "seed_task": seed.task_id}
            out.append(Task(f"{family}~gen{self._count}", goal.strip(), meta))
        return out


def _normalise(goal: str) -> str:
    return re.sub(r"\W+", " ", goal.lower()).strip()


class CurriculumSampler:
    """Samples training tasks: base tasks weighted by reward variance, plus ≤ λ generated ones.

    Args:
        tasks: the base tasks.
        generator: a :class:`TaskGenerator` (None: no generation, variance-weighted sampling only).
        validate: ``task -> bool``, e.g. :func:`runnable_in` an env; invalid tasks are dropped.
        config: :class:`CurriculumConfig`.
    """

    def __init__(self, tasks: Sequence[Task], generator: TaskGenerator | None = None,
                 validate: Callable[[Task], bool] | None = None, config: CurriculumConfig | None = None):
        if not tasks:
            raise ValueError("CurriculumSampler needs at least one task")
        self.config = config or CurriculumConfig()
        self.tasks = list(tasks)
        self.generator = generator
        self.validate = validate
        self.generated: list[Task] = []
        self._rewards: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=self.config.window))
        self._goals = {_normalise(t.goal) for t in self.tasks}
        self._by_id = {t.task_id: t for t in self.tasks}
        self.rejected = 0

    # -- bookkeeping -----------------------------------------------------------------------
    def record(self, task_id: str, reward: float) -> None:
        """Add one rollout's return for ``task_id``."""
        self._rewards[task_id].append(float(reward))

    def variance(self, task_id: str) -> float:
        rewards = self._rewards.get(task_id, ())
        return reward_variance(list(rewards)) if len(rewards) >= self.config.min_rollouts else 0.0

    # -- sampling --------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` tasks: at most ``floor(λ n)`` generated ones, the rest base tasks drawn with
        probability ∝ variance + floor (uniform when every variance is zero)."""
        n_generated = min(len(self.generated), int(self.config.generated_share * n))
        picks: list[Task] = []
        if n_generated:
            idx = rng.choice(len(self.generated), size=n_generated, replace=n_generated > len(self.generated))
            picks += [self.generated[i] for i in idx]
        weights = np.array([self.variance(t.task_id) for t in self.tasks], dtype=np.float64)
        if weights.sum() == 0:
            probs = np.full(len(self.tasks), 1.0 / len(self.tasks))
        else:
            weights += self.config.variance_floor
            probs = weights / weights.sum()
        picks += [self.tasks[i] for i in rng.choice(len(self.tasks), size=n - n_generated, p=probs)]
        return picks

    def seeds(self) -> list[Task]:
        """The highest-variance tasks (base or generated), at most ``num_seeds``, variance > 0."""
        pool = self.tasks + self.generated
        scored = sorted(((self.variance(t.task_id), i) for i, t in enumerate(pool)), reverse=True)
        return [pool[i] for v, i in scored[: self.config.num_seeds] if v > 0]

    def update(self, rng: np.random.Generator) -> list[Task]:
        """Ask the generator for new tasks from the current seeds; keep the valid new ones."""
        seeds = self.seeds()
        if self.generator is None or not seeds:
            return []
        accepted = []
        for task in self.generator.generate(seeds, self.config.tasks_per_update, rng):
            key = _normalise(task.goal)
            if key in self._goals:
                self.rejected += 1
                continue
            if self.validate is not None and not self.validate(task):
                self.rejected += 1
                continue
            self._goals.add(key)
            accepted.append(task)
        self.generated = (self.generated + accepted)[-self.config.max_generated :]
        return accepted

    def stats(self) -> dict[str, Any]:
        """For logging: variance histogram, generated tasks, their success rate."""
        variances = [self.variance(t.task_id) for t in self.tasks + self.generated]
        hist, _ = np.histogram(variances, bins=5, range=(0.0, 0.25))
        gen_rewards = [r for t in self.generated for r in self._rewards.get(t.task_id, ())]
        return {
            "curriculum/variance_hist": hist.tolist(),
            "curriculum/mean_variance": float(np.mean(variances)) if variances else 0.0,
            "curriculum/generated_tasks": len(self.generated),
            "curriculum/rejected_tasks": self.rejected,
            "curriculum/generated_success": float(np.mean(gen_rewards)) if gen_rewards else float("nan"),
        }


def runnable_in(env: Any) -> Callable[[Task], bool]:
    """A validator: the task resets in ``env`` (a DreamGymEnv) without a model error and, when
    the domain lists actions, with at least one admissible action."""

    def check(task: Task) -> bool:
        try:
            _, info = env.reset(options={"task": task})
        except Exception as exc:  # noqa: BLE001 - any failure means the task is not usable
            logger.debug("generated task %s does not reset: %s", task.task_id, exc)
            return False
        if info.get("error"):
            return False
        return info.get("admissible_actions", ["any"]) != []

    return check
