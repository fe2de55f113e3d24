"""Near-miss policy for MiniWoB: oracle episodes with one plausible mistake.

Uniform random actions mostly fail in ways that are easy to judge (a click on plain text, an
action on the wrong kind of element). An experience model must also judge the endings that
*almost* succeed: the other button, a checkbox too many or too few, a text typed wrong or only
in part, the wrong option, Submit before the form is complete, the wrong tab or link. This
policy plays the family's oracle (:mod:`dreamgym_env.domains.miniwob.oracles`) and, from one
step of the episode on, makes one such mistake:

- a *wrong goal*: from the chosen step on, the oracle solves a goal that differs from the real
  one in one target (another button's text, one label more or fewer, a typo in the text, another
  option, tab, sender, ...), so the mistake is carried through to the end, as an agent that
  misread the goal would;
- *early submit*: the form's Submit (or Login) button instead of the next field or box;
- a family-specific *wrong step* where no goal rewrite expresses it (button TWO before ONE,
  a click on the dialog's text instead of its close button).

With probability ``recover`` the policy returns to the real goal after its mistake, so the
data shows repairs as well. The real env decides every reward: a "near miss" that the page
accepts after all is recorded as the success it is.

>>> policy = NearMissPolicy(seed=0)
>>> policy.reset(seed=1)
>>> action = policy.act(obs, info)    # doctest: +SKIP
>>> policy.step_extra()                # {"near_miss": "other-button"} on the first wrong step
"""

from __future__ import annotations

import re
import string
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dreamgym_env.domains.miniwob.oracles import (
    _EMAIL,
    _WIDGET_TAGS,
    OracleError,
    RandomPolicy,
    _labelled,
    _quoted,
    _submit,
    oracle_action,
    parse_observation,
)
from dreamgym_env.domains.miniwob.serialize import Element, parse_state

__all__ = ["NEAR_MISS_FAMILIES", "NearMissPolicy", "near_misses", "perturb_text"]

#: A near miss: (kind, wrong goal, None), or (kind, None, wrong action) for a one-step mistake.
NearMiss = tuple[str, str | None, str | None]

#: Steps the oracle takes in a family, roughly (docs/data.md): the mistake falls on one of them.
_ORACLE_STEPS = {
    "click-button-sequence": 2, "click-checkboxes": 3, "click-option": 2, "click-collapsible": 2,
    "enter-text": 2, "enter-password": 3, "login-user": 3, "choose-list": 2,
}


def _oracle_steps(task_id: str, goal: str) -> int:
    """About how many steps the oracle takes on this goal (1 for one-click families)."""
    if task_id == "email-inbox":  # an icon in the inbox row, or open, reply/forward, type, send
        return 1 if ("trash" in goal or "star" in goal) else 4
    if task_id == "use-autocomplete":  # type the prefix, pick the suggestion, submit
        return 3 if len(_quoted(goal)) > 1 else 2
    return _ORACLE_STEPS.get(task_id, 1)
#: Families whose final button is pressed after the form is filled.
_SUBMIT_LABEL = {
    "click-checkboxes": "Submit", "click-option": "Submit", "click-collapsible": "Submit",
    "enter-text": "Submit", "enter-password": "Submit", "login-user": "Login", "choose-list": "Submit",
    "use-autocomplete": "Submit",
}


def _replace_quoted(goal: str, index: int, text: str) -> str:
    """``goal`` with its ``index``-th quoted string replaced by ``text``."""
    spans = list(re.finditer(r"\"([^\"]*)\"", goal))
    m = spans[index]
    return goal[: m.start(1)] + text + goal[m.end(1):]


def perturb_text(text: str, rng: np.random.Generator) -> tuple[str, str]:
    """A plausible wrong version of ``text``: ``(kind, wrong)`` with ``wrong != text``.

    Kinds: ``typo`` (one character replaced), ``partial`` (a proper prefix), ``case`` (letter
    case changed), ``extra`` (one character appended).
    """
    kinds = ["typo", "extra"]
    if len(text) >= 2:
        kinds.append("partial")
    if text.swapcase() != text:
        kinds.append("case")
    kind = kinds[int(rng.integers(len(kinds)))]
    pool = string.ascii_letters + string.digits
    if kind == "partial":
        return kind, text[: int(rng.integers(1, len(text)))]
    if kind == "case":
        wrong = text.lower() if text != text.lower() else text.capitalize()
        return kind, wrong if wrong != text else text.swapcase()
    if kind == "extra":
        return kind, text + pool[int(rng.integers(len(pool)))]
    if not text:
        return "extra", pool[int(rng.integers(len(pool)))]
    i = int(rng.integers(len(text)))
    choices = [c for c in pool if c != text[i]]
    return kind, text[:i] + choices[int(rng.integers(len(choices)))] + text[i + 1:]


def _others(values: Sequence[str], exclude: str) -> list[str]:
    return sorted({v for v in values if v and v != exclude})


def _pick(rng: np.random.Generator, values: Sequence[Any]) -> Any:
    return values[int(rng.integers(len(values)))]


# -- near misses per family ----------------------------------------------------------------------------
# Each returns the near misses possible on this page (possibly none); the policy picks one.


def _click_test_2(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    name = re.search(r"Click button (\w+)", goal).group(1)
    return [("other-button", goal.replace(f"button {name}", f"button {other}"), None)
            for other in _others([e.text for e in els if e.tag == "button"], name)]


def _quoted_target(kind: str, candidates: Callable[[list[Element]], list[str]]):
    def near(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
        target = _quoted(goal)[0]
        return [(kind, _replace_quoted(goal, 0, other), None) for other in _others(candidates(els), target)]
    return near


def _click_button(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    out = _quoted_target("other-button", lambda e: [x.text for x in e if x.tag == "button"])(goal, els, rng)
    if not out:  # the only button is the right one: a click beside it
        out = [("other-element", None, f"click [{e.ref}]") for e in els if e.tag != "button"]
    return out


def _button_sequence(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    buttons = {e.text: e for e in els if e.tag == "button"}
    if "ONE" not in buttons or "TWO" not in buttons:
        return []
    return [("two-first", None, f"click [{buttons['TWO'].ref}]"),
            ("one-twice", None, f"click [{buttons['ONE'].ref}]")]


def _checkboxes(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    names = re.match(r"Select (.*) and click Submit\.", goal).group(1)
    wanted = [] if names == "nothing" else names.split(", ")
    labels = [label for label, _ in _labelled(els, "input_checkbox")]
    unwanted = [label for label in labels if label not in wanted]
    out: list[NearMiss] = []

    def goal_for(selection: list[str], kind: str) -> None:
        text = ", ".join(selection) if selection else "nothing"
        out.append((kind, goal.replace(f"Select {names} and", f"Select {text} and", 1), None))

    if unwanted:
        goal_for(wanted + [_pick(rng, unwanted)], "box-too-many")
    if wanted:
        drop = _pick(rng, wanted)
        goal_for([w for w in wanted if w != drop], "box-too-few")
        if unwanted:
            goal_for([w if w != drop else _pick(rng, unwanted) for w in wanted], "box-swapped")
    return out


def _option(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    name = re.match(r"Select (.*) and click Submit\.", goal).group(1)
    return [("other-option", goal.replace(f"Select {name} and", f"Select {other} and", 1), None)
            for other in _others([label for label, _ in _labelled(els, "input_radio")], name)]


def _tab(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    tab = re.search(r"Tab #\d+", goal).group(0)
    return [("other-tab", goal.replace(tab, other), None)
            for other in _others([e.text for e in els if e.tag == "a" and e.text.startswith("Tab #")], tab)]


def _dialog(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    return [("dialog-text", None, f"click [{e.ref}]") for e in els if e.tag != "button" and e.text]


def _dialog_2(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    labels = ["x" if e.text == "Close" else e.text for e in els if e.tag == "button"]
    return [("other-button", _replace_quoted(goal, 0, other), None) for other in _others(labels, _quoted(goal)[0])]


def _widget(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    tags = {e.tag for e in els}
    kinds = [kind for kind, tag in _WIDGET_TAGS.items() if tag in tags]
    return [("other-widget", _replace_quoted(goal, 0, other), None) for other in _others(kinds, _quoted(goal)[0])]


def _wrong_quoted_text(kind: str, index: int = 0):
    def near(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
        how, wrong = perturb_text(_quoted(goal)[index], rng)
        return [(f"{kind}-{how}", _replace_quoted(goal, index, wrong), None)]
    return near


def _login(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    user, password = _quoted(goal)[:2]
    out = _wrong_quoted_text("username")(goal, els, rng) + _wrong_quoted_text("password", 1)(goal, els, rng)
    if user != password:
        swapped = _replace_quoted(_replace_quoted(goal, 0, password), 1, user)
        out.append(("swapped-fields", swapped, None))
    return out


def _choose_list(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    item = re.match(r"Select (.*) from the list", goal).group(1)
    options = next((e.options or [] for e in els if e.tag == "select"), [])
    return [("other-item", goal.replace(f"Select {item} from", f"Select {other} from", 1), None)
            for other in _others(options, item)]


def _autocomplete(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    quoted = _quoted(goal)
    prefix, suffix = quoted[0], (quoted[1] if len(quoted) > 1 else "")
    field = next((e for e in els if e.is_text_field), None)
    if field is None:
        return []
    shown = [e.text for e in els if e.ref != field.ref and e.tag in ("div", "li", "a")
             and e.text.startswith(prefix)]
    wrong = [t for t in shown if not t.endswith(suffix)] if suffix else []
    out: list[NearMiss] = [] if suffix else _wrong_quoted_text("prefix")(goal, els, rng)
    for text in wrong:
        # a goal whose suffix only the wrong suggestion has: the oracle picks it, then submits
        tail = next((text[-n:] for n in range(1, len(text) + 1)
                     if not any(s.endswith(text[-n:]) for s in shown if s != text)), None)
        if tail:
            out.append(("wrong-suggestion", _replace_quoted(goal, 1, tail), None))
    return out


def _email(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    match = _EMAIL.match(goal)
    sender, task = match.group("sender"), match.group("task")
    out: list[NearMiss] = []
    # the inbox lists each email as sender, subject, preview: a sender's div follows a non-div
    senders = [e.text for i, e in enumerate(els) if e.tag == "div" and i and els[i - 1].tag != "div"]
    for other in _others(senders, sender)[:3]:
        out.append(("other-sender", goal.replace(f"by {sender} and", f"by {other} and", 1), None))
    if "trash" in task:
        out.append(("other-icon", goal.replace(task, "click the star icon to mark it as important"), None))
    elif "star" in task:
        out.append(("other-icon", goal.replace(task, "click the trash icon to delete it"), None))
    elif task.startswith("reply"):
        out += _wrong_quoted_text("reply-text")(goal, els, rng)
    elif task.startswith("forward"):
        to = re.search(r"forward that email to (.+)$", task).group(1)
        how, wrong = perturb_text(to, rng)
        out.append((f"forward-to-{how}", goal.replace(f"forward that email to {to}", f"forward that email to {wrong}"), None))
    return out


def _no_near_miss(goal: str, els: list[Element], rng: np.random.Generator) -> list[NearMiss]:
    return []


_NEAR_MISSES: dict[str, Callable[[str, list[Element], np.random.Generator], list[NearMiss]]] = {
    "click-test": _no_near_miss,  # one button: every click succeeds
    "click-test-2": _click_test_2,
    "click-button": _click_button,
    "click-button-sequence": _button_sequence,
    "click-link": _quoted_target("other-link", lambda els: [e.text for e in els if e.tag in ("span", "a")]),
    "click-checkboxes": _checkboxes,
    "click-option": _option,
    "click-tab": _tab,
    "click-dialog": _dialog,  # only the close button ends it: a wrong click changes nothing
    "click-dialog-2": _dialog_2,
    "click-collapsible": _no_near_miss,  # early submit is its near miss
    "click-widget": _widget,
    "enter-text": _wrong_quoted_text("text"),
    "enter-password": _wrong_quoted_text("password"),
    "focus-text": _no_near_miss,  # one text field: every click on it succeeds
    "login-user": _login,
    "choose-list": _choose_list,
    "use-autocomplete": _autocomplete,
    "email-inbox": _email,
}
#: The families this policy knows (the same as the oracles').
NEAR_MISS_FAMILIES = tuple(_NEAR_MISSES)


def near_misses(task_id: str, goal: str, state: str, oracle_next: str,
                rng: np.random.Generator | None = None) -> list[NearMiss]:
    """The near misses possible on ``state``: ``(kind, wrong goal, None)`` or ``(kind, None, action)``.

    Args:
        task_id: the MiniWoB family.
        goal: the episode's real goal.
        state: the page's element lines.
        oracle_next: the oracle's (right) action here; no one-step mistake equal to it is offered
            (early submit where Submit is already right, button TWO once ONE is clicked).
        rng: draws the wrong texts and labels.
    """
    rng = rng if rng is not None else np.random.default_rng()
    if task_id not in _NEAR_MISSES:
        raise KeyError(f"no MiniWoB near-miss generator for {task_id!r}; known: {sorted(_NEAR_MISSES)}")
    els = parse_state(state)
    try:
        out = list(_NEAR_MISSES[task_id](goal, els, rng))
    except (AttributeError, StopIteration, IndexError, TypeError):  # the page is not the family's
        out = []
    label = _SUBMIT_LABEL.get(task_id)
    if label is not None:
        try:
            submit = _submit(els, label)
        except OracleError:
            submit = None
        if submit is not None:
            out.append(("early-submit", None, submit))
    return [m for m in out if m[2] != oracle_next]  # a "mistake" that is the right action is none


class NearMissPolicy:
    """The oracle with one near miss an episode (see the module docstring).

    Args:
        seed: seeds the choice of step, kind and wrong text.
        recover: probability of returning to the real goal after a wrong-goal mistake (a
            one-step mistake is always followed by the oracle on the real goal).

    ``step_extra()`` after ``act()`` gives ``{"near_miss": kind}`` on the step where the
    episode first leaves the oracle's path, so the data records which mistake it holds.
    Where the oracle cannot read the page, a random admissible action is played (counted in
    ``fallbacks``), as :class:`~dreamgym_env.domains.miniwob.oracles.OraclePolicy` does.
    """

    name = "near-miss"

    def __init__(self, seed: int | None = None, recover: float = 0.2):
        if not 0.0 <= recover <= 1.0:
            raise ValueError(f"recover must be in [0, 1], got {recover}")
        self.recover = recover
        self.fallbacks = 0
        self.rng = np.random.default_rng(seed)
        self._random = RandomPolicy(None if seed is None else seed + 1)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._random.reset(None if seed is None else seed + 1)
        self.history: list[str] = []
        self.deviate_at: int | None = None
        self.kind: str | None = None      # the near miss of this episode, once chosen
        self.wrong_goal: str | None = None
        self.deviated = False             # the episode has left the oracle's path
        self.recovered = False            # ... and has gone back to the real goal
        self._extra: dict[str, Any] = {}

    def step_extra(self) -> dict[str, Any]:
        """What the last action was, for the transition's ``extra`` (empty on oracle steps)."""
        return dict(self._extra)

    def act(self, obs: str, info: Mapping[str, Any]) -> str:
        goal, _, state = parse_observation(obs)
        goal = str(info.get("goal") or goal)
        task_id = str(info["task_id"])
        self._extra = {}
        if self.deviate_at is None:
            self.deviate_at = int(self.rng.integers(_oracle_steps(task_id, goal)))
        try:
            right = oracle_action(task_id, goal, state, self.history)
        except OracleError:
            self.fallbacks += 1
            right = self._random.act(obs, info)
        action = right
        if self.kind is None and len(self.history) >= self.deviate_at:
            options = near_misses(task_id, goal, state, right, self.rng)
            if options:  # none on this page: try again on the next step
                self.kind, self.wrong_goal, wrong_action = _pick(self.rng, options)
                action = wrong_action or action
        if self.wrong_goal is not None and not self.recovered:
            try:
                action = oracle_action(task_id, self.wrong_goal, state, self.history)
            except OracleError:
                pass  # the wrong goal does not fit this page: the right action stands
            if self.deviated and self.history and action == self.history[-1] != right:
                self.recovered = True  # the mistake did not end the episode and repeating it
                action = right         # would change nothing (e.g. a star toggled): play on
        if self.kind is not None and not self.deviated and action != right:
            self.deviated = True
            self.recovered = bool(self.rng.random() < self.recover)
            self._extra = {"near_miss": self.kind}
        self.history.append(action)
        return action
