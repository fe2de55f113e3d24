"""DreamGym envs as TRL ``environment_factory`` classes, and GRPOTrainer running on them.

The env is DreamGym-WebArena-v0 on the scripted backend (``stop [answer]`` succeeds, nothing
else does): contract tests of the adapter and of its fit with TRL, not claims about a model.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from pathlib import Path

import pytest

from dreamgym_env.integrations.trl_env import (
    DreamGymToolEnv,
    EpisodeOverError,
    make_tool_env,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = {"backend": "scripted", "buffer": False}
WEBARENA_TOOLS = {"click", "type_text", "hover", "press", "scroll", "goto", "go_back", "go_forward", "new_tab",
                  "tab_focus", "close_tab", "stop"}

needs_trl = pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason='trl is not installed: pip install "dreamgym-env[trl]"')


def public_functions(cls: type) -> set[str]:
    """What TRL sees: public functions of the class (its tools, plus reset and get_reward)."""
    return {name for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction) if not name.startswith("_")}


def load_example():
    spec = importlib.util.spec_from_file_location("trl_grpo_example", ROOT / "examples" / "trl_grpo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_tool_formats_its_action_and_steps_the_env():
    env = DreamGymToolEnv(**SCRIPTED)
    first = env.reset(prompt=[{"role": "user", "content": ""}], seed=3)
    assert first.startswith(DreamGymToolEnv.instructions) and "\nGoal: " in first and "State:\n" in first
    calls = [
        (env.click, ("12",), "click [12]"),
        (env.click, ("[4]",), "click [4]"),
        (env.type_text, ("3", 'he said "hi"', True), 'type [3] "he said \\"hi\\"" enter'),
        (env.type_text, ("3", "plain"), 'type [3] "plain"'),
        (env.hover, ("5",), "hover [5]"),
        (env.press, ("Control+a",), "press [Control+a]"),
        (env.scroll, ("Down",), "scroll [down]"),
        (env.goto, ("http://localhost:7770/",), "goto [http://localhost:7770/]"),
        (env.go_back, (), "go_back"),
        (env.go_forward, (), "go_forward"),
        (env.new_tab, (), "new_tab"),
        (env.tab_focus, (1,), "tab_focus [1]"),
        (env.close_tab, (), "close_tab"),
    ]
    for tool, args, action in calls:
        obs = tool(*args)
        assert env.actions[-1] == action
        assert env.last_info["last_action_error"] == "", (action, env.last_info["last_action_error"])
        assert repr(f"after {action}") in obs  # the scripted model echoes the action into the next state
    assert env.get_reward() == 0.0 and not env.done
    end = env.stop("42")
    assert env.actions[-1] == "stop [42]" and env.get_reward() == 1.0 and env.done
    assert "Episode over (task completed), reward 1" in end
    with pytest.raises(EpisodeOverError, match="task completed"):
        env.click("1")
    assert env.total_steps == len(calls) + 1


def test_a_rejected_action_is_error_text_and_the_episode_goes_on():
    env = DreamGymToolEnv(**SCRIPTED)
    env.reset(seed=0)
    obs = env.scroll("sideways")
    assert "Last action error: malformed scroll action" in obs and not env.done
    assert "after click [2]" in env.click("2")  # still playable
    assert "Episode over (ended without success), reward 0." in env.stop()  # no answer: the scripted task fails
    assert env.get_reward() == 0.0 and env.done


def test_tools_raise_before_reset_and_after_truncation():
    cls = make_tool_env("DreamGym-WebArena-v0", max_episode_steps=2, **SCRIPTED)
    env = cls()
    with pytest.raises(EpisodeOverError, match="reset"):
        env.click("1")
    env.reset(seed=1)
    env.click("1")
    assert "Episode over (truncated: step limit reached)" in env.click("2")
    with pytest.raises(EpisodeOverError, match="step limit"):
        env.stop("x")
    env.reset(seed=1)  # a pooled instance is reused by TRL: reset starts over
    assert env.actions == [] and not env.done and env.get_reward() == 0.0


def test_reset_reads_seed_and_task_id_and_the_same_seed_starts_alike(monkeypatch):
    a, b = DreamGymToolEnv(**SCRIPTED), DreamGymToolEnv(**SCRIPTED)
    assert a.reset(prompt="x", seed=11) == b.reset(prompt="y", seed=11)  # a GRPO group starts alike
    assert a.reset(task_id="27", extra_column=1) and a.last_info["task_id"] == "27"
    a.reset(task={"goal": "Find the cheapest mug"})
    assert "Goal: Find the cheapest mug" in a.reset(task={"goal": "Find the cheapest mug"}, seed=0)
    monkeypatch.setattr("dreamgym_env.integrations.trl_env._ToolEnvBase._warned_unseeded", False)
    with pytest.warns(UserWarning, match="seed"):
        a.reset(prompt="no seed column")


def test_the_class_has_exactly_the_tools_trl_should_see():
    from transformers.utils import get_json_schema

    assert public_functions(DreamGymToolEnv) == WEBARENA_TOOLS | {"reset", "get_reward"}
    env = DreamGymToolEnv(**SCRIPTED)
    for name in WEBARENA_TOOLS:
        schema = get_json_schema(getattr(env, name))["function"]
        assert schema["name"] == name and schema["description"]
        assert all(p.get("description") for p in schema["parameters"].get("properties", {}).values())
    assert get_json_schema(env.type_text)["function"]["parameters"]["required"] == ["ref", "text"]


def test_make_tool_env_takes_the_verbs_of_the_grammar():
    cls = make_tool_env("DreamGym-WebArena-v0", **SCRIPTED)
    assert cls.__name__ == "DreamGymWebArenav0ToolEnv" and public_functions(cls) == public_functions(DreamGymToolEnv)
    small = make_tool_env("DreamGym-WebArena-v0", verbs=["click", "select", "stop"], name="Small", **SCRIPTED)
    assert public_functions(small) == {"click", "select_option", "stop", "reset", "get_reward"}
    env = small()
    env.reset(seed=0)
    assert "unknown action 'select'" in env.select_option("2", "A")  # WebArena's grammar has no select
    with pytest.raises(ValueError, match="No tool for verbs"):
        make_tool_env("DreamGym-WebArena-v0", verbs=["fly"], **SCRIPTED)


@needs_trl
def test_grpo_trainer_takes_the_class_resets_with_rows_and_scores_with_get_reward(tmp_path, monkeypatch):
    """One real GRPO step with a random tiny policy (it never calls a tool: the reward is 0)."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    example = load_example()
    policy = example.build_tiny_policy(tmp_path / "policy", hidden_size=64)
    cls = make_tool_env("DreamGym-WebArena-v0", verbs=["click", "stop"], name="TinyWebArena", **SCRIPTED)
    resets = []

    class Recording(cls):
        def reset(self, **row):
            resets.append(dict(row))
            return super().reset(**row)

    rows = [{"prompt": [{"role": "user", "content": ""}], "seed": s} for s in (5, 6)]
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=8, learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to="none",
        bf16=False, use_cpu=True, top_k=5, seed=0,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32),
        processing_class=AutoTokenizer.from_pretrained(policy), train_dataset=Dataset.from_list(rows * 2),
        args=config, environment_factory=Recording,
    )
    assert "Recording" in trainer.reward_func_names  # get_reward became a reward source
    assert {t.__name__ for t in trainer.tools} == {"click", "stop"}
    trainer.train()
    assert sorted(r["seed"] for r in resets) == [5, 5, 6, 6]  # each row reset num_generations envs
    assert all("prompt" in r for r in resets)
    pool = trainer._environment_pool[None]
    starts = {e.last_info["task_id"] for e in pool}
    assert len(pool) == 4 and len(starts) <= 2
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert log["rewards/Recording/mean"] == 0.0


@pytest.mark.slow
@needs_trl
def test_example_trains_a_tool_calling_policy_on_the_env(tmp_path, monkeypatch):
    """examples/trl_grpo.py on a small budget: tool calls reach the env, rewards vary, weights move."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    example = load_example()
    summary = example.main(["--output_dir", str(tmp_path), "--verbs", "click,stop", "--max_steps", "2"])
    assert summary["steps"] == 2
    assert max(summary["tool_call_frequency"]) > 0 and summary["env_steps"] > 0
    assert set(summary["env_actions"]) <= {"click", "stop"} and summary["env_actions"]
    assert max(summary["reward_std"]) > 0  # some rollouts of a group succeed, some do not
    assert summary["parameters_changed"] > 0
    assert summary["warmup_loss"][1] < 0.5 * summary["warmup_loss"][0]
    assert os.path.isdir(tmp_path / "tiny-policy")


def _miniwob_available() -> bool:
    try:
        from dreamgym_env.domains.miniwob.browser import is_miniwob_available
    except ImportError:
        return False
    return is_miniwob_available()


@pytest.mark.skipif(not _miniwob_available(), reason="needs miniwob + selenium and Chromium + ChromeDriver")
def test_real_twin_through_the_tool_env_solves_a_task():
    """Sim-to-real is a change of env id: the same tools drive the real MiniWoB page."""
    from dreamgym_env.domains.actions import VERBS, ActionGrammar
    from dreamgym_env.domains.miniwob.oracles import OraclePolicy

    cls = make_tool_env("DreamGym-MiniWoB-Real-v0")
    assert public_functions(cls) == {"click", "type_text", "select_option", "press", "reset", "get_reward"}
    assert "call stop" not in cls.instructions  # MiniWoB pages end their own episodes
    env = cls()
    try:
        obs = env.reset(seed=1, task_id="choose-list")[len(cls.instructions):]
        policy, grammar = OraclePolicy(), ActionGrammar(list(VERBS))
        for _ in range(10):
            action = grammar.parse(policy.act(obs, env.last_info))
            args = action.args
            if action.verb == "click":
                obs = env.click(args["ref"])
            elif action.verb == "type":
                obs = env.type_text(args["ref"], args["text"], press_enter="enter" in args)
            elif action.verb == "select":
                obs = env.select_option(args["ref"], args["text"])
            else:
                obs = env.press(args["value"])
            if env.done:
                break
        assert env.done and env.get_reward() == 1.0 and env.last_info["source"] == "real"
        assert "Episode over (task completed), reward 1" in obs
    finally:
        env.env.close()
