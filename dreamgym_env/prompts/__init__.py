"""Chat templates of the experience model, shared by SFT, serving and evaluation.

``render_transition`` builds the messages for (task, H_t, s_t, a_t, D_k) and ``render_target``
the answer the model is trained to write, so a model trained on one reads the other. Add a
version to ``PROMPT_VERSIONS`` whenever either changes: a trained model's card names the
version it was trained on, and backends that load the model render that version.

Versions:
    v2: the action line is the action alone (``Action: click [5]``).
    v3: the action line also names the element it acts on (``Action: click [5] on button
        "Next"``), as demo lines already did. Which element an action hits is a pure function
        of (state, action); a model asked to find it made most of its closed-loop mistakes there.
    v4: v3 with a one-line system text (a trained model has learnt the format; the schema holds
        it at serving time: the v3 text cost ~60 tokens a step, 13 % of a training example), and
        each retrieved demo headed by its own goal. Without it a demo's reward cannot be read:
        ``click [6] on button "Cancel" => reward 1`` came from an episode whose goal named
        Cancel, and beside a goal naming "submit" it said "any click is rewarded".
    v5: v4 with demos that show what an action does to the page (its patch, and whether the
        episode ends) but neither their goal nor their reward. A reward depends on the goal,
        and a demo's goal is another episode's: a model trained on v4 (candidate v1, docs/fidelity.md)
        was found copying the first demo's reward (teacher-forced on 200 click-button endings, its
        judgement followed the first demo's reward in 168, and the right answer in 99), which
        rewards a wrong click beside a rewarded demo and refuses a right one beside a failed
        demo. Without it the reward can only come from the goal, the page and the action, as
        the reasoning trace spells them out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from dreamgym_env.patch import line_ref
from dreamgym_env.schema import ModelOutput, StateFormat, Transition

#: The version ``dreamgym sft`` trains by default and servers without a model card get.
PROMPT_VERSION = "v4"
PROMPT_VERSIONS = ("v2", "v3", "v4", "v5")
#: A demo's goal is cut to this many characters in prompt v4.
DEMO_GOAL_CHARS = 100

#: Compact JSON, as constrained decoding writes it (vLLM with ``disable_any_whitespace`` and
#: TransformersBackend both use these separators), so that training targets match serving.
JSON_SEPARATORS = (",", ":")

_STATE_RULES = {
    "patch": 'patch: new or changed element lines, whole, and "-[ref]" for removed ones ([] if none)',
    "whole": "next_state: the whole next state",
}


def system_prompt(domain: str, state_format: StateFormat, action_help: str, version: str = PROMPT_VERSION) -> str:
    """The system message: the model's role, the answer format and the action grammar.

    Kept short: every prompt token is paid for at every training and serving step. From v4 it
    names the answer's keys only (the trained model knows their meaning; the JSON schema holds
    the format at serving time).
    """
    state_key = "patch" if state_format == "patch" else "next_state"
    if version not in ("v2", "v3"):
        return (
            f"You simulate a {domain} web environment. Answer JSON: reasoning, {state_key}, reward, done, valid_action."
            + (f"\nActions:\n{action_help}" if action_help else "")
        )
    return (
        f"You simulate a {domain} web environment. Reason briefly about the action, then answer "
        f"JSON with keys reasoning, {state_key}, reward, done, valid_action. {_STATE_RULES[state_format]}; "
        "reward: 1 only if the action completes the goal; done: the episode ends; valid_action: "
        "false if the action cannot run on the state."
        + (f"\nActions:\n{action_help}" if action_help else "")
    )


@dataclass
class HistoryStep:
    """What the prompt keeps of a past step."""

    action: str
    reward: float
    valid_action: bool = True


def _target_line(state: str, action: str) -> str | None:
    """The element line an action acts on (``click [12]`` -> the line of ``[12]``)."""
    start = action.find("[")
    end = action.find("]", start)
    if start < 0 or end < 0:
        return None
    ref = action[start + 1 : end].strip()
    return next((l.strip() for l in state.splitlines() if line_ref(l) == ref), None)


def check_prompt_version(version: str) -> str:
    """``version`` if this package can render it.

    Raises:
        ValueError: an unknown version (e.g. a model card written by a newer dreamgym_env).
    """
    if version not in PROMPT_VERSIONS:
        raise ValueError(f"unknown prompt version {version!r}; this dreamgym_env renders {', '.join(PROMPT_VERSIONS)}")
    return version


def describe_action(state: str, action: str) -> str:
    """``action`` followed by the element it acts on: ``click [5] on button "Next"``."""
    target = _target_line(state, action)
    return f"{action} on{target[target.find(']') + 1:]}" if target else action


def render_demo(demo: Transition, state_format: StateFormat, version: str = PROMPT_VERSION) -> str:
    """A retrieved real transition, compactly: (v4) its goal, action, element acted on,
    outcome (v5: only whether the episode ends), then the patch lines as they are (no JSON
    escaping: prompt tokens are the cost of every step)."""
    action = describe_action(demo.state, demo.action)
    if version == "v5":
        head = f"- {action} => {'episode ends' if demo.done else 'episode goes on'}"
    else:
        goal = "" if version in ("v2", "v3") else f"goal {_clip_goal(demo.goal)} | "
        head = f"- {goal}{action} => reward {int(demo.reward)}{', done' if demo.done else ''}"
    if state_format == "patch":
        from dreamgym_env.patch import make_patch

        change = make_patch(demo.state, demo.next_state)
        if change is None:
            return f"{head}; the whole page changes"
        if not change:
            return f"{head}; no change"
        return head + "".join(f"\n  {line}" for line in change)
    return f"{head}; next state:\n  " + demo.next_state[:300].replace("\n", "\n  ")


def _clip_goal(goal: str) -> str:
    goal = " ".join(goal.split())
    return goal if len(goal) <= DEMO_GOAL_CHARS else goal[: DEMO_GOAL_CHARS - 1] + "…"


def render_transition(
    *,
    domain: str,
    goal: str,
    state: str,
    action: str,
    history: Sequence[HistoryStep],
    demos: Sequence[Transition],
    action_help: str,
    state_format: StateFormat,
    version: str = PROMPT_VERSION,
) -> list[dict[str, str]]:
    """Messages asking the model for the next state, reward and done after ``action``,
    in prompt ``version`` (the one the model was trained on)."""
    check_prompt_version(version)
    parts = [f"Goal: {goal}"]
    if demos:
        parts.append("Similar real transitions:\n" + "\n".join(render_demo(d, state_format, version) for d in demos))
    if history:
        lines = [
            f"{i}. {h.action}" + ("" if h.valid_action else " (invalid)")
            for i, h in enumerate(history, 1)
        ]
        parts.append("Previous actions:\n" + "\n".join(lines))
    parts.append(f"State:\n{state}")
    parts.append(f"Action: {action if version == 'v2' else describe_action(state, action)}")
    return [
        {"role": "system", "content": system_prompt(domain, state_format, action_help, version)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def render_target(output: ModelOutput, state_format: StateFormat) -> str:
    """The answer text the model is trained to produce (and that the parser reads)."""
    body: dict[str, object] = {"reasoning": output.reasoning}
    if state_format == "patch":
        body["patch"] = output.patch or []
    else:
        body["next_state"] = output.next_state or ""
    body.update(reward=int(output.reward), done=output.done, valid_action=output.valid_action)
    return json.dumps(body, ensure_ascii=False, separators=JSON_SEPARATORS)


def render_initial_state(*, domain: str, goal: str, context: str = "") -> list[dict[str, str]]:
    """Messages asking the model for the first state of a task with no real initial state."""
    extra = f"\n{context}" if context else ""
    return [
        {
            "role": "system",
            "content": (
                f"You simulate a {domain} web environment. Write the page an agent sees at the "
                "start of the task as an accessibility tree, one element per line as "
                "\"[ref] role 'name'\" with numeric refs. Answer with JSON {\"state\": \"...\"}."
            ),
        },
        {"role": "user", "content": f"Goal: {goal}{extra}"},
    ]
