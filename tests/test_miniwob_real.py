"""The real MiniWoB++ env in a headless Chromium: spaces, determinism, oracles, bad actions,
crash recovery and clean shutdown. The text-only parts (serialiser, admissible actions) run
everywhere; the browser tests need ``pip install "dreamgym-env[miniwob]"`` plus Chromium and
ChromeDriver (``apt-get install chromium chromium-driver``)."""

from __future__ import annotations

import os
import signal
import time
import warnings

import gymnasium as gym
import pytest

from dreamgym_env.domains.miniwob import MiniWoBDomain, admissible_actions, parse_state
from dreamgym_env.domains.miniwob.browser import is_miniwob_available, live_processes_in_group
from dreamgym_env.domains.miniwob.oracles import OraclePolicy, oracle_action, parse_observation
from dreamgym_env.domains.miniwob.serialize import dom_elements, serialize_dom, type_candidates
from dreamgym_env.domains.miniwob.tasks import TASK_IDS

ENV_ID = "DreamGym-MiniWoB-Real-v0"
INFO_KEYS = {
    "task_id", "goal", "trajectory_id", "step", "source", "reasoning", "retrieved",
    "model_latency_s", "valid_action", "last_action_error", "error", "admissible_actions", "raw_reward",
}

browser = pytest.mark.skipif(
    not is_miniwob_available(),
    reason="needs miniwob + selenium (pip install 'dreamgym-env[miniwob]') and Chromium + ChromeDriver "
    "(apt-get install chromium chromium-driver, or MINIWOB_CHROME_BINARY / MINIWOB_CHROMEDRIVER)",
)


def _ensure_registered() -> None:
    if ENV_ID not in gym.registry:  # the package registers it; this keeps the test self-contained
        gym.register(id=ENV_ID, entry_point="dreamgym_env.domains.miniwob.real_env:MiniWoBRealEnv",
                     max_episode_steps=MiniWoBDomain.max_episode_steps)


# -- text only -------------------------------------------------------------------------------------------

DOM = {
    "tag": "BODY", "ref": 1, "children": [
        {"tag": "DIV", "ref": 2, "id": "wrap", "children": [
            {"tag": "DIV", "ref": 3, "id": "area", "children": [
                {"tag": "LABEL", "ref": 5, "children": [
                    {"tag": "INPUT_checkbox", "ref": 6, "value": True, "id": "ch0", "children": []},
                    {"tag": "t", "ref": -1, "text": "AU", "children": []},
                ]},
                {"tag": "INPUT_text", "ref": 7, "value": 'say "hi"', "focused": True, "children": []},
                {"tag": "SELECT", "ref": 8, "children": []},
                {"tag": "SPAN", "ref": 9, "classes": "ui-icon star", "children": []},
                {"tag": "BUTTON", "ref": 4, "text": "Submit", "children": []},
                {"tag": "DIV", "ref": 10, "classes": "ui-helper-hidden-accessible", "children": [
                    {"tag": "DIV", "ref": 11, "text": "3 results are available", "children": []}]},
            ]},
        ]},
    ],
}
SELECTS = {"8": {"value": "Peru", "options": ["Chile", "Peru"]}}


def test_serialize_lines_sorted_by_ref_and_parse_back():
    state = serialize_dom(DOM, SELECTS)
    assert state.splitlines() == [
        '[4] button "Submit"',
        '[5] label "AU"',
        '[6] input_checkbox id="ch0" checked',
        '[7] input_text value="say \\"hi\\"" focused',
        '[8] select value="Peru" options=["Chile","Peru"]',
        '[9] span class="star"',
    ]
    parsed = parse_state(state)
    assert [e.line() for e in parsed] == state.splitlines()
    assert parsed[3].value == 'say "hi"' and parsed[4].options == ["Chile", "Peru"]
    assert [e.ref for e in dom_elements(DOM, SELECTS)] == ["4", "5", "6", "7", "8", "9"]


def test_admissible_actions_from_text_alone():
    state = serialize_dom(DOM, SELECTS)
    goal = 'Enter "Kasie" and forward that email to Coletta.'
    assert type_candidates(goal) == ["Kasie", "Coletta"]
    actions = MiniWoBDomain().admissible_actions(state, goal)
    assert actions == admissible_actions(state, goal)
    assert {"click [4]", "click [6]", 'type [7] "Kasie"', 'type [7] "Coletta"', 'select [8] "Chile"'} <= set(actions)
    assert "click [8]" not in actions  # lists are chosen with select
    grammar = MiniWoBDomain.grammar
    for action in actions:
        grammar.parse(action)  # all well-formed
    # a predicted state with odd lines still gives actions for what parses
    assert admissible_actions('[3] button "Go"\nnot an element\n[x] div', "") == ["click [3]", "click [x]"]


def test_domain_tasks_and_oracle_reads_text():
    domain = MiniWoBDomain()
    assert domain.name == "miniwob" and domain.state_format == "patch"
    assert len(domain.tasks) >= 12 and domain.task_ids == list(TASK_IDS)
    assert domain.get_task("email-inbox").metadata["template"].startswith("Find the email by")
    state = '[5] label "AU"\n[6] input_checkbox\n[7] label "HF2"\n[8] input_checkbox checked\n[9] button "Submit"'
    assert oracle_action("click-checkboxes", "Select AU and click Submit.", state) == "click [6]"
    assert oracle_action("click-checkboxes", "Select AU, HF2 and click Submit.",
                         state.replace("[6] input_checkbox", "[6] input_checkbox checked")) == "click [9]"
    goal, error, body = parse_observation(domain.format_observation("Do it.", state, "bad"))
    assert (goal, error, body) == ("Do it.", "bad", state)


# -- real browser -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env():
    from dreamgym_env.domains.miniwob.real_env import MiniWoBRealEnv

    env = MiniWoBRealEnv()
    yield env
    env.close()


@browser
def test_check_env_passes_without_warnings():
    from gymnasium.utils.env_checker import check_env

    _ensure_registered()
    env = gym.make(ENV_ID, task_ids=["click-button", "enter-text", "choose-list"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any checker warning fails the test
            check_env(env.unwrapped, skip_render_check=True)
        assert env.spec.max_episode_steps == MiniWoBDomain.max_episode_steps
    finally:
        env.close()


@browser
def test_reset_is_deterministic_and_info_complete(env):
    obs, info = env.reset(seed=7, options={"task_id": "email-inbox"})
    env.reset(seed=8, options={"task_id": "email-inbox"})  # another page in between
    obs2, info2 = env.reset(seed=7, options={"task_id": "email-inbox"})
    assert obs == obs2 and info == info2
    assert INFO_KEYS <= set(info)
    assert info["source"] == "real" and info["reasoning"] == "" and info["retrieved"] == []
    assert info["goal"].startswith("Find the email by") and obs.startswith(f"Goal: {info['goal']}\nState:\n")
    refs = [int(e.ref) for e in parse_state(env.state)]
    assert refs == sorted(refs) and len(refs) == len(set(refs))
    # the default draws a family with the env's generator
    families = {env.reset(seed=s)[1]["task_id"] for s in range(12)}
    assert len(families) > 3


@browser
def test_oracle_solves_every_family(env):
    policy = OraclePolicy()
    unsolved = []
    for family in TASK_IDS:
        solved = False
        for seed in (0, 1):
            obs, info = env.reset(seed=seed, options={"task_id": family})
            policy.reset()
            for _ in range(MiniWoBDomain.max_episode_steps):
                obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
                assert info["valid_action"], (family, info["last_action_error"])
                if terminated or truncated:
                    break
            if reward == 1.0:
                assert terminated and info["raw_reward"] > 0
                solved = True
                break
        if not solved:
            unsolved.append(family)
    assert not unsolved and policy.fallbacks == 0


@browser
def test_terminal_state_keeps_the_episode_refs(env):
    obs, info = env.reset(seed=3, options={"task_id": "login-user"})
    before = {e.ref for e in parse_state(env.state)}
    for action in ['type [7] "x"', 'type [10] "y"', "click [11]"]:  # wrong login: a failure
        obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and reward == 0.0 and info["raw_reward"] == -1.0
    assert {e.ref for e in parse_state(env.state)} == before
    obs, reward, terminated, truncated, info = env.step("click [11]")  # stepping after the end
    assert terminated and reward == 0.0 and info["error"]


@browser
def test_bad_actions_are_reported_not_raised(env):
    obs, info = env.reset(seed=0, options={"task_id": "choose-list"})
    state = env.state
    select = next(e for e in parse_state(state) if e.tag == "select")
    for action in ["jump [4]", "click 4", "click [999]", "click [abc]", f'select [{select.ref}] "Atlantis"',
                   'select [5] "x"', "press [NoSuchKey]", 42]:
        obs, reward, terminated, truncated, info = env.step(action)
        assert (reward, terminated, truncated) == (0.0, False, False), action
        assert info["valid_action"] is False and info["last_action_error"], action
        assert f"Last action error: {info['last_action_error']}" in obs and env.state == state
    option = next(o for o in select.options if o != select.value)
    obs, reward, terminated, truncated, info = env.step(f'select [{select.ref}] "{option}"')
    assert info["valid_action"] and f'value="{option}"' in obs and "Last action error" not in obs


@browser
def test_killed_driver_truncates_then_restarts(env):
    env.reset(seed=0, options={"task_id": "click-button"})
    group = env.browser.driver_pid
    os.kill(group, signal.SIGKILL)
    obs, reward, terminated, truncated, info = env.step("click [4]")
    assert truncated and not terminated and reward == 0.0 and "browser" in info["error"]
    _wait_gone(group)
    obs, info = env.reset(seed=0, options={"task_id": "click-button"})
    assert env.browser.driver_pid != group and env.browser.alive
    obs, reward, terminated, truncated, info = env.step(OraclePolicy().act(obs, info))
    assert reward == 1.0 and info["error"] is None
    # killed between episodes: reset restarts it
    os.kill(env.browser.driver_pid, signal.SIGKILL)
    obs, info = env.reset(seed=1, options={"task_id": "enter-text"})
    assert info["goal"].startswith("Enter") and env.browser.alive


@browser
def test_close_leaves_no_chromium_process():
    from dreamgym_env.domains.miniwob.real_env import MiniWoBRealEnv

    env = MiniWoBRealEnv(task_id="click-test")
    env.reset(seed=0)
    group = env.browser.driver_pid
    assert len(live_processes_in_group(group)) > 1  # chromedriver and Chromium's processes
    env.close()
    _wait_gone(group)
    env.close()  # twice is fine


def _wait_gone(group: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while live_processes_in_group(group):
        assert time.monotonic() < deadline, f"processes left: {live_processes_in_group(group)}"
        time.sleep(0.1)


@browser
def test_a_browser_that_cannot_start_is_a_clear_error():
    from dreamgym_env.domains.miniwob.browser import BrowserError
    from dreamgym_env.domains.miniwob.real_env import MiniWoBRealEnv

    env = MiniWoBRealEnv(chrome_binary="/bin/false", max_restarts=1)
    with pytest.raises(BrowserError, match="could not start Chromium"):
        env.reset(seed=0)
    env.close()
