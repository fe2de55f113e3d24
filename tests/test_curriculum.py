"""Curriculum: reward variance, variance-weighted sampling with a λ cap on generated tasks,
generation from the highest-variance seeds, validation, fallback to uniform."""

from __future__ import annotations

import json
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest

import dreamgym_env  # noqa: F401
from dreamgym_env.backends.scripted import ScriptedBackend
from dreamgym_env.curriculum import (CurriculumConfig, CurriculumSampler, TaskGenerator, reward_variance,
                                     runnable_in)
from dreamgym_env.domains.base import Task
from dreamgym_env.domains.miniwob.domain import MiniWoBDomain


def _tasks(n=4):
    return [Task(f"t{i}", f"goal {i}") for i in range(n)]


def test_reward_variance_is_the_population_variance():
    assert reward_variance([1, 0, 1, 0]) == pytest.approx(0.25)
    assert reward_variance([1, 1, 1]) == 0.0 and reward_variance([1]) == 0.0
    assert reward_variance([0.0, 0.5, 1.0]) == pytest.approx(np.var([0.0, 0.5, 1.0]))


def test_all_zero_variance_falls_back_to_uniform_and_variance_weights_otherwise():
    sampler = CurriculumSampler(_tasks(), config=CurriculumConfig(variance_floor=0.0))
    rng = np.random.default_rng(0)
    for t in ("t0", "t1", "t2", "t3"):
        for r in (1, 1):  # solved every time: variance 0
            sampler.record(t, r)
    counts = Counter(t.task_id for t in sampler.sample(400, rng))
    assert set(counts) == {"t0", "t1", "t2", "t3"} and min(counts.values()) > 60
    for r in (0, 1, 0, 1):
        sampler.record("t2", r)
    counts = Counter(t.task_id for t in sampler.sample(200, rng))
    assert counts == {"t2": 200}  # the only informative task (no floor)
    assert [t.task_id for t in sampler.seeds()] == ["t2"]


def test_generated_tasks_are_capped_at_lambda_and_duplicates_and_invalid_ones_rejected():
    answers = iter(['{"goal":"goal 0"}', '{"goal":"a new goal"}', "not json", '{"goal":"bad one"}'])
    generator = TaskGenerator(ScriptedBackend(lambda r: next(answers)), MiniWoBDomain())
    sampler = CurriculumSampler(_tasks(), generator=generator, validate=lambda t: "bad" not in t.goal,
                                config=CurriculumConfig(generated_share=0.25, tasks_per_update=4))
    rng = np.random.default_rng(0)
    assert sampler.update(rng) == []  # no variance yet: no seeds, nothing asked
    for r in (0, 1):
        sampler.record("t1", r)
    accepted = sampler.update(rng)
    assert [t.goal for t in accepted] == ["a new goal"]  # duplicate, unparseable and invalid dropped
    assert accepted[0].metadata["generated"] and accepted[0].metadata["seed_task"] == "t1"
    assert sampler.rejected == 2
    batch = sampler.sample(8, rng)
    # at most floor(0.25 * 8) = 2 generated tasks, and no more than exist (each once)
    assert sum(t.metadata.get("generated", False) for t in batch) == 1
    assert sum(t.metadata.get("generated", False) for t in sampler.sample(3, rng)) == 0  # floor(0.75) = 0
    stats = sampler.stats()
    assert stats["curriculum/generated_tasks"] == 1 and len(stats["curriculum/variance_hist"]) == 5


def test_miniwob_generated_tasks_start_on_a_real_page_and_run_in_the_synthetic_env():
    from dreamgym_env.buffer.store import ExperienceBuffer
    from dreamgym_env.collect import read_trajectories
    from dreamgym_env.domains.miniwob.domain import real_dataset_path

    buffer = ExperienceBuffer()
    buffer.add_trajectories([t for t in read_trajectories(real_dataset_path()) if t.task_id == "enter-text"][:5])
    seen = []

    def answer(request):
        seen.append(request.messages[1]["content"])
        return json.dumps({"goal": 'Enter "Zorba" into the text field and press Submit.'})

    domain = MiniWoBDomain()
    env = gym.make("DreamGym-MiniWoB-v0", backend="scripted", buffer=False).unwrapped
    sampler = CurriculumSampler([domain.get_task("enter-text")], validate=runnable_in(env),
                                generator=TaskGenerator(ScriptedBackend(answer), domain, buffer=buffer),
                                config=CurriculumConfig(tasks_per_update=1))
    sampler.record("enter-text", 0.0)
    sampler.record("enter-text", 1.0)
    [task] = sampler.update(np.random.default_rng(0))
    assert "Page:\n" in seen[0] and "Family: enter-text" in seen[0]
    assert task.metadata["family"] == "enter-text" and task.task_id.startswith("enter-text~gen")
    obs, info = env.reset(options={"task": task})
    assert task.metadata["initial_state"] in obs and info["goal"] == task.goal
    assert any('"Zorba"' in a for a in info["admissible_actions"])
    buffer.close()
