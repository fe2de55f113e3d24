"""DreamGymEnv contract tests with the scripted backend (no claims about a real model)."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

import dreamgym_env  # noqa: F401
from dreamgym_env import prompts
from dreamgym_env.backends import GenerationRequest, ScriptedBackend
from dreamgym_env.backends.scripted import default_scripted_response
from dreamgym_env.domains.webarena import WebArenaDomain
from dreamgym_env.env import DreamGymEnv
from dreamgym_env.errors import BackendError, ModelOutputError, UnknownTaskError

CONTRACT_KEYS = {"task_id", "reasoning", "retrieved", "model_latency_s", "valid_action", "source", "error"}


def make(backend=None, **kwargs) -> DreamGymEnv:
    return DreamGymEnv("webarena", backend=backend or ScriptedBackend(), buffer=False, **kwargs)


def test_reset_and_step_follow_the_contract():
    env = make()
    obs, info = env.reset(seed=0, options={"task_id": 27})
    assert obs.startswith("Goal: ") and "State:\n" in obs
    assert CONTRACT_KEYS <= set(info) and info["task_id"] == "27"
    obs, reward, terminated, truncated, info = env.step("click [2]")
    assert CONTRACT_KEYS <= set(info)
    assert info["source"] == "synthetic" and info["valid_action"] is True and info["error"] is None
    assert info["reasoning"] == "scripted: click [2]"
    assert "after click [2]" in obs and reward == 0.0 and not terminated and not truncated


def test_task_filters_and_inline_tasks():
    assert len(WebArenaDomain().tasks) == 812
    gitlab = WebArenaDomain(sites=["gitlab"])
    assert gitlab.tasks and all(t.metadata["sites"] == ["gitlab"] for t in gitlab.tasks)
    task = WebArenaDomain().get_task(0)
    assert task.metadata["eval"] and task.metadata["start_urls"]
    env = make()
    obs, info = env.reset(options={"task": {"task_id": "mine", "goal": "Find the cheapest lamp"}})
    assert info["task_id"] == "mine" and "Find the cheapest lamp" in obs


def test_unknown_task_id_suggests_close_ids():
    env = make()
    with pytest.raises(UnknownTaskError, match="Did you mean"):
        env.reset(options={"task_id": "8120"})
    with pytest.raises(UnknownTaskError):
        make(task_id="nope")
    with pytest.raises(ValueError, match="Unknown WebArena sites"):
        WebArenaDomain(sites=["gitlabb"])


def test_bad_action_string_is_reported_not_raised():
    backend = ScriptedBackend()
    env = make(backend)
    obs0, _ = env.reset(seed=0)
    calls = len(backend.calls)
    obs, reward, terminated, truncated, info = env.step("clik [2]")
    assert reward == 0.0 and not terminated and not truncated
    assert info["valid_action"] is False and "unknown action 'clik'" in info["last_action_error"]
    assert "Last action error" in obs
    assert len(backend.calls) == calls  # the model is not asked about a malformed action
    _, _, _, _, info = env.step('type [3] "unterminated')
    assert info["valid_action"] is False and "malformed type action" in info["last_action_error"]


def test_model_judged_invalid_action_gives_zero_reward():
    def responder(request: GenerationRequest) -> str:
        if request.metadata["kind"] == "initial_state":
            return default_scripted_response(request)
        return json.dumps({"reasoning": "no element 99", "next_state": request.metadata["state"],
                           "reward": 1, "done": False, "valid_action": False})

    env = make(ScriptedBackend(responder))
    env.reset(seed=0)
    _, reward, _, _, info = env.step("click [99]")
    assert reward == 0.0 and info["valid_action"] is False and info["reasoning"] == "no element 99"


@pytest.mark.parametrize("failure", ["malformed", "backend"])
def test_model_failure_truncates_with_error(failure):
    def responder(request: GenerationRequest) -> str:
        if request.metadata["kind"] == "initial_state":
            return default_scripted_response(request)
        if failure == "backend":
            raise TimeoutError("request timed out after 60 s")
        return "I think the page changes {not json"

    backend = ScriptedBackend(responder)
    env = make(backend, max_retries=2)
    obs0, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("click [2]")
    assert truncated is True and terminated is False and reward == 0.0
    assert "after 3 attempt(s)" in info["error"]
    assert ("not valid JSON" in info["error"]) if failure == "malformed" else ("timed out" in info["error"])
    assert obs == obs0  # the state did not move
    assert backend.calls[-3:] == [1, 1, 1]


def test_strict_mode_raises_clear_errors():
    def malformed(request):
        if request.metadata["kind"] == "initial_state":
            return default_scripted_response(request)
        return '{"reasoning": "x", "next_state": "s", "reward": 5, "done": false}'

    env = make(ScriptedBackend(malformed), strict=True, max_retries=0)
    env.reset(seed=0)
    with pytest.raises(ModelOutputError, match="'reward' must be 0 or 1"):
        env.step("click [2]")

    def down(request):
        raise ConnectionError("http://127.0.0.1:9/v1 unreachable")

    env = make(ScriptedBackend(down), strict=True, max_retries=0)
    with pytest.raises(BackendError, match="unreachable"):
        env.reset(seed=0)


def test_initial_state_failure_falls_back_with_error():
    env = make(ScriptedBackend(lambda r: "garbage"), max_retries=1)
    obs, info = env.reset(seed=0, options={"task_id": 0})
    assert "could not generate an initial state" in info["error"]
    assert "__SHOPPING_ADMIN__" in obs  # the fallback names the start URL


def test_retry_recovers_from_one_bad_answer():
    answers = iter(["nonsense"])

    def responder(request):
        if request.metadata["kind"] == "transition" and request.metadata["attempt"] == 0:
            return next(answers)
        return default_scripted_response(request)

    env = make(ScriptedBackend(responder))
    env.reset(seed=0)
    _, _, _, truncated, info = env.step("click [2]")
    assert not truncated and info["error"] is None


def test_stop_is_terminal_and_history_is_capped():
    seen = []

    def responder(request):
        seen.append(request.messages[-1]["content"])
        return default_scripted_response(request)

    env = make(ScriptedBackend(responder), history_length=2)
    env.reset(seed=0)
    for ref in (2, 3, 1, 2):
        env.step(f"click [{ref}]")
    prompt = seen[-1]  # asked about the 4th action: only the two before it are shown
    assert "Previous actions:\n1. click [3]\n2. click [1]\n\nState:" in prompt
    _, reward, terminated, _, _ = env.step("stop [done]")
    assert terminated and reward == 1.0


def test_render_ansi_shows_state_reasoning_reward():
    env = make(render_mode="ansi")
    env.reset(seed=0)
    env.step("click [2]")
    text = env.render()
    assert "Reasoning: scripted: click [2]" in text and "reward 0.0" in text and "State:" in text
    base = env.unwrapped
    assert text == (f"Task {base.task.task_id} | step 1 | reward 0.0\nGoal: {base.goal}\n"
                    f"Reasoning: scripted: click [2]\nState:\n{base.state}\n")


def test_synthetic_and_real_envs_share_one_view():
    """task / goal / state / render come from one base, so code written against the synthetic
    env reads a real one unchanged (sim-to-real)."""
    from dreamgym_env.domains.miniwob.real_env import MiniWoBRealEnv
    from dreamgym_env.domains.webarena.real_env import WebArenaRealEnv
    from dreamgym_env.text_env import TextWebEnv

    for cls in (DreamGymEnv, MiniWoBRealEnv, WebArenaRealEnv):
        assert issubclass(cls, TextWebEnv)
        assert all(name not in vars(cls) for name in ("task", "goal", "state", "render"))
    env = make(render_mode="ansi")
    assert env.render() == "(reset() not called yet)"
    obs, info = env.reset(seed=0)
    assert env.unwrapped.goal == info["goal"] and env.unwrapped.state in obs


def test_step_before_reset_raises():
    with pytest.raises(gym.error.ResetNeeded):
        make().step("click [1]")


def test_prompt_version_follows_the_backends_model_card_unless_given():
    """v3 names the element an action acts on in the action line; a backend trained on v2 (its
    card says so) keeps getting v2 prompts; an explicit prompt_version wins; a backend without a
    card gets what the domain's shipped model reads; unknown ones fail."""
    seen = []

    def responder(request):
        seen.append(request.messages[-1]["content"])
        return default_scripted_response(request)

    def action_line(backend, **kwargs):
        env = make(backend, **kwargs)
        obs, _ = env.reset(seed=0)
        ref = next(line for line in obs.splitlines() if line.startswith("["))[1:].split("]")[0]
        env.step(f"click [{ref}]")
        return env.prompt_version, seen[-1].rsplit("\n", 1)[-1], obs

    card_v3 = ScriptedBackend(responder)
    card_v3.prompt_version = "v3"
    version, line, obs = action_line(card_v3)
    ref = line.split("[")[1].split("]")[0]
    element = next(l for l in obs.splitlines() if l.startswith(f"[{ref}]"))
    assert version == "v3" and line == f"Action: click [{ref}] on{element[element.find(']') + 1:]}"
    card_v2 = ScriptedBackend(responder)
    card_v2.prompt_version = "v2"
    assert action_line(card_v2)[1] == f"Action: click [{ref}]"
    assert action_line(card_v2, prompt_version="v3")[1].startswith(f"Action: click [{ref}] on ")
    assert action_line(ScriptedBackend(responder))[0] == prompts.PROMPT_VERSION
    # a backend that cannot tell (a served model) gets the version the domain's shipped model reads
    miniwob = gym.make("DreamGym-MiniWoB-v0", backend=ScriptedBackend(responder), buffer=False)
    assert miniwob.unwrapped.prompt_version == "v5"
    miniwob.close()
    with pytest.raises(ValueError, match="unknown prompt version 'v9'"):
        make(prompt_version="v9")


def test_miniwob_transition_requests_get_a_budget_that_follows_the_prompt():
    """MiniWoB asks for at most 256 answer tokens beyond half the prompt's characters (so a
    degenerate answer stops well before the 1,024 cap); webarena and an explicit max_tokens keep
    theirs; the initial-state request keeps the domain cap."""
    seen: list[GenerationRequest] = []

    def responder(request):
        seen.append(request)
        return default_scripted_response(request)

    miniwob = gym.make("DreamGym-MiniWoB-v0", backend=ScriptedBackend(responder), buffer=False)
    miniwob.reset(seed=0, options={"task_id": "click-button"})
    miniwob.step("click [2]")
    transition = seen[-1]
    assert transition.metadata["kind"] == "transition"
    chars = sum(len(m["content"]) for m in transition.messages)
    assert transition.max_tokens == min(1024, 256 + (chars + 1) // 2) < 1024
    miniwob.close()

    seen.clear()
    fixed = gym.make("DreamGym-MiniWoB-v0", backend=ScriptedBackend(responder), buffer=False, max_tokens=1024)
    fixed.reset(seed=0, options={"task_id": "click-button"})
    fixed.step("click [2]")
    assert seen[-1].metadata["kind"] == "transition" and seen[-1].max_tokens == 1024
    fixed.close()

    seen.clear()
    web = make(ScriptedBackend(responder))
    web.reset(seed=0, options={"task_id": 27})
    web.step("click [2]")
    assert seen[-1].max_tokens == WebArenaDomain.max_output_tokens
