"""WebArenaRealEnv against real pages: a tiny site served on loopback, driven through BrowserGym
and Chromium by the same code that serves WebArena (serialiser, action mapper, BrowserGym env,
and for task 70 BrowserGym's WebArena task with WebArena's own evaluator)."""

from __future__ import annotations

import ast
import http.server
import importlib.util
import threading
from pathlib import Path

import gymnasium as gym
import pytest

import dreamgym_env  # noqa: F401  (registers the ids)

from dreamgym_env.domains.webarena.axtree import (
    axtree_to_text,
    from_browsergym_action,
    to_browsergym_action,
)
from dreamgym_env.domains.webarena.domain import WebArenaDomain
from dreamgym_env.domains.webarena.real_env import (
    WEBARENA_ENV_VARS,
    WebArenaConfigError,
    find_chromium,
    is_browsergym_available,
    webarena_urls,
)
from dreamgym_env.errors import DreamGymError, UnknownTaskError

needs_browsergym = pytest.mark.skipif(
    not is_browsergym_available(), reason="browsergym-core/playwright not installed: pip install 'dreamgym-env[webarena]'"
)
needs_browser = pytest.mark.skipif(
    not is_browsergym_available() or find_chromium() is None and not Path("~/.cache/ms-playwright").expanduser().exists(),
    reason="needs browsergym-core, playwright and a Chromium (apt-get install chromium, or playwright install chromium)",
)

HOME = """<!doctype html><html><head><title>Test shop</title></head><body>
<h1>Welcome</h1>
<a href="/next">Next page</a>
<form onsubmit="document.getElementById('out').textContent='Searched: '+document.getElementById('q').value; return false;">
  <label for="q">Search</label><input id="q" type="text"><button type="submit">Go</button>
</form>
<select aria-label="Colour"><option>Red</option><option>Blue</option></select>
<button onclick="document.getElementById('out').textContent='Clicked!'">Press me</button>
<p id="out">Nothing yet</p>
</body></html>"""
NEXT = "<!doctype html><html><head><title>Second page</title></head><body><h1>Second page</h1></body></html>"
MAP = """<!doctype html><html><head><title>OpenStreetMap</title></head><body>
<input aria-label="Search" type="text"><p>Carnegie Mellon University, 5000 Forbes Avenue, Pittsburgh, 15213</p>
</body></html>"""
PAGES = {"/": HOME, "/next": NEXT, "/map": MAP}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGES.get(self.path.split("?")[0].rstrip("/") or "/", PAGES["/"] if self.path.startswith("/site") else None)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def env():
    from dreamgym_env.domains.webarena.real_env import WebArenaRealEnv

    env = WebArenaRealEnv(slow_mo=0, timeout=3000, pre_observation_delay=0.1, render_mode="ansi")
    yield env
    env.close()


# ------------------------------------------------------------------ no browser
def test_missing_site_variables_name_every_variable(monkeypatch):
    for key in WEBARENA_ENV_VARS:
        monkeypatch.delenv(f"WA_{key}", raising=False)
    monkeypatch.setenv("WA_GITLAB", "http://127.0.0.1:1")
    with pytest.raises(WebArenaConfigError) as err:
        webarena_urls()
    message = str(err.value)
    for key in WEBARENA_ENV_VARS:
        assert (f"WA_{key}" in message) == (key != "GITLAB"), key
    assert "export WA_SHOPPING=" in message


@needs_browsergym
def test_variable_names_are_the_ones_browsergym_reads():
    spec = importlib.util.find_spec("browsergym")
    instance = Path(list(spec.submodule_search_locations)[0]) / "webarena" / "instance.py"
    if not instance.exists():
        pytest.skip("browsergym-webarena not installed")
    tree = ast.parse(instance.read_text())
    found = next(
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ENV_VARS"
    )
    assert tuple(found) == WEBARENA_ENV_VARS


def test_axtree_serialiser_format():
    def node(i, role, name="", children=(), bid=None, value=None, props=(), ignored=False):
        n = {"nodeId": str(i), "role": {"value": role}, "name": {"value": name}, "childIds": [str(c) for c in children],
             "properties": [{"name": k, "value": {"value": v}} for k, v in props], "ignored": ignored}
        if bid is not None:
            n["browsergym_id"] = bid
        if value is not None:
            n["value"] = {"value": value}
        return n

    tree = {"nodes": [
        node(1, "RootWebArea", "Shop", [2, 3, 5, 7, 8], props=[("focused", True), ("url", "http://x/")]),
        node(2, "link", "Home", [9], bid="12"),
        node(3, "generic", "", [4], bid="13"),  # nameless wrapper: dropped, child kept one level up
        node(4, "textbox", "Search", [10], bid="14", value="lamp", props=[("focused", True), ("editable", "plaintext")]),
        node(5, "combobox", "Colour", [6], bid="15", value="Red", props=[("expanded", False), ("hasPopup", "menu")]),
        node(6, "option", "Red", bid="16", props=[("selected", True)]),
        node(7, "StaticText", "Hello"),
        node(8, "none", "", [11], ignored=True),
        node(9, "InlineTextBox", "Home"),
        node(10, "StaticText", "lamp"),  # the textbox's value again: dropped
        node(11, "checkbox", "Agree", bid="17", props=[("checked", "true"), ("disabled", False)]),
    ]}
    assert axtree_to_text(tree) == (
        "RootWebArea 'Shop' focused url='http://x/'\n"
        "\t[12] link 'Home'\n"
        "\t[14] textbox 'Search' value='lamp' focused\n"
        "\t[15] combobox 'Colour' value='Red' hasPopup='menu'\n"
        "\t\t[16] option 'Red' selected\n"
        "\tStaticText 'Hello'\n"
        "\t[17] checkbox 'Agree' checked"
    )
    assert axtree_to_text(tree, max_lines=2).splitlines()[-1] == "…"


@needs_browsergym
@pytest.mark.parametrize("action", [
    "click [12]", "hover [a3]", 'type [7] "hello \\"world\\""', 'type [7] "x" enter', 'select [5] "Blue"',
    "press [Enter]", "scroll [down]", "scroll [up]", "goto [http://127.0.0.1/x?a=1]", "go_back", "go_forward",
    "new_tab", "tab_focus [1]", "close_tab", "stop [15213]", "stop",
])
def test_action_mapping_round_trips_through_browsergym_parser(action):
    from browsergym.core.action.functions import keyboard_press
    from browsergym.core.action.highlevel import HighLevelActionSet

    from dreamgym_env.domains.actions import VERBS, ActionGrammar

    parsed = ActionGrammar(list(VERBS)).parse(action)
    code = to_browsergym_action(parsed)
    strict = HighLevelActionSet(subsets=["chat", "infeas", "bid", "nav", "tab", "custom"],
                                custom_actions=[keyboard_press], strict=True)
    assert strict.to_python_code(code)  # BrowserGym's own parser accepts it
    assert from_browsergym_action(code) == action


@needs_browsergym
def test_browsergym_actions_without_equivalent():
    assert from_browsergym_action("noop()") is None
    assert from_browsergym_action("mouse_click(10, 20)") is None
    assert from_browsergym_action("not python at all") is None
    assert from_browsergym_action("report_infeasible('no such page')") == "stop [N/A]"
    assert from_browsergym_action("press('7', 'ControlOrMeta+a')") == "press [ControlOrMeta+a]"


# --------------------------------------------------------------- real browser
def _ref(state: str, element: str) -> str:
    """The bid of the first line of ``state`` that shows ``element`` (e.g. "button 'Go'")."""
    for line in state.splitlines():
        line = line.strip()
        if line.startswith("[") and f"] {element}" in line:
            return line[1 : line.index("]")]
    raise AssertionError(f"{element!r} not in state:\n{state}")


@needs_browser
def test_loopback_page_observation_and_actions(env, site):
    obs, info = env.reset(seed=0, options={"task": {"task_id": "local-1", "goal": "Search for lamp", "start_url": site + "/"}})
    assert obs.startswith("Goal: Search for lamp\nState:\nRootWebArea 'Test shop' focused url=")
    for element in ("link 'Next page'", "textbox 'Search'", "button 'Go'", "button 'Press me'",
                    "combobox 'Colour' value='Red'", "option 'Blue'"):
        _ref(env.state, element)
    assert "StaticText 'Nothing yet'" in env.state
    assert info["source"] == "real" and info["step"] == 0 and info["valid_action"] and info["error"] is None

    # The info keys are those of the synthetic env (plus the url and the mapped action).
    from dreamgym_env.backends import ScriptedBackend
    from dreamgym_env.env import DreamGymEnv

    synthetic = DreamGymEnv(backend=ScriptedBackend(), buffer=False)
    _, syn_info = synthetic.reset(seed=0, options={"task_id": "70"})
    assert set(syn_info) <= set(info)

    # type fills the box, and " enter" submits the form.
    box = _ref(env.state, "textbox 'Search'")
    obs, reward, terminated, truncated, info = env.step(f'type [{box}] "lamp" enter')
    assert info["valid_action"], info
    assert f"[{box}] textbox 'Search' value='lamp'" in env.state
    assert "StaticText 'Searched: lamp'" in env.state
    assert (reward, terminated, truncated) == (0.0, False, False)

    # click changes the page.
    env.step(f"click [{_ref(env.state, 'button ' + repr('Press me'))}]")
    assert "StaticText 'Clicked!'" in env.state

    # A malformed action and an action on a missing element are reported, not raised.
    obs, reward, terminated, truncated, info = env.step("clik [3]")
    assert not info["valid_action"] and "unknown action 'clik'" in info["last_action_error"]
    assert "Last action error: unknown action 'clik'" in obs and reward == 0.0 and not terminated
    obs, reward, _, _, info = env.step("click [9999]")
    assert not info["valid_action"] and "9999" in info["last_action_error"] and reward == 0.0
    obs, _, _, _, info = env.step('select [1] "Blue"')  # not a WebArena verb
    assert not info["valid_action"] and "unknown action 'select'" in info["last_action_error"]

    # Navigation: a link, go_back, goto.
    _, _, _, _, info = env.step(f"click [{_ref(env.state, 'link ' + repr('Next page'))}]")
    assert env.state.startswith("RootWebArea 'Second page'") and info["step"] == 6
    env.step("go_back")
    assert env.state.startswith("RootWebArea 'Test shop'")
    _, _, _, _, info = env.step(f"goto [{site}/next]")
    assert info["url"] == f"{site}/next" and "heading 'Second page'" in env.state
    assert "Task local-1 | step 8" in env.render()

    # stop ends the episode (the open-ended task has no evaluator: reward 0).
    obs, reward, terminated, truncated, info = env.step("stop [done]")
    assert terminated and not truncated and reward == 0.0 and info["browsergym_action"] == "send_msg_to_user('done')"
    _, _, terminated, _, info = env.step("click [1]")
    assert terminated and "call reset()" in info["error"]


@needs_browser
def test_webarena_task_is_graded_by_webarena_evaluator(env, site, monkeypatch, tmp_path):
    """Task 70 ("What is the zip code of Carnegie Mellon University?", map site, exact match
    "15213") through browsergym.webarena's GenericWebArenaTask, with every WebArena site on the
    loopback server."""
    if importlib.util.find_spec("browsergym.webarena") is None:
        pytest.skip("browsergym-webarena not installed")
    import nltk

    # browsergym.webarena downloads NLTK's punkt_tab on import; exact-match grading never
    # tokenises, so an empty stand-in directory avoids the download here.
    (tmp_path / "tokenizers" / "punkt_tab").mkdir(parents=True)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])
    for key in WEBARENA_ENV_VARS:
        monkeypatch.setenv(f"WA_{key}", f"{site}/map" if key == "MAP" else f"{site}/site-{key.lower()}")

    obs, info = env.reset(seed=1, options={"task_id": 70})
    assert info["task_id"] == "70" and info["url"] == f"{site}/map"
    assert obs.startswith(f"Goal: {WebArenaDomain().get_task(70).goal}\nState:\nRootWebArea 'OpenStreetMap'")
    _, reward, terminated, _, info = env.step("stop [15213]")
    assert (reward, terminated, info["valid_action"]) == (1.0, True, True)

    env.reset(seed=2, options={"task_id": 70})
    _, _, terminated, _, _ = env.step("scroll [down]")
    assert not terminated
    _, reward, terminated, _, _ = env.step("stop [15217]")
    assert (reward, terminated) == (0.0, True)


@needs_browser
def test_webarena_lite_task_is_graded_by_the_lite_grader(site, monkeypatch, tmp_path):
    """Lite task 71 ("What is the zip code of Chatham University?", must include "15232") in
    DreamGym-WebArenaLite-Real-v0, through browsergym.webarenalite, on the loopback server."""
    if importlib.util.find_spec("browsergym.webarenalite") is None:
        pytest.skip("browsergym-webarenalite not installed")
    import nltk

    (tmp_path / "tokenizers" / "punkt_tab").mkdir(parents=True)  # see the test above
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])
    for key in WEBARENA_ENV_VARS:
        monkeypatch.setenv(f"WA_{key}", f"{site}/map" if key == "MAP" else f"{site}/site-{key.lower()}")
    env = gym.make("DreamGym-WebArenaLite-Real-v0", slow_mo=0, timeout=3000, pre_observation_delay=0.1).unwrapped
    try:
        obs, info = env.reset(seed=1, options={"task_id": 71})
        assert info["task_id"] == "71" and obs.startswith("Goal: What is the zip code of Chatham University?\n")
        _, reward, terminated, _, _ = env.step("stop [The zip code is 15232]")
        assert (reward, terminated) == (1.0, True)
        env.reset(seed=2, options={"task_id": 71})
        _, reward, terminated, _, _ = env.step("stop [15213]")
        assert (reward, terminated) == (0.0, True)
        with pytest.raises(UnknownTaskError):
            env.reset(options={"task_id": 70})  # a WebArena task, not one of Lite's 165
    finally:
        env.close()


@needs_browser
def test_webarena_task_without_sites_raises_before_starting_a_browser(env, monkeypatch):
    for key in WEBARENA_ENV_VARS:
        monkeypatch.delenv(f"WA_{key}", raising=False)
    with pytest.raises(WebArenaConfigError, match="WA_SHOPPING_ADMIN"):
        env.reset(options={"task_id": 0})
    with pytest.raises(DreamGymError, match="start_url"):
        env.reset(options={"task": {"task_id": "mine", "goal": "g"}})


@needs_browser
def test_close_closes_the_browser_and_frees_asyncio(env, site):
    import asyncio

    env.reset(options={"task": {"goal": "look", "start_url": site + "/next"}})
    browser = env.browser_env.browser
    assert browser.is_connected()
    env.close()
    assert env.browser_env is None and not browser.is_connected()
    asyncio.run(asyncio.sleep(0))  # Playwright's sync API no longer holds this thread's loop
    env.close()  # twice is fine


# ------------------------------------------------------------------ WebArena-Lite, no browser
def test_webarena_lite_domain_is_the_papers_165_tasks_with_their_own_intents():
    from dreamgym_env.domains import make_domain
    from dreamgym_env.backends import ScriptedBackend

    lite = make_domain("webarena-lite")
    ids = {int(t.task_id) for t in lite.tasks}
    assert lite.name == "webarena" and len(ids) == 165 and ids <= {int(t.task_id) for t in WebArenaDomain().tasks}
    assert lite.get_task(4).goal == "What are the top-3 best-selling product in Jan 2023"  # Lite's, not verified's
    assert WebArenaDomain().get_task(4).goal != lite.get_task(4).goal
    assert {int(t.task_id) for t in make_domain("webarena-lite", sites=["map"]).tasks} < ids
    with pytest.raises(ValueError, match="subset"):
        WebArenaDomain(subset="mini")
    env = gym.make("DreamGym-WebArenaLite-v0", backend=ScriptedBackend(), buffer=False)
    _, info = env.reset(seed=0)
    assert int(info["task_id"]) in ids and info["goal"] == lite.get_task(info["task_id"]).goal
    env.close()
