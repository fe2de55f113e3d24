"""Trajectory importers: episode JSONL, and BrowserGym/AgentLab experiment logs written by
BrowserGym's own experiment loop (a real episode on a loopback page) or its StepInfo class."""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import logging
import os
import pickle
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dreamgym_env.domains.webarena.real_env import (
    find_chromium,
    is_browsergym_available,
)
from dreamgym_env.importers import (
    ImportFormatError,
    add_import_parser,
    import_browsergym,
    import_browsergym_experiment,
    import_jsonl_episodes,
    load_pickle,
)
from dreamgym_env.schema import Trajectory

needs_browsergym_experiments = pytest.mark.skipif(
    not is_browsergym_available() or __import__("importlib").util.find_spec("browsergym.experiments") is None,
    reason="browsergym-core and browsergym-experiments not installed (pip install browsergym-experiments)",
)


# ------------------------------------------------------------------------------ JSONL
def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


EPISODE = {
    "task_id": 70, "goal": "What is the zip code of CMU?", "domain": "webarena",
    "steps": [
        {"state": "[1] RootWebArea 'Map'\n\t[4] textbox 'Search'", "action": 'type [4] "CMU" enter', "reward": 0, "done": False},
        {"state": "[1] RootWebArea 'Map'\n\tStaticText 'CMU, 15213'", "action": "stop [15213]", "reward": 1, "done": True,
         "reasoning": "the zip code is shown", "extra": {"note": "x"}},
    ],
}


def test_jsonl_episodes_chain_next_states(tmp_path):
    unfinished = {"task_id": "t2", "goal": "g", "steps": [
        {"state": "A", "action": "click [1]", "reward": 0.0, "done": False},
        {"state": "B", "action": "click [2]", "reward": 0.0, "done": False},  # no next state: dropped
    ]}
    with_final = {"task_id": "t3", "goal": "g", "domain": "miniwob", "final_state": "Z", "trajectory_id": "mine",
                  "steps": [{"state": "Y", "action": "click [9]", "reward": 1, "done": True}]}
    path = _write_jsonl(tmp_path / "episodes.jsonl", [EPISODE, "", unfinished, with_final])
    trajs = import_jsonl_episodes(path, domain="webarena")
    assert [t.task_id for t in trajs] == ["70", "t2", "t3"]
    first = trajs[0]
    assert first.source == "real" and first.domain == "webarena" and first.goal == EPISODE["goal"]
    t0, t1 = first.transitions
    assert t0.next_state == t1.state and t1.next_state == t1.state  # a final stop leaves the page
    assert (t0.reward, t0.done, t1.reward, t1.done) == (0.0, False, 1.0, True)
    assert t1.reasoning == "the zip code is shown" and t1.extra == {"note": "x"} and t1.source == "real"
    assert [t.step for t in first.transitions] == [0, 1]
    assert [t.next_state for t in trajs[1].transitions] == ["B"]
    assert trajs[1].domain == "webarena"  # from the argument
    assert trajs[2].trajectory_id == "mine" and trajs[2].domain == "miniwob" and trajs[2].transitions[0].next_state == "Z"
    # Same file, same ids (re-imports are deduplicated by the buffer).
    assert [t.trajectory_id for t in import_jsonl_episodes(path, domain="webarena")] == [t.trajectory_id for t in trajs]
    # gzip works too.
    gz = tmp_path / "episodes.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert len(import_jsonl_episodes(gz, domain="webarena")) == 3


@pytest.mark.parametrize("line, message", [
    ("{not json", ":2: not JSON"),
    (json.dumps({"goal": "g", "steps": []}), ":2: missing 'task_id'"),
    (json.dumps({"task_id": 1, "goal": "g", "steps": [{"state": "s", "action": "click [1]"}]}), ":2: missing 'domain'"),
    (json.dumps({**EPISODE, "steps": [{"state": "s"}]}), ":2: step 0: missing 'action'"),
    (json.dumps({**EPISODE, "steps": [EPISODE["steps"][0], {"state": "s", "action": "a", "reward": "1"}]}),
     ":2: step 1: 'reward' must be a number"),
    (json.dumps({**EPISODE, "steps": [{"state": "s", "action": "a", "done": "yes"}]}), ":2: step 0: 'done' must be true or false"),
    (json.dumps({**EPISODE, "steps": []}), ":2: 'steps' must be a non-empty list"),
    (json.dumps([1, 2]), ":2: an episode must be a JSON object"),
])
def test_jsonl_errors_name_file_line_and_step(tmp_path, line, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", [EPISODE, line])
    with pytest.raises(ImportFormatError) as err:
        import_jsonl_episodes(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_jsonl_into_a_real_buffer(tmp_path):
    from dreamgym_env.buffer import ExperienceBuffer

    trajs = import_jsonl_episodes(_write_jsonl(tmp_path / "e.jsonl", [EPISODE]))
    buffer = ExperienceBuffer(str(tmp_path / "buf"))
    try:
        assert len(buffer.add_trajectories(trajs).added) == 2
        assert len(buffer.add_trajectories(trajs).duplicates) == 2
        assert buffer.count({"source": "real"}) == 2
        assert [t.state for t in buffer.initial_states(domain="webarena", task_id="70")] == [EPISODE["steps"][0]["state"]]
    finally:
        buffer.close()


def test_cli_parser_writes_jsonl_and_buffer(tmp_path):
    parser = argparse.ArgumentParser(prog="dreamgym")
    add_import_parser(parser.add_subparsers(dest="command"))
    src = _write_jsonl(tmp_path / "e.jsonl", [EPISODE])
    out = tmp_path / "out.jsonl"
    args = parser.parse_args(["import", "--format", "jsonl", str(src), "--out", str(out), "--buffer", str(tmp_path / "buf")])
    summary = args.func(args)
    assert summary["trajectories"] == 1 and summary["transitions"] == 2 and summary["added"] == 2
    (line,) = out.read_text().splitlines()
    assert Trajectory.from_json(line).transitions[1].action == "stop [15213]"
    args = parser.parse_args(["import", "--format", "jsonl", str(src)])
    with pytest.raises(Exception, match="--buffer PATH and/or --out"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["import", str(src), "--out", "x"])  # --format is required


# ------------------------------------------------------------------ BrowserGym logs
def _node(i, role, name="", children=(), bid=None, value=None):
    node = {"nodeId": str(i), "role": {"value": role}, "name": {"value": name}, "childIds": [str(c) for c in children]}
    if bid is not None:
        node["browsergym_id"] = bid
    if value is not None:
        node["value"] = {"value": value}
    return node


def _obs(title: str, box_value: str | None = None, error: str = "") -> dict:
    return {
        "goal_object": [{"type": "text", "text": "Find the zip code"}],
        "url": f"http://map/{title}", "last_action_error": error, "open_pages_titles": (title,),
        "axtree_object": {"nodes": [
            _node(1, "RootWebArea", title, [2, 3]), _node(2, "textbox", "Search", bid="4", value=box_value),
            _node(3, "button", "Go", bid="5"),
        ]},
        "extra_element_properties": {},
    }


def _write_stepinfo_experiment(exp_dir: Path, task_name: str) -> None:
    """An experiment written with BrowserGym's own StepInfo.save_step_info and ExpArgs pickle."""
    from browsergym.experiments.loop import EnvArgs, ExpArgs, StepInfo

    exp_dir.mkdir(parents=True)
    steps = [
        StepInfo(step=0, obs=_obs("Map"), action="fill('4', 'CMU')\npress('4', 'Enter')"),
        StepInfo(step=1, obs=_obs("Results", "CMU"), action="click('99')"),
        StepInfo(step=2, obs=_obs("Results", "CMU", error='ValueError: Could not find element with bid "99"'),
                 action="send_msg_to_user('15213')"),
        StepInfo(step=3, obs=_obs("Results", "CMU"), reward=1.0, terminated=True, truncated=False),
    ]
    for s in steps:
        s.save_step_info(exp_dir, save_screenshot=False)
    args = ExpArgs(agent_args=_ScriptedAgentArgs(actions=()), env_args=EnvArgs(task_name=task_name))
    with open(exp_dir / "exp_args.pkl", "wb") as fh:
        pickle.dump(args, fh)


@needs_browsergym_experiments
def test_stepinfo_log_becomes_transitions(tmp_path):
    exp_dir = tmp_path / "study" / "2026-11-23_12-00-00_Scripted_on_webarena.70_0"
    _write_stepinfo_experiment(exp_dir, "webarena.70")
    traj = import_browsergym_experiment(exp_dir)
    assert (traj.domain, traj.task_id, traj.goal, traj.source) == ("webarena", "70", "Find the zip code", "real")
    assert [t.action for t in traj.transitions] == ['type [4] "CMU" enter', "click [99]", "stop [15213]"]
    assert [t.reward for t in traj.transitions] == [0.0, 0.0, 1.0]
    assert [t.done for t in traj.transitions] == [False, False, True]
    assert [t.valid_action for t in traj.transitions] == [True, False, True]
    assert traj.transitions[0].state == "RootWebArea 'Map'\n\t[4] textbox 'Search'\n\t[5] button 'Go'"
    assert "[4] textbox 'Search' value='CMU'" in traj.transitions[0].next_state
    for a, b in zip(traj.transitions, traj.transitions[1:]):
        assert a.next_state == b.state
    assert traj.transitions[1].extra["browsergym_action"] == "click('99')"
    assert "99" in traj.transitions[1].extra["last_action_error"]
    # A study directory finds its experiments; raw actions on request.
    (raw,) = import_browsergym(tmp_path / "study", convert_actions=False)
    assert raw.transitions[1].action == "click('99')"


@needs_browsergym_experiments
def test_logs_of_classes_that_are_not_installed_load_as_stand_ins(tmp_path):
    """AgentLab's StepInfo (agentlab.experiments.loop) without AgentLab installed: a stand-in
    carries the fields, and nothing of the log's classes runs."""
    from browsergym.experiments.loop import StepInfo as BgStepInfo

    names = ["agentlab", "agentlab.experiments", "agentlab.experiments.loop"]
    saved = {n: sys.modules.get(n) for n in names}
    fake = {n: types.ModuleType(n) for n in names}

    @dataclass
    class StepInfo:  # the fields AgentLab's StepInfo pickles
        step: int = None
        obs: dict = None
        reward: float = 0
        terminated: bool = None
        truncated: bool = None
        action: str = None
        agent_info: dict = field(default_factory=dict)

    StepInfo.__module__, StepInfo.__qualname__ = "agentlab.experiments.loop", "StepInfo"
    fake["agentlab.experiments.loop"].StepInfo = StepInfo
    exp_dir = tmp_path / "2026-11-23_GenericAgent_on_webarena.12_3"
    exp_dir.mkdir()
    try:
        sys.modules.update(fake)
        for n, (obs, action, reward, done) in enumerate([(_obs("A"), "click('5')", 0, False), (_obs("B"), None, 1, True)]):
            with gzip.open(exp_dir / f"step_{n}.pkl.gz", "wb") as fh:
                pickle.dump(StepInfo(step=n, obs=obs, action=action, reward=reward, terminated=done), fh)
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod
    assert not isinstance(load_pickle(exp_dir / "step_0.pkl.gz"), BgStepInfo)
    traj = import_browsergym_experiment(exp_dir)  # no exp_args.pkl: the task comes from the directory name
    assert (traj.domain, traj.task_id) == ("webarena", "12")
    (t,) = traj.transitions
    assert (t.action, t.reward, t.done) == ("click [5]", 1.0, True)
    assert t.state.startswith("RootWebArea 'A'") and t.next_state.startswith("RootWebArea 'B'")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


def test_pickles_never_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "step_0.pkl.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump({"obs": _Evil()}, fh)
    loaded = load_pickle(path)
    assert repr(loaded["obs"]) in ("<stand-in for posix.system>", "<stand-in for nt.system>")
    assert not (tmp_path / "should-not-exist").exists()
    # A name that a trusted package's module merely imports (pathlib.Path in browsergym's loop)
    # is no trusted class either.
    path.write_bytes(gzip.compress(b"cbrowsergym.experiments.loop\nPath\n(S'/tmp'\ntR."))
    assert "stand-in for browsergym.experiments.loop.Path" in repr(load_pickle(path))


@needs_browsergym_experiments
def test_malformed_logs_name_the_file(tmp_path):
    exp_dir = tmp_path / "exp_on_webarena.1_0"
    _write_stepinfo_experiment(exp_dir, "webarena.1")
    (exp_dir / "step_1.pkl.gz").unlink()
    with pytest.raises(ImportFormatError, match="step_1.pkl.gz"):
        import_browsergym_experiment(exp_dir)
    (exp_dir / "step_1.pkl.gz").write_bytes(b"not a pickle")
    with pytest.raises(ImportFormatError, match=r"step_1\.pkl\.gz: not a readable BrowserGym pickle"):
        import_browsergym_experiment(exp_dir)
    with pytest.raises(ImportFormatError, match="no BrowserGym/AgentLab experiment"):
        import_browsergym(tmp_path / "nothing-here")


# ------------------------------------------- a real experiment run by BrowserGym's own loop
PAGE = """<!doctype html><html><head><title>Form</title></head><body>
<form onsubmit="document.getElementById('out').textContent='Sent: '+document.getElementById('q').value; return false;">
<input id="q" aria-label="Query" type="text"><button type="submit">Send</button></form><p id="out">Empty</p>
</body></html>"""


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        data = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _scripted_agent_class():
    from browsergym.experiments.agent import Agent, AgentInfo

    class ScriptedAgent(Agent):
        """Plays a fixed list of BrowserGym actions; ``{box}`` is the text box's bid."""

        def __init__(self, actions):
            self.actions = list(actions)

        def obs_preprocessor(self, obs):  # like AgentLab: keep axtree_object, add the text
            from browsergym.utils.obs import flatten_axtree_to_str

            obs = {k: v for k, v in obs.items() if k not in ("screenshot", "dom_object")}
            obs["axtree_txt"] = flatten_axtree_to_str(obs["axtree_object"])
            return obs

        def get_action(self, obs):
            if not self.actions:
                return None, AgentInfo()
            box = next(n["browsergym_id"] for n in obs["axtree_object"]["nodes"] if n["role"]["value"] == "textbox")
            return self.actions.pop(0).format(box=box), AgentInfo(think="scripted")

    return ScriptedAgent


@dataclass
class _ScriptedAgentArgs:
    actions: tuple = ()
    agent_name: str = "Scripted"

    def prepare(self):
        pass

    def close(self):
        pass

    def make_agent(self):
        return _scripted_agent_class()(self.actions)


@needs_browsergym_experiments
@pytest.mark.skipif(find_chromium() is None and not Path("~/.cache/ms-playwright").expanduser().exists(),
                    reason="no Chromium (apt-get install chromium, or playwright install chromium)")
def test_real_browsergym_experiment_round_trip(tmp_path, monkeypatch):
    import browsergym.experiments.loop as bg_loop
    from browsergym.experiments.loop import EnvArgs, ExpArgs, ExpResult

    from dreamgym_env.domains.webarena.real_env import (
        configure_browsergym_chromium,
        release_browsergym_playwright,
    )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The loop's step statistics count tokens with tiktoken, which downloads its encoding (no
    # internet here); word counts stand in. Nothing else of the loop is changed.
    monkeypatch.setattr(bg_loop, "count_tokens", lambda text, *a, **k: len(str(text).split()))
    monkeypatch.setattr(bg_loop, "count_messages_token", lambda messages, *a, **k: 0)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # ExpArgs.run rewires the root logger
    try:
        configure_browsergym_chromium()
        exp = ExpArgs(
            agent_args=_ScriptedAgentArgs(actions=("fill('{box}', 'hello')\npress('{box}', 'Enter')", "click('9999')", "noop(10)")),
            env_args=EnvArgs(task_name="openended", task_seed=0, max_steps=10, slow_mo=0,
                             task_kwargs={"start_url": f"http://127.0.0.1:{server.server_port}/", "goal": "Send hello"}),
            logging_level_stdout=logging.WARNING, save_screenshot=False,
        )
        exp.prepare(tmp_path)
        exp.run()
    finally:
        release_browsergym_playwright()  # frees this thread's asyncio for the tests that follow
        server.shutdown()
        server.server_close()
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)
    result = ExpResult(exp.exp_dir)
    assert result.summary_info["err_msg"] is None, result.summary_info["stack_trace"]
    assert len(result.steps_info) == 4  # reset + 3 actions (the 4th get_action returned None)

    (traj,) = import_browsergym(tmp_path)
    assert (traj.domain, traj.task_id, traj.goal) == ("browsergym", "openended", "Send hello")
    box = traj.transitions[0].action.split("]")[0][len("type ["):]
    assert [t.action for t in traj.transitions] == [f'type [{box}] "hello" enter', "click [9999]", "noop(10)"]
    assert [t.valid_action for t in traj.transitions] == [True, False, True]
    assert "StaticText 'Empty'" in traj.transitions[0].state
    assert f"[{box}] textbox 'Query' value='hello'" in traj.transitions[0].next_state
    assert "StaticText 'Sent: hello'" in traj.transitions[0].next_state
    for a, b in zip(traj.transitions, traj.transitions[1:]):
        assert a.next_state == b.state
    assert all(t.reward == 0.0 and not t.done and t.source == "real" for t in traj.transitions)
