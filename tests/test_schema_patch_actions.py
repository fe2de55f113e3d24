"""Model-output parsing, patches and the action grammar."""

from __future__ import annotations

import json

import pytest

from dreamgym_env.domains.actions import ActionGrammar, InvalidActionError
from dreamgym_env.errors import ModelOutputError
from dreamgym_env.patch import apply_patch, make_patch
from dreamgym_env.prompts import render_target
from dreamgym_env.schema import Trajectory, Transition, output_json_schema, parse_model_output

STATE = "[1] RootWebArea 'Shop'\n\t[2] link 'Home'\n\t[4] textbox 'Search' focused\n\t[6] button 'Go'"


def test_patch_replaces_adds_and_removes_lines_in_dom_order():
    patch = ["\t[4] textbox 'Search' value='lamp' focused", "\t[5] StaticText 'hint'", "-[6]"]
    assert apply_patch(STATE, patch) == (
        "[1] RootWebArea 'Shop'\n\t[2] link 'Home'\n\t[4] textbox 'Search' value='lamp' focused\n\t[5] StaticText 'hint'"
    )
    assert apply_patch(STATE, []) == STATE
    assert apply_patch(STATE, ["-[6] button 'Go'"]) == apply_patch(STATE, ["-[6]"])  # removal quoting its line
    with pytest.raises(ModelOutputError, match="neither"):
        apply_patch(STATE, ["a line without ref"])


def test_make_patch_round_trips():
    after = STATE.replace("'Go'", "'Go' focused") + "\n\t[9] link 'Result'"
    patch = make_patch(STATE, after)
    assert patch == ["\t[6] button 'Go' focused", "\t[9] link 'Result'"]
    assert apply_patch(STATE, patch) == after
    assert make_patch(STATE, "URL changed\n" + STATE) is None  # not expressible as a patch


@pytest.mark.parametrize("fmt", ["patch", "whole"])
def test_parse_model_output_accepts_valid_and_rejects_invalid(fmt):
    from dreamgym_env.schema import ModelOutput

    output = ModelOutput("clicked Go", 1.0, True, True, next_state="s" if fmt == "whole" else None,
                         patch=["[1] x"] if fmt == "patch" else None)
    text = render_target(output, fmt)
    assert parse_model_output(text, fmt) == output
    assert parse_model_output("```json\n" + text + "\n```", fmt) == output
    assert list(json.loads(text)) == list(output_json_schema(fmt)["properties"])
    with pytest.raises(ModelOutputError, match="misses keys"):
        parse_model_output('{"reasoning": "x"}', fmt)
    with pytest.raises(ModelOutputError, match="not valid JSON"):
        parse_model_output('{"reasoning": "x", ', fmt)
    with pytest.raises(ModelOutputError, match="no JSON object"):
        parse_model_output("the page changes", fmt)


def test_trajectory_json_round_trip():
    t = Transition("webarena", "3", "traj-1", 0, "s0", "click [1]", "s1", 1.0, True, goal="g")
    traj = Trajectory("traj-1", "webarena", "3", "g", [t])
    assert Trajectory.from_json(traj.to_json()) == traj
    with pytest.raises(ValueError, match="Unknown Transition fields"):
        Transition.from_dict({**t.to_dict(), "bogus": 1})


def test_action_grammar():
    grammar = ActionGrammar(["click", "type", "scroll", "stop"])
    assert grammar.parse("click [12]").args == {"ref": "12"}
    assert grammar.parse('type [7] "say \\"hi\\""').args == {"ref": "7", "text": 'say "hi"'}
    assert grammar.parse("stop [42 items]").args == {"value": "42 items"}
    assert grammar.parse("stop").verb == "stop"
    for bad, message in [("click 12", "malformed click"), ("hover [1]", "unknown action"),
                         ("scroll [left]", "malformed scroll"), ("", "unknown action")]:
        with pytest.raises(InvalidActionError, match=message):
            grammar.parse(bad)
    assert all(grammar.parse(a) for a in grammar.examples(["5"]))
    assert "click [ref]: click the element [ref]" in grammar.describe()


def test_every_real_miniwob_patch_fits_the_output_schema():
    """The schema's patch cap must not cut a true answer: every real transition of the packaged
    MiniWoB collections, written as a patch, has at most ``patch_lines`` lines."""
    from importlib import resources

    from dreamgym_env.collect import read_trajectories
    from dreamgym_env.domains import make_domain

    cap = make_domain("miniwob").output_limits.patch_lines
    longest = 0
    for path in (resources.files("dreamgym_env") / "data" / "miniwob").iterdir():
        if path.name.endswith(".jsonl.gz"):
            for trajectory in read_trajectories(str(path)):
                for t in trajectory.transitions:
                    patch = make_patch(t.state, t.next_state)
                    longest = max(longest, len(patch) if patch is not None else 0)
    assert 24 < longest <= cap  # some real pages change more than 24 lines in a step
