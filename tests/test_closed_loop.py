"""Closed-loop fidelity: bootstrap figures, and paired starts / replay on the real MiniWoB env."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest

from dreamgym_env.domains.miniwob.browser import is_miniwob_available
from dreamgym_env.sft.closed_loop import (
    ClosedLoopResult,
    EpisodePair,
    bootstrap_mean_gap,
    closed_loop,
    format_closed_loop,
)


def _pairs(family: str, synthetic: list[int], real: list[int], policy: str = "random") -> list[EpisodePair]:
    return [EpisodePair(policy, family, i, bool(r), bool(s), 1, 1, replay_success=bool(s))
            for i, (s, r) in enumerate(zip(synthetic, real))]


def test_bootstrap_gap_is_the_mean_over_families_with_an_interval_around_it():
    certain = _pairs("a", [1] * 10, [0] * 10) + _pairs("b", [1] * 10, [1] * 10)
    assert bootstrap_mean_gap(certain) == (0.5, 0.5, 0.5)  # no spread: the interval is a point
    rng = np.random.default_rng(0)
    noisy = _pairs("a", list(rng.integers(0, 2, 30)), list(rng.integers(0, 2, 30))) + \
        _pairs("b", list(rng.integers(0, 2, 30)), list(rng.integers(0, 2, 30)))
    gap, lo, hi = bootstrap_mean_gap(noisy, seed=1)
    assert lo <= gap <= hi and hi - lo > 0.05  # 30 episodes a family cannot pin a gap to 0.05
    assert bootstrap_mean_gap(noisy, seed=1) == (gap, lo, hi)  # reproducible
    assert all(math.isnan(x) for x in bootstrap_mean_gap([]))


def test_summary_reports_replay_agreement_on_real_failures():
    result = ClosedLoopResult("syn", "real", 10, 0, _pairs("a", [1] * 10, [1] * 5 + [0] * 5))
    s = result.summary()["random"]
    assert s["replay_agreement"] == 0.5 and s["replay_agreement_real_failures"] == 0.0 and s["real_failures"] == 5
    assert s["mean_abs_gap"] == 0.5 and s["real_success"] == 0.5 and s["synthetic_success"] == 1.0
    assert "| a | 0.50 | 1.00 | 0.50 |" in format_closed_loop(result)
    json.dumps(result.to_dict())  # serialisable


@pytest.mark.skipif(not is_miniwob_available(), reason="needs miniwob + selenium and Chromium + ChromeDriver")
def test_paired_closed_loop_on_the_real_env_with_a_generous_model(tmp_path):
    """A fake model that rewards every action: the oracle's gap is 0, the near-miss policy's is
    what the real env's failures make it, and replaying failed real episodes disagrees. Each
    synthetic episode starts from the page its real twin showed."""
    from dreamgym_env.backends import ScriptedBackend

    if "DreamGym-MiniWoB-Real-v0" not in gym.registry:
        import dreamgym_env  # noqa: F401

    starts = []

    def generous(request):
        starts.append(request.metadata.get("state"))
        return json.dumps({"reasoning": "the goal is met", "patch": [], "reward": 1, "done": True, "valid_action": True})

    backend = ScriptedBackend(generous)
    result = closed_loop(policies=["oracle", "near-miss"], episodes=3, families=["click-button", "login-user"],
                         seed=7, batch=4, env_kwargs={"backend": backend, "buffer": False}, workdir=tmp_path)
    s = result.summary()
    assert s["oracle"]["episodes"] == 6 and s["oracle"]["real_success"] == 1.0
    assert s["oracle"]["mean_abs_gap"] == 0.0 and s["oracle"]["replay_agreement"] == 1.0
    near = s["near-miss"]
    assert near["synthetic_success"] == 1.0 and near["real_success"] < 1.0
    assert near["mean_abs_gap"] == pytest.approx(1.0 - near["real_success"])  # same in both families' mean here
    assert near["replay_agreement_real_failures"] == 0.0
    real_first_states = {json.loads(line)["transitions"][0]["state"]
                         for f in tmp_path.glob("real-*.jsonl.gz") for line in __import__("gzip").open(f, "rt")}
    assert len(starts) == 2 * 2 * 6 and set(starts) <= real_first_states  # each synthetic episode (run and
    # replay, 2 policies x 6 episodes) made one step, on the page its real twin started from

    # the workdir keeps the run: the same command reads every pair back, one more episode a
    # family runs only the new ones, and a run with other settings is refused
    again = closed_loop(policies=["oracle", "near-miss"], episodes=3, families=["click-button", "login-user"],
                        seed=7, batch=4, env_kwargs={"backend": backend, "buffer": False}, workdir=tmp_path)
    assert again.pairs == result.pairs and len(starts) == 24
    longer = closed_loop(policies=["oracle", "near-miss"], episodes=4, families=["click-button", "login-user"],
                         seed=7, batch=4, chunk=1, env_kwargs={"backend": backend, "buffer": False}, workdir=tmp_path)
    assert len(longer.pairs) == 16 and len(starts) == 24 + 2 * 2 * 2 and longer.pairs[:6] == result.pairs[:6]
    assert sorted(p.episode for p in longer.pairs if p.policy == "oracle") == list(range(8))
    with pytest.raises(ValueError, match="other settings .*seed"):
        closed_loop(policies=["oracle"], episodes=1, families=["click-button", "login-user"], seed=8, batch=4,
                    env_kwargs={"backend": backend, "buffer": False}, workdir=tmp_path)


def test_goal_table_marks_each_goal():
    from dreamgym_env.sft.fidelity import goal_table

    table = goal_table({"eval": {"seen": {"valid_output": 1.0, "reward_done_acc": 0.5}},
                        "loop": {"oracle": {"mean_abs_gap": 0.04, "gap_ci95": [0.01, 0.09]}}})
    assert "| valid output, held-out episodes | ≥ 0.999 | 1.000 | yes |" in table
    assert "| reward+done, held-out episodes | ≥ 0.99 | 0.500 | no |" in table
    assert "| closed loop |gap|, oracle | ≤ 0.05 | 0.040 | yes |" in table
    assert "| closed loop |gap| 95 % upper, oracle | ≤ 0.08 | 0.090 | no |" in table
    assert "| replay agreement, random | ≥ 0.95 | not measured | |" in table


@pytest.mark.skipif(not is_miniwob_available(), reason="needs miniwob + selenium and Chromium + ChromeDriver")
def test_fidelity_command_writes_every_file(tmp_path, capsys):
    """The one command, on the shipped model's card with the fake backend (figures meaningless,
    files and plumbing real): a small eval sample and one closed-loop episode per family."""
    from dreamgym_env.cli import main

    out = tmp_path / "fid"
    assert main(["fidelity", "--backend", "scripted", "--out-dir", str(out), "--episodes", "1",
                 "--max-per-group", "2"]) == 0
    assert {p.name for p in out.iterdir()} == {"eval.json", "eval.md", "closed-loop.json", "closed-loop.md", "summary.md",
                                               "closed-loop-work"}
    loop = json.loads((out / "closed-loop.json").read_text())
    assert {p["policy"] for p in loop["pairs"]} == {"oracle", "random", "near-miss"} and len(loop["pairs"]) == 3 * 19
    assert "| closed loop |gap|, oracle | ≤ 0.05 |" in capsys.readouterr().out
    assert main(["fidelity", "--model", str(tmp_path / "nowhere"), "--out-dir", str(out)]) == 2
