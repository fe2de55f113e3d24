"""``dreamgym collect`` on the real MiniWoB env: JSONL records, resume, buffer loading, splits."""

from __future__ import annotations

import argparse
import gzip
import json

import gymnasium as gym
import pytest

from dreamgym_env.collect import (
    add_collect_parser,
    collect,
    read_trajectories,
    split_trajectories,
    trajectory_id,
)
from dreamgym_env.domains.miniwob.browser import is_miniwob_available
from dreamgym_env.schema import Trajectory, Transition

ENV_ID = "DreamGym-MiniWoB-Real-v0"
FAMILIES = ["click-checkboxes", "enter-text", "email-inbox"]

browser = pytest.mark.skipif(
    not is_miniwob_available(),
    reason="needs miniwob + selenium (pip install 'dreamgym-env[miniwob]') and Chromium + ChromeDriver "
    "(apt-get install chromium chromium-driver)",
)


@pytest.fixture(autouse=True)
def _registered():
    if ENV_ID not in gym.registry:  # the package registers it; this keeps the test self-contained
        gym.register(id=ENV_ID, entry_point="dreamgym_env.domains.miniwob.real_env:MiniWoBRealEnv",
                     max_episode_steps=12)


@browser
def test_collect_writes_resumes_and_fills_a_buffer(tmp_path):
    from dreamgym_env.buffer import ExperienceBuffer

    out = tmp_path / "real.jsonl.gz"
    stats = collect(ENV_ID, 5, "mixed", out, seed=3, epsilon=0.3, task_ids=FAMILIES)
    assert stats.episodes == 5 and stats.skipped == 0 and stats.transitions >= 5 and stats.steps_per_s > 0
    trajs = list(read_trajectories(out))
    assert [t.trajectory_id for t in trajs] == [trajectory_id(ENV_ID, 3, i, "mixed-eps0.3") for i in range(5)]
    assert [t.task_id for t in trajs] == [FAMILIES[i % 3] for i in range(5)]
    for traj in trajs:
        assert traj.source == "real" and traj.domain == "miniwob" and traj.goal
        for i, t in enumerate(traj.transitions):
            assert t.step == i and t.source == "real" and t.goal == traj.goal and t.policy_version == "mixed-eps0.3"
            assert t.state.startswith("[") and "Goal:" not in t.state and t.reward in (0.0, 1.0)
            if i:
                assert t.state == traj.transitions[i - 1].next_state  # the exact states, chained
        assert traj.transitions[-1].done or len(traj.transitions) == 12
        assert not any(t.done for t in traj.transitions[:-1])
    assert sum(t.total_reward for t in trajs) == stats.successes

    # an interrupted run leaves a cut line: it is dropped, and the run resumes where it stopped
    with gzip.open(out, "at", encoding="utf-8") as fh:
        fh.write('{"trajectory_id": "cut-off')
    buffer = ExperienceBuffer()
    stats2 = collect(ENV_ID, 7, "mixed", out, seed=3, epsilon=0.3, task_ids=FAMILIES, buffer=buffer)
    assert stats2.skipped == 5 and stats2.episodes == 2
    again = list(read_trajectories(out))
    assert [t.trajectory_id for t in again] == [trajectory_id(ENV_ID, 3, i, "mixed-eps0.3") for i in range(7)]
    assert [t.to_json() for t in again[:5]] == [t.to_json() for t in trajs]
    assert stats2.buffer_added == stats2.transitions == buffer.count({"source": "real"})
    assert buffer.initial_states(domain="miniwob", task_id=again[5].task_id)
    assert collect(ENV_ID, 7, "mixed", out, seed=3, epsilon=0.3, task_ids=FAMILIES).episodes == 0


@browser
def test_collect_command_line(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="dreamgym")
    add_collect_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "oracle.jsonl"
    args = parser.parse_args(["collect", "--episodes", "3", "--policy", "oracle", "--out", str(out),
                              "--seed", "1", "--task-ids", "enter-text,click-tab", "--no-progress"])
    assert args.func(args) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["episodes"] == 3 and stats["success_rate"] == 1.0 and stats["steps_per_s"] > 0
    assert len(out.read_text().splitlines()) == 3


def test_collect_help_and_bad_arguments(tmp_path):
    parser = argparse.ArgumentParser(prog="dreamgym")
    add_collect_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["collect", "--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["collect", "--episodes", "1", "--out", "x", "--policy", "greedy"])
    with pytest.raises(ValueError):
        collect(ENV_ID, -1, "oracle", tmp_path / "x.jsonl")


def _toy(n_per_family: int = 10) -> list[Trajectory]:
    trajs = []
    for family in ("a", "b", "c", "d", "e"):
        for i in range(n_per_family):
            tid = f"{family}-{i}"
            t = Transition("miniwob", family, tid, 0, "[1] div", "click [1]", "[1] div", 1.0, True, goal="g")
            trajs.append(Trajectory(tid, "miniwob", family, "g", [t]))
    return trajs


def test_split_by_episode_and_by_family(tmp_path):
    trajs = _toy()
    train, test = split_trajectories(trajs, by="episode", test_fraction=0.3)
    assert len(train) + len(test) == 50 and 5 <= len(test) <= 25
    assert not {t.trajectory_id for t in train} & {t.trajectory_id for t in test}
    assert split_trajectories(trajs, by="episode", test_fraction=0.3) == (train, test)  # stable
    assert split_trajectories(trajs[::-1], by="episode", test_fraction=0.3)[1] == test[::-1]  # order-free

    train, test = split_trajectories(trajs, by="family", held_out_families=["b", "d"])
    assert {t.task_id for t in test} == {"b", "d"} and {t.task_id for t in train} == {"a", "c", "e"}
    train, test = split_trajectories(trajs, by="family", test_fraction=0.4)
    assert len({t.task_id for t in test}) == 2 and not {t.task_id for t in train} & {t.task_id for t in test}
    train, test = split_trajectories(trajs, by="episode", test_fraction=0.0, held_out_families=["e"])
    assert {t.task_id for t in test} == {"e"} and len(train) == 40

    path = tmp_path / "toy.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(t.to_json() + "\n" for t in trajs)
    assert split_trajectories(path, by="family", held_out_families=["a"])[1] == trajs[:10]
    with pytest.raises(ValueError):
        split_trajectories(trajs, by="task")
