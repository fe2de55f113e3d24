"""Scripted policies for MiniWoB: an oracle per family, random, and their ε-mixture.

The oracles read only what an agent reads: the utterance, the state text (element lines) and the
actions already taken in the episode. They are stateless functions of that input, so after a
random detour (``mixed``) they pick up from wherever the page is.

>>> policy = make_policy("mixed", epsilon=0.2, seed=0)
>>> policy.reset()
>>> action = policy.act(obs, info)   # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dreamgym_env.domains.miniwob.serialize import Element, admissible_actions, parse_state

Oracle = Callable[[str, list[Element], Sequence[str]], str]

__all__ = [
    "ORACLES", "MixedPolicy", "OraclePolicy", "RandomPolicy", "make_policy", "oracle_action",
    "parse_observation",
]


def parse_observation(obs: str) -> tuple[str, str, str]:
    """``(goal, last_action_error, state)`` of an observation made by ``Domain.format_observation``."""
    head, sep, state = obs.partition("\nState:\n")
    if not sep:
        head, _, state = obs.partition("State:\n")
    goal, error = head, ""
    if "\nLast action error: " in head:
        goal, _, error = head.partition("\nLast action error: ")
    return goal.removeprefix("Goal: "), error, state


# -- helpers -----------------------------------------------------------------------------------------


def _click(e: Element) -> str:
    return f"click [{e.ref}]"


def _type(e: Element, text: str) -> str:
    return f"type [{e.ref}] {_q(text)}"


def _q(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def _find(elements: Sequence[Element], text: str, tags: Sequence[str] | None = None) -> Element | None:
    """The first element with exactly ``text`` (then case-insensitively), among ``tags``."""
    pool = [e for e in elements if tags is None or e.tag in tags]
    for e in pool:
        if e.text == text:
            return e
    low = text.lower()
    return next((e for e in pool if e.text.lower() == low), None)


def _with_hint(elements: Sequence[Element], value: str) -> Element | None:
    return next((e for e in elements if e.hint is not None and e.hint[1] == value), None)


def _submit(elements: Sequence[Element], label: str = "Submit") -> str:
    button = _find(elements, label, ("button", "input_submit", "input_button")) or next(
        (e for e in elements if e.tag == "button"), None
    )
    if button is None:
        raise OracleError(f"no {label} button")
    return _click(button)


def _quoted(goal: str) -> list[str]:
    return re.findall(r"\"([^\"]*)\"", goal)


class OracleError(ValueError):
    """The oracle cannot read the page (a predicted or unexpected state)."""


def _labelled(elements: Sequence[Element], input_tag: str) -> list[tuple[str, Element]]:
    """(label text, input) pairs: each input of ``input_tag`` with the label line before it."""
    pairs = []
    for i, e in enumerate(elements):
        if e.tag == input_tag and i > 0 and elements[i - 1].tag == "label":
            pairs.append((elements[i - 1].text, e))
    return pairs


# -- one oracle per family ------------------------------------------------------------------------------


def _click_test(goal: str, els: list[Element], history: Sequence[str]) -> str:
    return _click(next(e for e in els if e.tag == "button"))


def _click_test_2(goal: str, els: list[Element], history: Sequence[str]) -> str:
    name = re.search(r"Click button (\w+)", goal).group(1)
    return _click(_find(els, name, ("button",)))


def _click_button(goal: str, els: list[Element], history: Sequence[str]) -> str:
    return _click(_find(els, _quoted(goal)[0], ("button",)))


def _click_button_sequence(goal: str, els: list[Element], history: Sequence[str]) -> str:
    one, two = _find(els, "ONE", ("button",)), _find(els, "TWO", ("button",))
    return _click(two if _click(one) in history else one)


def _click_link(goal: str, els: list[Element], history: Sequence[str]) -> str:
    word = _quoted(goal)[0]
    link = next((e for e in els if e.tag in ("span", "a") and e.text == word), None)
    return _click(link or _find(els, word, ("span", "a")))


def _click_checkboxes(goal: str, els: list[Element], history: Sequence[str]) -> str:
    names = re.match(r"Select (.*) and click Submit\.", goal).group(1)
    wanted = set() if names == "nothing" else set(names.split(", "))
    for label, box in _labelled(els, "input_checkbox"):
        if box.checked != (label in wanted):
            return _click(box)
    return _submit(els)


def _click_option(goal: str, els: list[Element], history: Sequence[str]) -> str:
    name = re.match(r"Select (.*) and click Submit\.", goal).group(1)
    for label, radio in _labelled(els, "input_radio"):
        if label == name and not radio.checked:
            return _click(radio)
    return _submit(els)


def _click_tab(goal: str, els: list[Element], history: Sequence[str]) -> str:
    tab = re.search(r"Tab #\d+", goal).group(0)
    return _click(_find(els, tab, ("a",)))


def _click_dialog(goal: str, els: list[Element], history: Sequence[str]) -> str:
    return _click(_find(els, "Close", ("button",)))


def _click_dialog_2(goal: str, els: list[Element], history: Sequence[str]) -> str:
    label = _quoted(goal)[0]
    return _click(_find(els, "Close" if label == "x" else label, ("button",)))


def _click_collapsible(goal: str, els: list[Element], history: Sequence[str]) -> str:
    header = next(e for e in els if e.tag == "h3")
    expanded = any(e.tag not in ("h3", "button") and e.text for e in els)
    return _submit(els) if expanded else _click(header)


_WIDGET_TAGS = {"radio": "input_radio", "checkbox": "input_checkbox", "text": "input_text",
                "textarea": "textarea", "button": "button"}


def _click_widget(goal: str, els: list[Element], history: Sequence[str]) -> str:
    tag = _WIDGET_TAGS[_quoted(goal)[0]]
    return _click(next(e for e in els if e.tag == tag))


def _fill_then_submit(els: list[Element], fields: list[tuple[Element, str]], button: str = "Submit") -> str:
    for field, text in fields:
        if (field.value or "") != text:
            return _type(field, text)
    return _submit(els, button)


def _enter_text(goal: str, els: list[Element], history: Sequence[str]) -> str:
    field = next(e for e in els if e.is_text_field)
    return _fill_then_submit(els, [(field, _quoted(goal)[0])])


def _enter_password(goal: str, els: list[Element], history: Sequence[str]) -> str:
    password = _quoted(goal)[0]
    return _fill_then_submit(els, [(e, password) for e in els if e.tag == "input_password"])


def _focus_text(goal: str, els: list[Element], history: Sequence[str]) -> str:
    return _click(next(e for e in els if e.is_text_field))


def _login_user(goal: str, els: list[Element], history: Sequence[str]) -> str:
    user, password = _quoted(goal)[:2]
    username = next(e for e in els if e.tag == "input_text")
    secret = next(e for e in els if e.tag == "input_password")
    return _fill_then_submit(els, [(username, user), (secret, password)], "Login")


def _choose_list(goal: str, els: list[Element], history: Sequence[str]) -> str:
    item = re.match(r"Select (.*) from the list", goal).group(1)
    select = next(e for e in els if e.tag == "select")
    if select.value != item:
        return f"select [{select.ref}] {_q(item)}"
    return _submit(els)


def _use_autocomplete(goal: str, els: list[Element], history: Sequence[str]) -> str:
    quoted = _quoted(goal)
    prefix, suffix = quoted[0], (quoted[1] if len(quoted) > 1 else "")
    field = next(e for e in els if e.is_text_field)
    value = field.value or ""
    if value.startswith(prefix) and value.endswith(suffix):
        return _submit(els)
    for e in els:
        if e.ref != field.ref and e.tag in ("div", "li", "a") and e.text.startswith(prefix) and e.text.endswith(suffix):
            return _click(e)
    return _type(field, prefix)


_EMAIL = re.compile(r"Find the email by (?P<sender>.+?) and (?P<task>.*)\.$")


def _email_inbox(goal: str, els: list[Element], history: Sequence[str]) -> str:
    match = _EMAIL.match(goal)
    sender, task = match.group("sender"), match.group("task")
    if task.startswith("reply"):
        action, payload = "reply", _quoted(goal)[0]
    elif task.startswith("forward"):
        action, payload = "forward", re.search(r"forward that email to (.+)$", task).group(1)
    elif "trash" in task:
        action, payload = "delete", ""
    else:
        action, payload = "important", ""

    send_reply, send_forward = _with_hint(els, "send-reply"), _with_hint(els, "send-forward")
    if send_reply is not None:  # writing a reply
        box = next(e for e in els if e.tag == "textarea")
        return _type(box, payload) if (box.value or "") != payload else _click(send_reply)
    if send_forward is not None:  # writing a forward
        to = next(e for e in els if e.tag == "input_text")
        return _type(to, payload) if (to.value or "") != payload else _click(send_forward)
    close_email = _with_hint(els, "close-email")
    if close_email is not None:  # reading one email
        if _find(els, sender, ("div",)) is None:
            return _click(close_email)
        if action in ("reply", "forward"):
            return _click(_find(els, action.capitalize(), ("div",)))
        icon = next(e for e in els if e.hint == ("class", "trash" if action == "delete" else "star"))
        return _click(icon)
    cancel = _with_hint(els, "search-cancel")
    if cancel is not None:
        return _click(cancel)
    # the inbox: the sender's first email, or the icon of its row
    index = next(i for i, e in enumerate(els) if e.tag == "div" and e.text == sender)
    if action in ("reply", "forward"):
        return _click(els[index])
    icon = next(e for e in els[index:] if e.hint == ("class", "trash" if action == "delete" else "star"))
    return _click(icon)


ORACLES: dict[str, Oracle] = {
    "click-test": _click_test,
    "click-test-2": _click_test_2,
    "click-button": _click_button,
    "click-button-sequence": _click_button_sequence,
    "click-link": _click_link,
    "click-checkboxes": _click_checkboxes,
    "click-option": _click_option,
    "click-tab": _click_tab,
    "click-dialog": _click_dialog,
    "click-dialog-2": _click_dialog_2,
    "click-collapsible": _click_collapsible,
    "click-widget": _click_widget,
    "enter-text": _enter_text,
    "enter-password": _enter_password,
    "focus-text": _focus_text,
    "login-user": _login_user,
    "choose-list": _choose_list,
    "use-autocomplete": _use_autocomplete,
    "email-inbox": _email_inbox,
}


def oracle_action(task_id: str, goal: str, state: str, history: Sequence[str] = ()) -> str:
    """The oracle's action for family ``task_id`` on ``state``.

    Raises:
        KeyError: no oracle for this family.
        OracleError: the state does not look like the family's page.
    """
    oracle = ORACLES.get(task_id)
    if oracle is None:
        raise KeyError(f"no MiniWoB oracle for {task_id!r}; known: {sorted(ORACLES)}")
    try:
        return oracle(goal, parse_state(state), history)
    except (AttributeError, StopIteration, IndexError, TypeError) as exc:  # a regex or lookup found nothing
        raise OracleError(f"the {task_id} oracle cannot read this page ({type(exc).__name__}: {exc})") from exc


# -- policies ------------------------------------------------------------------------------------------


class RandomPolicy:
    """A uniformly random admissible action (``info["admissible_actions"]``, else computed
    from the observation); with probability ``invalid_rate`` a well-formed action the page
    rejects (an element that is not there, an option the list lacks), so that data shows
    ``valid_action=False`` too."""

    name = "random"

    def __init__(self, seed: int | None = None, invalid_rate: float = 0.0):
        if not 0.0 <= invalid_rate <= 1.0:
            raise ValueError(f"invalid_rate must be in [0, 1], got {invalid_rate}")
        self.rng = np.random.default_rng(seed)
        self.invalid_rate = invalid_rate
        self.history: list[str] = []

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.history = []

    def act(self, obs: str, info: Mapping[str, Any]) -> str:
        if self.invalid_rate and self.rng.random() < self.invalid_rate:
            action = self._invalid(parse_state(parse_observation(obs)[2]))
            self.history.append(action)
            return action
        actions = info.get("admissible_actions")
        if not actions:
            goal, _, state = parse_observation(obs)
            actions = admissible_actions(state, goal) or ["click [4]"]
        action = str(actions[int(self.rng.integers(len(actions)))])
        self.history.append(action)
        return action


    def _invalid(self, elements: list[Element]) -> str:
        refs = [int(e.ref) for e in elements if e.ref.isdigit()]
        missing = (max(refs) if refs else 0) + 50 + int(self.rng.integers(50))
        choices = [f"click [{missing}]", f"type [{missing}] \"hello\""]
        choices += [f"select [{e.ref}] \"Atlantis\"" for e in elements if e.tag == "select"]
        return choices[int(self.rng.integers(len(choices)))]


class OraclePolicy:
    """The family's oracle (see :data:`ORACLES`); a random admissible action when it cannot
    read the page (counted in ``fallbacks``)."""

    name = "oracle"

    def __init__(self, seed: int | None = None):
        self._random = RandomPolicy(seed)
        self.history: list[str] = []
        self.fallbacks = 0

    def reset(self, seed: int | None = None) -> None:
        self._random.reset(seed)
        self.history = []

    def act(self, obs: str, info: Mapping[str, Any]) -> str:
        goal, _, state = parse_observation(obs)
        try:
            action = oracle_action(str(info["task_id"]), str(info.get("goal") or goal), state, self.history)
        except OracleError:
            self.fallbacks += 1
            action = self._random.act(obs, info)
        self.history.append(action)
        return action


class MixedPolicy:
    """The oracle with probability ``1 - epsilon``, else a random action, so the data holds
    failures and recoveries as well as clean solutions. The random action is admissible, or
    with probability ``invalid_rate`` one the page rejects (see :class:`RandomPolicy`)."""

    name = "mixed"

    def __init__(self, epsilon: float = 0.2, seed: int | None = None, invalid_rate: float = 0.1):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        self.oracle = OraclePolicy(None if seed is None else seed + 1)
        self.random = RandomPolicy(None if seed is None else seed + 2, invalid_rate=invalid_rate)
        self.history: list[str] = []

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.oracle.reset(None if seed is None else seed + 1)
        self.random.reset(None if seed is None else seed + 2)
        self.history = []

    def act(self, obs: str, info: Mapping[str, Any]) -> str:
        self.oracle.history = self.history  # the oracle sees the random detours too
        if self.rng.random() < self.epsilon:
            action = self.random.act(obs, info)
            self.history.append(action)
            return action
        return self.oracle.act(obs, info)


def make_policy(name: str, *, epsilon: float = 0.2, seed: int | None = None, invalid_rate: float | None = None,
                recover: float = 0.2) -> Any:
    """``"oracle"``, ``"random"``, ``"mixed"`` (oracle with probability ``1 - epsilon``) or
    ``"near-miss"`` (the oracle with one plausible mistake an episode, see
    :class:`~dreamgym_env.domains.miniwob.near_miss.NearMissPolicy`).

    ``invalid_rate``: share of rejected actions among the random ones (default 0 for
    ``random``, 0.1 for ``mixed``). ``recover``: near-miss episodes that go back to the real
    goal after the mistake."""
    if name == "oracle":
        return OraclePolicy(seed)
    if name == "random":
        return RandomPolicy(seed, invalid_rate=invalid_rate or 0.0)
    if name == "mixed":
        return MixedPolicy(epsilon, seed, invalid_rate=0.1 if invalid_rate is None else invalid_rate)
    if name == "near-miss":
        from dreamgym_env.domains.miniwob.near_miss import NearMissPolicy

        return NearMissPolicy(seed, recover=recover)
    raise ValueError(f"Unknown policy {name!r}; use oracle, random, mixed or near-miss")
