"""Reasoning traces R_t for real transitions: derived by rule from what changed, or by an LLM.

The rule annotator needs element-line states (``[ref] tag "text" ...``, MiniWoB): it names the
element the action hit, how it relates to the goal, what changed on the page and whether the
goal is met. Every word comes from the recorded transition, so the trace is faithful. Domains
without such a rule use :class:`LLMAnnotator`, paper-style, through any backend.

Rule versions (:data:`RULE_VERSIONS`): ``v1`` says only when the typed text or the element
matches the goal's words (the shipped ``miniwob-v0`` model was trained on it); ``v2`` also says
when it matches none of them, so that a wrong click is explained by the comparison that makes
its reward 0, not only by the outcome; ``v3`` is ``v2`` with the goal's words first
("The goal asks for ..."), so that the model copies them from the goal before it names the element
and compares the two; when the element matches none of them (a Submit button, a wrong click), it
also says where the goal's words are on the page ("On the page, "bwm7v" is in [5] value, [7]
value."; "On the page, "GK" is by [10] unchecked; other boxes checked: [12]."), what the outcome
of a Submit depends on.
v3 reads the goal's targets whole (:func:`~dreamgym_env.domains.miniwob.serialize.goal_targets`)
where v1/v2 read the strings worth typing, compares tags for a goal that names a kind of
widget, and leaves out the list of changes v1/v2 write (the answer's patch says it right after;
14 tokens a step, ``benchmarks/token_budget.py``): its trace is the judgement and the outcome.
A model trained on ``v1`` was seen writing the clicked element's own text as "the goal's" word on
wrong clicks, and so rewarding them (docs/fidelity.md, "Why the closed loop is generous").
``v4`` is ``v3`` with the page's fields copied before the judgement when the element matches
none of the goal's words (a Submit, a wrong click): "Fields: [7] (username) "tula", [10]
(password) "A"." A model trained on v3 was seen writing that a goal word "is in [10] value" when
the field held something else (login-user, enter-text, choose-list near misses): copying a
field's value out of the page is a lookup the model does well, and it puts the two strings side
by side before the comparison that decides the reward.
``v5`` is ``v4`` with the judgements one element's text cannot make. For a
goal that orders its clicks ("Click button ONE, then click button TWO."), a click on a button
lists the buttons clicked so far and judges their order ("Buttons clicked: "ONE", then "TWO":
the goal's order."). In click-button-sequence the episode ends at the second button click and
succeeds only for the goal's order; v4's trace there said "The element matches the goal's "ONE"."
before 431 failed endings of 521 (v0 + v1 + v2), a judgement that disagrees with the outcome.
For email-inbox, a star or trash click in the inbox names the sender of its row, and a reply's
Send names its recipient, each against the goal's sender ("The reply goes to "Hesther": not the
goal's sender."); v4 said only that the icon or button matches none of the goal's words.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import replace
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from dreamgym_env.patch import line_ref, make_patch
from dreamgym_env.schema import Trajectory, Transition

logger = logging.getLogger(__name__)

#: Length cap of a reasoning trace (the output schema's ``reasoning_chars`` is 300).
MAX_REASONING_CHARS = 280
#: v4's cap: room for the fields beside the goal's words (login-user's trace is ~320 characters).
MAX_REASONING_CHARS_V4 = 400
_MAX_CHANGES = 4
#: Versions of the rule annotation (see the module docstring).
RULE_VERSIONS = ("v1", "v2", "v3", "v4", "v5")
#: Versions that read the goal's targets whole and judge case-sensitively (v4 is v3 + fields,
#: v5 is v4 + the order of clicks and an email's sender).
_TARGET_VERSIONS = ("v3", "v4", "v5")
#: Versions that copy the page's fields before judging a Submit or a wrong click.
_FIELD_VERSIONS = ("v4", "v5")
#: The version the shipped model was trained on.
DEFAULT_RULE_VERSION = "v1"


def check_rule_version(version: str) -> str:
    """``version`` if it is a known rule version, else a ValueError naming the known ones."""
    if version not in RULE_VERSIONS:
        raise ValueError(f"unknown rule version {version!r}; known: {', '.join(RULE_VERSIONS)}")
    return version


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _acted_ref(action: str) -> str | None:
    start, end = action.find("["), action.find("]")
    if start < 0 or end < start:
        return None
    return action[start + 1 : end].strip() or None


def _describe_change(before: str, after: str) -> str:
    """How one element line changed, in a few words."""
    from dreamgym_env.domains.miniwob.serialize import parse_line

    old, new = parse_line(before), parse_line(after)
    if old is None or new is None:
        return "changes"
    words = []
    if new.focused != old.focused:
        words.append("gets focus" if new.focused else "loses focus")
    if new.checked != old.checked:
        words.append("gets checked" if new.checked else "gets unchecked")
    if new.value != old.value:
        words.append(f"value becomes {json.dumps(_clip(new.value or '', 30), ensure_ascii=False)}")
    if new.text != old.text:
        words.append("text changes")
    if new.options != old.options:
        words.append("options change")
    if new.tag != old.tag:
        words.append(f"becomes a {new.tag}")
    return " and ".join(words) or "changes"


def _goal_terms(goal: str, version: str) -> list[str]:
    """The goal's words the trace compares with: v1/v2 the strings worth typing (capitalised
    words lose their digits, lower-case ones are missed), v3 the goal's targets whole."""
    from dreamgym_env.domains.miniwob.serialize import goal_targets, type_candidates

    return goal_targets(goal) if version in _TARGET_VERSIONS else type_candidates(goal, limit=8)


def _quoted_goal_terms(terms: Sequence[str], count: int = 2) -> str:
    """The goal's first ``count`` words, quoted and clipped, as the traces name them."""
    return ", ".join(json.dumps(_clip(m, 30), ensure_ascii=False) for m in terms[:count])


#: v3: a goal word the page spells otherwise (a jQuery UI dialog's "x" button reads "Close").
_PAGE_SPELLING = {"x": "Close"}


def _v3_text_has(text: str, term: str) -> bool:
    """v3's comparison of a goal word with an element's text: case-sensitive, as MiniWoB's
    checks are, and aware of :data:`_PAGE_SPELLING`."""
    return term in text or _PAGE_SPELLING.get(term) == text


def _goal_match(action: str, line: str, terms: Sequence[str], version: str) -> tuple[list[str], bool]:
    """A sentence on how the typed/selected string, or else the element's text, meets the goal's
    words ``terms``. v1 says only when it does; v2 also when it matches none of them; v3 names
    no words in that sentence (the trace named them first), compares case-sensitively as
    MiniWoB's checks do, counts the element's value as its text and knows
    :data:`_PAGE_SPELLING`. Returns the sentences and whether any word matched."""
    from dreamgym_env.domains.miniwob.serialize import parse_line

    argument = action.split("]", 1)[1].strip() if "]" in action else ""
    try:
        argument = json.loads(argument) if argument.startswith('"') else argument
    except json.JSONDecodeError:
        pass
    element = parse_line(line)
    v3 = version in _TARGET_VERSIONS
    own_text = (element.text or "") + (" " + element.value if v3 and element.value else "") if element else line
    subject, haystack = ("the text", str(argument)) if argument else ("the element", own_text)
    if v3:
        matched = [term for term in terms if term in haystack
                   or (not argument and element is not None and _v3_text_has(element.text or "", term))]
    else:
        matched = [term for term in terms if term.lower() in haystack.lower()]
    if not matched:
        if version == "v1" or not terms:  # v1 never states a non-match
            return [], False
        words = "" if v3 else f" of the goal's {_quoted_goal_terms(terms)}"
        return [f"{subject.capitalize()} matches none{words}."], False
    quoted = ", ".join(json.dumps(m, ensure_ascii=False) for m in matched[:2])
    return [f"{subject.capitalize()} matches the goal's {quoted}."], True


_BOXES = ("input_checkbox", "input_radio")


def _box_of_label(elements: Sequence[Any]) -> dict[str, Any]:
    """Label ref -> the checkbox or radio right after it (MiniWoB puts a box after its label)."""
    return {label.ref: box for label, box in zip(elements, elements[1:]) if label.tag == "label" and box.tag in _BOXES}


def _id_named_by_goal(element: Any, goal: str) -> str:
    """The element's id when the goal names it ("username" in "Enter the username ..."), else ''."""
    return element.hint[1] if element.hint and re.search(rf"\b{re.escape(element.hint[1])}\b", goal, re.I) else ""


def _goal_locations(lines: dict[str, str], terms: Sequence[str], goal: str) -> str | None:
    """Where the goal's words are on the page (case-sensitive): the elements whose value or text
    holds them (for a label that is the word, the checkbox or radio after it and whether that one is checked; for
    a field whose id the goal names, that id, e.g. "[10] value (password)"; a value that holds more
    than the word is quoted, e.g. "[5] value "Myron4"", so a text typed wrong is told from the
    word itself), then the boxes
    checked that no goal word labels (a Submit fails on those too). None when there are neither
    words nor boxes."""
    from dreamgym_env.domains.miniwob.serialize import parse_line

    elements = [element for element in map(parse_line, lines.values()) if element is not None]
    box_of = _box_of_label(elements)
    text_of = {element.ref: (element.text or "").strip() for element in elements}
    label_of = {box.ref: text_of[label_ref] for label_ref, box in box_of.items()}
    parts = []
    for term in terms:
        hits = []
        for element in elements:
            box = box_of.get(element.ref)
            if box is not None:  # a box's label must be the word itself
                if label_of[box.ref] == term:
                    hits.append(f"by [{box.ref}] {'checked' if box.checked else 'unchecked'}")
            elif element.value and term in element.value:
                named = _id_named_by_goal(element, goal)
                # a value that only holds the word is quoted: "Myron" is in [5] value "Myron4"
                other = "" if element.value == term else " " + json.dumps(_clip(element.value, 30), ensure_ascii=False)
                hits.append(f"[{element.ref}] value" + (f" ({named})" if named else "") + other)
            elif element.text and _v3_text_has(element.text, term):
                hits.append(f"[{element.ref}]")
        where = ", ".join(hits[:3]) + (" and more" if len(hits) > 3 else "") if hits else "nowhere"
        where = where if where.startswith(("by ", "nowhere")) else f"in {where}"
        parts.append(f"{json.dumps(_clip(term, 30), ensure_ascii=False)} is {where}")
    boxes = [element for element in elements if element.tag in _BOXES]
    others = [f"[{box.ref}]" for box in boxes if box.checked and label_of.get(box.ref, "") not in terms]
    if others:
        listed = ", ".join(others[:3]) + (" and more" if len(others) > 3 else "")
        parts.append(f"{'other boxes' if terms else 'boxes'} checked: {listed}")
    elif boxes and not terms:
        parts.append("no box is checked")
    return "On the page, " + "; ".join(parts) + "." if parts else None


#: Tags of the elements whose value a Submit is judged on (boxes are named by _goal_locations).
_FIELD_TAGS = ("input_text", "input_password", "input_email", "input_number", "input_search", "input_tel",
               "input_url", "input_date", "textarea", "select")
_MAX_FIELDS = 4


def _page_fields(lines: dict[str, str], goal: str) -> str | None:
    """v4: the page's fields and what each holds, in page order, e.g. ``Fields: [7] (username)
    "tula", [10] (password) "A".`` (a field is named by its id when the goal names that id;
    an empty one reads ``empty``); None when the page has no field."""
    from dreamgym_env.domains.miniwob.serialize import parse_line

    fields = [e for e in map(parse_line, lines.values()) if e is not None and e.tag in _FIELD_TAGS]
    if not fields:
        return None
    parts = []
    for e in fields[:_MAX_FIELDS]:
        named = _id_named_by_goal(e, goal)
        held = json.dumps(_clip(e.value, 30), ensure_ascii=False) if e.value else "empty"
        parts.append(f"[{e.ref}]" + (f" ({named})" if named else "") + f" {held}")
    more = " and more" if len(fields) > _MAX_FIELDS else ""
    return "Fields: " + ", ".join(parts) + more + "."


_WIDGET_GOAL = re.compile(r'^Click on an? "(\w+)" widget')


def _widget_match(goal: str, lines: dict[str, str], ref: str) -> list[str] | None:
    """For a goal that names a widget type (click-widget: ``Click on a "checkbox" widget.``),
    whether the acted element is one (a label counts as the checkbox or radio after it), and
    else which elements on the page are; None for any other goal."""
    from dreamgym_env.domains.miniwob.serialize import parse_line

    found = _WIDGET_GOAL.match(goal)
    if not found:
        return None
    kind = found.group(1).lower()
    elements = [element for element in map(parse_line, lines.values()) if element is not None]

    def is_kind(element: Any) -> bool:
        return element.tag in (kind, f"input_{kind}")

    acted = next((element for element in elements if element.ref == ref), None)
    box = _box_of_label(elements).get(ref)
    if acted is not None and is_kind(acted):
        return [f'The element is a "{kind}" widget.']
    if box is not None and is_kind(box):
        return [f'The element labels [{box.ref}], a "{kind}" widget.']
    refs = [f"[{element.ref}]" for element in elements if is_kind(element)]
    where = f"on the page, {', '.join(refs[:3])} {'is' if len(refs) == 1 else 'are'}" if refs else "none is on the page"
    return [f'The element is not a "{kind}" widget; {where}.']


def rule_reasoning(transition: Transition, version: str = DEFAULT_RULE_VERSION,
                   previous: Sequence[Transition] = ()) -> str:
    """A faithful reasoning trace for an element-line transition (see the module docstring);
    ``previous``: the episode's earlier steps, in order (rule v5 reads them)."""
    check_rule_version(version)
    t = transition
    lines = {line_ref(l): l.strip() for l in t.state.splitlines() if line_ref(l) is not None}
    ref = _acted_ref(t.action)
    verb = t.action.split(" ", 1)[0]
    parts: list[str] = []
    if not t.valid_action:
        where = f"[{ref}] is not on the page" if ref and ref not in lines else f"'{verb}' cannot act here"
        parts.append(f"The action is invalid: {where}.")
    elif ref and ref in lines:
        target = _clip(lines[ref], 70)
        terms = _goal_terms(t.goal, version)
        if version in _TARGET_VERSIONS and terms:
            parts.append(f"The goal asks for {_quoted_goal_terms(terms, len(terms))}.")
        parts.append(f"{verb.capitalize()} acts on {target}.")
        widget = _widget_match(t.goal, lines, ref) if version in _TARGET_VERSIONS else None
        if widget is not None:  # the goal names a kind of element, not its text
            parts += widget
        else:
            match, matched = _goal_match(t.action, lines[ref], terms, version)
            parts += match
            page = _goal_locations(lines, terms, t.goal) if version in _TARGET_VERSIONS and not matched else None
            fields = _page_fields(lines, t.goal) if version in _FIELD_VERSIONS and not matched else None
            if fields:
                parts.append(fields)  # the values themselves, copied before they are judged
            if page:
                parts.append(page)  # what a Submit or a wrong click is judged against
        if version == "v5":  # judgements one step's element cannot make alone
            extra = _click_order(t, lines[ref], previous, terms) or _email_sender(t, lines, ref)
            if extra:
                parts.append(extra)
    else:
        parts.append(f"{verb.capitalize()} acts on the page.")
    if t.reward > 0:
        outcome = "The goal is met: reward 1, the episode ends."
    elif t.done:
        outcome = "The episode ends without meeting the goal: reward 0."
    else:
        outcome = "The goal is not met yet."
    if version in _TARGET_VERSIONS:  # the judgement alone: the patch that follows says what changed
        room = (MAX_REASONING_CHARS_V4 if version in _FIELD_VERSIONS else MAX_REASONING_CHARS) - len(outcome) - 1
        return f"{_clip(' '.join(parts), room)} {outcome}"
    parts.append(_describe_changes(t, lines))
    return _clip(" ".join(parts + [outcome]), MAX_REASONING_CHARS)


#: A goal that orders its clicks ("Click button ONE, then click button TWO.").
_ORDERED_GOAL = re.compile(r",? then click", re.IGNORECASE)


def _click_order(t: Transition, line: str, previous: Sequence[Transition], terms: Sequence[str]) -> str | None:
    """Rule v5: for a goal that orders its clicks, a click on a button lists the buttons clicked
    so far (earlier steps' clicks on buttons, then this one) and, from two on, whether that is the
    order the goal names: 'Buttons clicked: "ONE", then "TWO": the goal's order.'"""
    from dreamgym_env.domains.miniwob.serialize import parse_line

    if len(terms) < 2 or not _ORDERED_GOAL.search(t.goal) or not t.action.startswith("click"):
        return None
    current = parse_line(line)
    if current is None or current.tag != "button":
        return None
    texts = []
    for step in previous:
        acted = _acted_line(step) if step.action.startswith("click") and step.valid_action else None
        element = parse_line(acted) if acted else None
        if element is not None and element.tag == "button":
            texts.append(element.text)
    texts.append(current.text)
    listed = ", then ".join(json.dumps(_clip(x, 30), ensure_ascii=False) for x in texts)
    if len(texts) < 2:
        return f"Buttons clicked: {listed}."
    order = "the goal's order" if list(texts) == list(terms[: len(texts)]) else "not the goal's order"
    return f"Buttons clicked: {listed}: {order}."


#: An email-inbox goal and the sender it names.
_EMAIL_GOAL = re.compile(r"^Find the email by (.+?) and ")


def _email_sender(t: Transition, lines: dict[str, str], ref: str) -> str | None:
    """Rule v5, email-inbox: whose email a star or trash click in the inbox list acts on (the
    sender heading the icon's row), or to whom a reply goes (the name after "to:"), against the
    sender the goal names: 'The reply goes to "Hesther": not the goal's sender.' Both are on the
    page. (A forward's original sender is not: the forward form shows only its body, so that
    click keeps v4's trace.)"""
    from dreamgym_env.domains.miniwob.serialize import parse_line

    goal = _EMAIL_GOAL.match(t.goal)
    if goal is None or not t.action.startswith("click"):
        return None
    refs, rows = list(lines), list(lines.values())  # the page's element lines, in page order
    at = refs.index(ref)
    acted, who, kind = rows[at], None, ""
    if 'class="star"' in acted or 'class="trash"' in acted:  # a list row: sender, subject, body, trash, star
        start = at
        while start > 0 and not any(k in rows[start - 1] for k in ('class="star"', "h2 ", "open-search")):
            start -= 1
        head = parse_line(rows[start])
        if head is not None and head.tag == "div" and start + 3 < len(rows) and 'class="trash"' in rows[start + 3]:
            who, kind = head.text, "star" if 'class="star"' in acted else "trash"
    elif 'id="send-reply"' in acted:
        label = next((i for i, l in enumerate(rows) if l.endswith('label "to:"')), None)
        after = parse_line(rows[label + 1]) if label is not None and label + 1 < len(rows) else None
        who, kind = (after.text, "reply") if after is not None else (None, "")
    if not who:
        return None
    said = json.dumps(_clip(who, 30), ensure_ascii=False)
    sentence = f"The reply goes to {said}" if kind == "reply" else f"Its row is by {said}"
    wanted = next((k for k, words in _EMAIL_ACTIONS.items() if words in t.goal), None)
    if wanted != kind:
        return f"{sentence}, but the goal asks for {_EMAIL_ACTION_NAMES.get(wanted, 'something else')}: not the goal's action."
    return f"{sentence}: {'the goal' if who == goal.group(1) else 'not the goal'}'s sender."


#: What an email-inbox goal asks to do, by the words that say it, and how a trace names it.
_EMAIL_ACTIONS = {"star": "click the star icon", "trash": "click the trash icon", "reply": "reply to them",
                  "forward": "forward that email"}
_EMAIL_ACTION_NAMES = {"star": "the star icon", "trash": "the trash icon", "reply": "a reply", "forward": "a forward"}


def _acted_line(t: Transition) -> str | None:
    """The state line of the element ``t``'s action names, if any."""
    ref = _acted_ref(t.action)
    return next((l.strip() for l in t.state.splitlines() if ref is not None and line_ref(l) == ref), None)


def _describe_changes(t: Transition, lines: dict[str, str]) -> str:
    """What the action changed on the page, in words (rule v1 and v2)."""
    patch = make_patch(t.state, t.next_state)
    if t.next_state == t.state:
        return "Nothing changes."
    if patch is None:
        return "The whole page changes."
    after = {line_ref(l): l for l in t.next_state.splitlines() if line_ref(l) is not None}
    changes = []
    for entry in patch:
        if entry.startswith("-["):
            changes.append(f"{entry[1:]} disappears")
            continue
        r = line_ref(entry)
        changes.append(f"[{r}] appears" if r not in lines else f"[{r}] {_describe_change(lines[r], after[r])}")
    extra = len(changes) - _MAX_CHANGES
    text = "; ".join(changes[:_MAX_CHANGES]) + (f"; {extra} more change{'s' * (extra > 1)}" if extra > 0 else "")
    return text[0].upper() + text[1:] + "."


class LLMAnnotator:
    """Asks an experience-model backend to explain each transition (the paper's annotation).

    Args:
        backend: any :class:`~dreamgym_env.backends.base.ExperienceModel`.
        batch_size: transitions per backend call.
        max_tokens: token budget of one explanation.
    """

    SYSTEM = (
        "You explain transitions of a web environment. Given the goal, a page state, an action, "
        "what changed and the reward, say in one or two short sentences which element the action "
        'hit, what it changed and whether the goal is met and why. Answer JSON {"reasoning": "..."}.'
    )

    def __init__(self, backend, batch_size: int = 16, max_tokens: int = 96):
        self.backend = backend
        self.batch_size = batch_size
        self.max_tokens = max_tokens

    def _request(self, t: Transition):
        from dreamgym_env.backends.base import GenerationRequest

        patch = make_patch(t.state, t.next_state)
        change = json.dumps(patch, ensure_ascii=False) if patch is not None else repr(t.next_state[:600])
        user = (
            f"Goal: {t.goal}\nState:\n{t.state[:1500]}\nAction: {t.action}\n"
            f"Change: {change}\nReward: {int(t.reward)}, done: {str(t.done).lower()}, "
            f"valid action: {str(t.valid_action).lower()}"
        )
        schema = {
            "type": "object",
            "properties": {"reasoning": {"type": "string", "maxLength": MAX_REASONING_CHARS}},
            "required": ["reasoning"],
            "additionalProperties": False,
        }
        return GenerationRequest(
            [{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": user}],
            max_tokens=self.max_tokens, json_schema=schema, metadata={"kind": "annotation"},
        )

    def __call__(self, transitions: Sequence[Transition]) -> list[str]:
        """One reasoning trace per transition; a failed or malformed answer falls back to the rule."""
        from dreamgym_env.schema import _load_json_object

        out: list[str] = []
        for start in range(0, len(transitions), self.batch_size):
            chunk = transitions[start : start + self.batch_size]
            results = self.backend.generate([self._request(t) for t in chunk])
            for t, result in zip(chunk, results):
                text = None
                if result.error is None:
                    try:
                        text = _load_json_object(result.text).get("reasoning")
                    except Exception:  # noqa: BLE001 - malformed output: logged, then the rule
                        text = None
                if not isinstance(text, str) or not text.strip():
                    logger.warning("annotation of %s step %d failed (%s); using the rule",
                                   t.trajectory_id, t.step, result.error or "malformed output")
                    text = rule_reasoning(t)
                out.append(_clip(text.strip(), MAX_REASONING_CHARS))
        return out


def annotate_trajectories(
    trajectories: Iterable[Trajectory],
    method: str = "rule",
    backend=None,
    overwrite: bool = False,
    progress: bool = False,
    rule_version: str = DEFAULT_RULE_VERSION,
) -> list[Trajectory]:
    """Fill ``reasoning`` of every transition (kept when present, unless ``overwrite``).

    Args:
        method: ``"rule"`` (element-line states) or ``"llm"`` (needs ``backend``).
        rule_version: version of the rule annotation (:data:`RULE_VERSIONS`).
    """
    check_rule_version(rule_version)
    if method not in ("rule", "llm"):
        raise ValueError(f"method must be 'rule' or 'llm', got {method!r}")
    if method == "llm" and backend is None:
        raise ValueError("method='llm' needs a backend")
    trajectories = list(trajectories)
    todo = [t for tr in trajectories for t in tr.transitions if overwrite or not t.reasoning]
    if method == "rule":
        earlier = {id(t): tr.transitions[:k] for tr in trajectories for k, t in enumerate(tr.transitions)}
        texts = [rule_reasoning(t, rule_version, earlier[id(t)])
                 for t in tqdm(todo, desc="annotate", disable=not progress)]
    else:
        annotator = LLMAnnotator(backend)
        texts = []
        for start in tqdm(range(0, len(todo), annotator.batch_size), desc="annotate", disable=not progress):
            texts += annotator(todo[start : start + annotator.batch_size])
    new = {id(t): text for t, text in zip(todo, texts)}
    return [
        replace(tr, transitions=[replace(t, reasoning=new.get(id(t), t.reasoning)) for t in tr.transitions])
        for tr in trajectories
    ]


def add_annotate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``dreamgym annotate``: add reasoning traces to a trajectories file."""
    parser = sub.add_parser("annotate", help="add reasoning traces R_t to real transitions (rule or LLM)")
    parser.add_argument("input", help="trajectories JSONL(.gz), e.g. from dreamgym collect")
    parser.add_argument("-o", "--output", required=True, help="where to write the annotated JSONL(.gz)")
    parser.add_argument("--method", choices=["rule", "llm"], default="rule",
                        help="rule: derived from the DOM change and the reward (element-line states); "
                        "llm: asked of --backend")
    parser.add_argument("--backend", default=None, help="backend spec for --method llm (http://host:port/v1, "
                        "transformers:DIR); default: DREAMGYM_* variables, else the embedded model")
    parser.add_argument("--overwrite", action="store_true", help="replace reasoning already present")
    parser.add_argument("--rule-version", choices=RULE_VERSIONS, default=DEFAULT_RULE_VERSION,
                        help="v1: says when the element/text matches the goal; v2: also when it matches none; v3: the goal's words first and where they are on the page; v4: v3 + the page's fields; v5: v4 + the order of clicks and an email's sender")
    parser.set_defaults(func=_cmd_annotate)
    return parser


def _cmd_annotate(args: argparse.Namespace) -> int:
    from dreamgym_env.collect import read_trajectories, write_trajectories

    backend = None
    if args.method == "llm":
        from dreamgym_env.backends import make_backend

        backend = make_backend(args.backend)
    trajectories = annotate_trajectories(
        read_trajectories(args.input), args.method, backend, args.overwrite, progress=True,
        rule_version=args.rule_version,
    )
    write_trajectories(args.output, trajectories)
    n = sum(len(t.transitions) for t in trajectories)
    logger.info("annotated %d transitions of %d trajectories -> %s", n, len(trajectories), args.output)
    return 0
