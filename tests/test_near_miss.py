"""The near-miss collection policy (text alone, then on the real MiniWoB env) and ``dreamgym data-stats``."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest

from dreamgym_env.collect import collect, read_trajectories
from dreamgym_env.data_report import add_data_stats_parser, ending_report, format_report
from dreamgym_env.domains.miniwob.browser import is_miniwob_available
from dreamgym_env.domains.miniwob.near_miss import NEAR_MISS_FAMILIES, NearMissPolicy, near_misses, perturb_text
from dreamgym_env.domains.miniwob.oracles import make_policy, oracle_action
from dreamgym_env.schema import Trajectory, Transition

ENV_ID = "DreamGym-MiniWoB-Real-v0"
#: One-button pages: no action fails, so there is no near miss to make.
NO_NEAR_MISS = {"click-test", "focus-text"}


def _shipped_first_pages(per_family: int = 15) -> dict[str, list[tuple[str, str]]]:
    from dreamgym_env.domains.miniwob.domain import real_dataset_path

    pages: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for traj in read_trajectories(real_dataset_path()):
        if len(pages[traj.task_id]) < per_family:
            pages[traj.task_id].append((traj.goal, traj.transitions[0].state))
    return pages


def test_perturbed_text_always_differs():
    rng = np.random.default_rng(0)
    kinds = set()
    for text in ["", "a", "Z", "7", "ab", "loHw", "Orci amet. Ornare.", "f0"] * 25:
        kind, wrong = perturb_text(text, rng)
        kinds.add(kind)
        assert wrong != text, (kind, text)
    assert kinds == {"typo", "partial", "case", "extra"}


def test_near_misses_on_real_pages_are_wrong_and_readable():
    """On real first pages of every family: each near miss differs from the oracle's action,
    and each wrong goal is one the oracle can still solve on that page."""
    rng = np.random.default_rng(1)
    kinds: dict[str, set[str]] = defaultdict(set)
    for family, pages in _shipped_first_pages().items():
        for goal, state in pages:
            right = oracle_action(family, goal, state)
            for kind, wrong_goal, wrong_action in near_misses(family, goal, state, right, rng):
                kinds[family].add(kind)
                assert (wrong_goal is None) != (wrong_action is None)
                if wrong_goal is not None:
                    assert wrong_goal != goal
                    oracle_action(family, wrong_goal, state)  # raises if the page cannot serve it
                else:
                    assert wrong_action != right
    assert set(NEAR_MISS_FAMILIES) == set(kinds) | NO_NEAR_MISS
    assert {"box-too-many", "box-too-few", "box-swapped", "early-submit"} <= kinds["click-checkboxes"]
    assert {"other-option", "early-submit"} <= kinds["click-option"]
    assert "swapped-fields" in kinds["login-user"] and "other-sender" in kinds["email-inbox"]
    with pytest.raises(KeyError, match="known"):
        near_misses("click-nothing", "g", "[1] div", "click [1]")


def test_policy_makes_one_mistake_and_records_it():
    """enter-text, played on text alone: the policy types a wrong text (or submits early) once,
    records the kind on that step only, then goes on to Submit as an agent that misread it would."""
    goal = 'Enter "Tula" into the text field and press Submit.'
    seen = set()
    for seed in range(30):
        policy = make_policy("near-miss", seed=seed, recover=0.0)
        policy.reset(seed=seed)
        state = '[5] input_text id="tt"\n[6] button "Submit"'
        extras, actions = [], []
        for _ in range(3):
            action = policy.act(f"Goal: {goal}\nState:\n{state}", {"task_id": "enter-text", "goal": goal})
            actions.append(action)
            extras.append(policy.step_extra())
            if action == "click [6]":
                break
            text = json.loads(action.split("] ", 1)[1])
            state = f'[5] input_text value={json.dumps(text)} id="tt" focused\n[6] button "Submit"'
        marked = [e["near_miss"] for e in extras if e]
        assert len(marked) == 1 and policy.kind == marked[0]
        seen.add(marked[0].split("-")[0])
        assert actions[-1] == "click [6]"
        wrong_at = next(i for i, e in enumerate(extras) if e)
        assert 'type [5] "Tula"' not in actions[wrong_at:]  # no repair with recover=0
    assert {"early", "text"} <= seen
    with pytest.raises(ValueError, match="recover"):
        NearMissPolicy(recover=1.5)


def _traj(tid: str, family: str, rewards: list[float], done: bool, near_miss: str | None = None) -> Trajectory:
    steps = [Transition("miniwob", family, tid, i, "[1] div", "click [1]", "[1] div", r,
                        done and i == len(rewards) - 1, goal="g",
                        extra={"near_miss": near_miss} if near_miss and i == 0 else {})
             for i, r in enumerate(rewards)]
    return Trajectory(tid, "miniwob", family, "g", steps)


def test_ending_report_and_command(tmp_path, capsys):
    from dreamgym_env.collect import write_trajectories

    path = tmp_path / "t.jsonl.gz"
    write_trajectories(path, [
        _traj("a0", "click-tab", [1.0], True), _traj("a1", "click-tab", [0.0], True, "other-tab"),
        _traj("b0", "enter-text", [0.0, 0.0], False), _traj("b1", "enter-text", [0.0, 1.0], True),
    ])
    report = ending_report([path])
    assert report["click-tab"].to_dict() == {"episodes": 2, "transitions": 2, "successes": 1, "failures": 1,
                                             "truncated": 0, "unsuccessful_share": 0.5,
                                             "near_misses": {"other-tab": 1}}
    assert (report["enter-text"].truncated, report["enter-text"].successes) == (1, 1)
    table = format_report(report, min_unsuccessful=0.6)
    assert "| click-tab | 2 | 2 | 1 | 1 | 0 | 0.50 (below) | other-tab 1 |" in table
    assert "| **all** | 4 | 6 | 2 | 1 | 1 | 0.50 | 1 |" in table

    parser = argparse.ArgumentParser(prog="dreamgym")
    add_data_stats_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data-stats", str(path), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["total"]["episodes"] == 4
    from dreamgym_env.errors import DreamGymError

    args = parser.parse_args(["data-stats", str(tmp_path / "missing.jsonl")])
    with pytest.raises(DreamGymError, match="missing.jsonl"):
        args.func(args)


@pytest.mark.skipif(not is_miniwob_available(), reason="needs miniwob + selenium and Chromium + ChromeDriver")
def test_near_miss_collection_on_the_real_env(tmp_path):
    """Near-miss episodes on real pages mostly fail, and each records the mistake it made."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="dreamgym_env.domains.miniwob.real_env:MiniWoBRealEnv",
                     max_episode_steps=12)
    families = ["click-button", "click-checkboxes", "login-user", "choose-list"]
    out = tmp_path / "near.jsonl.gz"
    stats = collect(ENV_ID, 12, "near-miss", out, seed=5, task_ids=families, recover=0.0)
    assert stats.policy == "near-miss-rec0" and stats.episodes == 12 and stats.browser_errors == 0
    trajs = list(read_trajectories(out))
    marked = [t for t in trajs if any(x.extra.get("near_miss") for x in t.transitions)]
    assert len(marked) >= 9
    assert all(sum("near_miss" in x.extra for x in t.transitions) == 1 for t in trajs if t in marked)
    assert sum(t.total_reward == 0 for t in marked) >= 0.8 * len(marked)  # the page rejects near misses
