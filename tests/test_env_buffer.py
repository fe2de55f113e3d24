"""The env with a real Chroma buffer: real initial states, retrieval, synthetic write-back."""

from __future__ import annotations

import gymnasium as gym
import pytest

import dreamgym_env  # noqa: F401
from dreamgym_env.backends import ScriptedBackend
from dreamgym_env.buffer import ExperienceBuffer
from dreamgym_env.env import DreamGymEnv
from dreamgym_env.schema import Transition

REAL_STATE = "[1] RootWebArea 'Orders'\n[2] link 'On hold'\n[3] button 'Filter'"


def real_episode(trajectory_id: str, task_id: str = "680", steps: int = 3) -> list[Transition]:
    return [
        Transition("webarena", task_id, trajectory_id, step, REAL_STATE, f"click [{2 + step % 2}]",
                   REAL_STATE + f"\n[{10 + step}] StaticText 'row {step}'", float(step == steps - 1),
                   step == steps - 1, goal="Go to the list of orders that are on hold", source="real")
        for step in range(steps)
    ]


def test_real_initial_state_retrieval_and_synthetic_writes(tmp_path):
    buffer = ExperienceBuffer(tmp_path / "buffer")
    buffer.add(real_episode("real-a") + real_episode("real-b"))
    seen_prompts = []

    def responder(request):
        seen_prompts.append(request.messages[-1]["content"])
        from dreamgym_env.backends.scripted import default_scripted_response

        return default_scripted_response(request)

    env = DreamGymEnv("webarena", backend=ScriptedBackend(responder), buffer=buffer, top_k=2,
                      task_id=680, policy_version="pi-0")
    obs, info = env.reset(seed=0)
    assert REAL_STATE in obs and info["model_latency_s"] == 0.0  # real initial state, no model call
    obs, reward, terminated, truncated, info = env.step("click [2]")
    assert len(info["retrieved"]) == 2 and all(i.startswith("webarena:real-") for i in info["retrieved"])
    assert "Similar real transitions:" in seen_prompts[-1] and "| click [2] on link 'On hold' => reward" in seen_prompts[-1]
    env.step("stop [done]")  # the episode ends: its transitions are written
    synthetic = buffer.count({"source": "synthetic"})
    assert synthetic == 2
    # synthetic transitions are never retrieved as real demos
    env.reset(seed=1)
    _, _, _, _, info = env.step("click [3]")
    assert all(i.startswith("webarena:real-") for i in info["retrieved"])
    exported = tmp_path / "all.jsonl"
    assert buffer.export_jsonl(exported) == 3  # two real trajectories and one synthetic
    assert buffer.count({"trajectory_id": info["trajectory_id"]}) == 0  # not written before the flush
    env.close()  # flushes the open episode
    assert buffer.count({"source": "synthetic"}) == 3
    (entry,) = buffer.get([f"webarena:{info['trajectory_id']}:0"])
    assert entry.source == "synthetic" and entry.policy_version == "pi-0" and entry.action == "click [3]"


def test_buffer_from_path_string_and_env_var(tmp_path, monkeypatch):
    path = tmp_path / "b"
    ExperienceBuffer(path).add(real_episode("real-a"))
    env = gym.make("DreamGym-WebArena-v0", backend=ScriptedBackend(), buffer=str(path), task_id=680)
    obs, _ = env.reset(seed=0)
    assert REAL_STATE in obs
    monkeypatch.setenv("DREAMGYM_BUFFER", str(path))
    env = gym.make("DreamGym-WebArena-v0", backend=ScriptedBackend(), task_id=680)
    env.reset(seed=0)
    _, _, _, _, info = env.step("click [2]")
    assert info["retrieved"]


def test_vector_env_retrieves_in_one_query(tmp_path, monkeypatch):
    buffer = ExperienceBuffer(tmp_path / "buffer")
    buffer.add(real_episode("real-a"))
    calls = []
    original = buffer.query

    def counting_query(states, actions, **kwargs):
        calls.append(len(states))
        return original(states, actions, **kwargs)

    monkeypatch.setattr(buffer, "query", counting_query)
    envs = gym.make_vec("DreamGym-WebArena-v0", num_envs=4, backend=ScriptedBackend(), buffer=buffer, task_id=680)
    envs.reset(seed=0)
    _, _, _, _, infos = envs.step(["click [2]"] * 4)
    assert calls == [4]
    assert all(len(r) > 0 for r in infos["retrieved"])


def test_episodes_from_the_same_seed_are_all_written(tmp_path):
    """A GRPO group runs one seed in several envs: each episode must keep its own transitions
    (the buffer ignores an id it already holds), while one env reset with one seed stays
    deterministic (Gymnasium's check_env compares the infos)."""
    buffer = ExperienceBuffer(tmp_path / "buffer")
    buffer.add(real_episode("real-a"))
    envs = [DreamGymEnv("webarena", backend=ScriptedBackend(), buffer=buffer, task_id=680) for _ in range(3)]
    ids = set()
    for env in envs:
        _, info = env.reset(seed=7)
        ids.add(info["trajectory_id"])
        env.step("click [2]")
        env.close()
    assert len(ids) == 3
    assert buffer.count({"source": "synthetic"}) == 3
    again = DreamGymEnv("webarena", backend=ScriptedBackend(), buffer=buffer, task_id=680)
    assert again.reset(seed=7)[1]["trajectory_id"] == again.reset(seed=7)[1]["trajectory_id"]


def test_retrieval_is_exact_with_ties_by_id_unless_asked_otherwise(tmp_path):
    # 30 real episodes share every (state, action) key: the env retrieves the smallest ids, as
    # `dreamgym sft` does, whatever order they were stored in
    episodes = [f"real-{i:02d}" for i in range(30)]
    buffer = ExperienceBuffer(tmp_path / "buffer")
    for name in reversed(episodes):
        buffer.add(real_episode(name))
    env = DreamGymEnv("webarena", backend=ScriptedBackend(), buffer=buffer, top_k=3, task_id=680)
    env.reset(seed=0)
    _, _, _, _, info = env.step("click [2]")
    assert info["retrieved"] == ["webarena:real-00:0", "webarena:real-00:2", "webarena:real-01:0"]
    queries = []
    original = buffer.query

    def spying_query(states, actions, **kwargs):
        queries.append(kwargs["exact"])
        return original(states, actions, **kwargs)

    buffer.query = spying_query  # type: ignore[method-assign]
    approximate = DreamGymEnv("webarena", backend=ScriptedBackend(), buffer=buffer, top_k=3, task_id=680,
                              exact_retrieval=False)
    approximate.reset(seed=0)
    _, _, _, _, info = approximate.step("click [2]")
    assert queries == [False] and len(info["retrieved"]) == 3


def test_auto_retrieval_is_exact_up_to_a_size_then_hnsw(tmp_path, caplog):
    # the default, exact_retrieval="auto": exact while the partition searched is small, Chroma's
    # HNSW index once it holds more than buffer.exact_max_entries entries
    buffer = ExperienceBuffer(tmp_path / "buffer")
    for name in (f"real-{i:02d}" for i in range(4)):
        buffer.add(real_episode(name))
    exact_searches = []
    original = buffer._search_exact

    def spying_search_exact(*args, **kwargs):
        exact_searches.append(args[1].shape[0])
        return original(*args, **kwargs)

    buffer._search_exact = spying_search_exact  # type: ignore[method-assign]
    env = DreamGymEnv("webarena", backend=ScriptedBackend(), buffer=buffer, top_k=3, task_id=680)
    assert env.exact_retrieval == "auto"
    env.reset(seed=0)
    _, _, _, _, info = env.step("click [2]")
    assert exact_searches == [1] and info["retrieved"][0] == "webarena:real-00:0"
    buffer.exact_max_entries = buffer.count({"source": "real"}) - 1
    with caplog.at_level("INFO", logger="dreamgym_env.buffer.store"):
        _, _, _, _, info = env.step("click [2]")
        env.step("click [2]")
    assert exact_searches == [1] and len(info["retrieved"]) == 3
    assert sum("HNSW" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ValueError, match="exact_retrieval must be True, False or 'auto'"):
        DreamGymEnv("webarena", backend=ScriptedBackend(), buffer=buffer, exact_retrieval="yes")
    with pytest.raises(ValueError, match="exact must be True, False or 'auto'"):
        buffer.query(["s"], ["click [1]"], exact="always")
    env.close()
