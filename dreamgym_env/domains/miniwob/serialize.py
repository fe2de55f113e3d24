"""MiniWoB page state as text: one element line per visible, relevant element.

A state is what the agent and the experience model read::

    [4] div "cursus dis justo"
    [6] button "Ok"
    [11] input_text value="Kasie" focused
    [12] select value="Leann" options=["Dacey","Leann","Ophelia"]
    [16] span class="star"
    [21] input_checkbox checked

Each line is ``[ref] tag`` followed by, in this order and only when present: the element's own
text (a JSON string), ``value=`` (text fields and selects), ``options=`` (a JSON list, for
``<select>``), ``id=`` or ``class=`` (a hint for elements without text, e.g. icons), and the
flags ``checked`` and ``focused``.

Refs are MiniWoB's own element refs (``data-wob_ref``): assigned in document order when an
element is first seen in an episode and kept while it lives, so they are stable within an
episode and identical for the same page. Lines are sorted by ref, so an element that appears
later (a menu, an expanded section) comes after the existing ones and every next state is
expressible as a patch (see :mod:`dreamgym_env.patch`). Invisible elements (zero size) are not
in MiniWoB's DOM dump; containers without text of their own are left out, their text nodes
are joined into their line.

Everything here works on text alone (no browser), so the synthetic twin can list admissible
actions of predicted states.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

#: Tags whose elements are always listed, with or without text.
INTERACTIVE_TAGS = ("button", "a", "select", "textarea", "input")
#: Tags never listed (layout only).
SKIPPED_TAGS = frozenset({"body", "br", "hr", "script", "style", "option", "canvas", "t"})
#: Text-entry input types, which ``type`` actions target.
TEXT_INPUTS = frozenset(
    {"input_text", "input_password", "input_email", "input_search", "input_tel", "input_url",
     "input_number", "textarea"}
)
#: The longest text kept on a line (longer text is cut with an ellipsis).
MAX_TEXT_CHARS = 120
#: Classes that carry no meaning for an agent (jQuery UI plumbing).
_NOISE_CLASS = re.compile(r"^(ui-|hide$|bold$|clicked$)")
#: Screen-reader-only elements (e.g. jQuery UI's "5 results are available" live region).
_HIDDEN_CLASS = "ui-helper-hidden-accessible"
#: Ids of MiniWoB's page frame (never listed unless they hold text).
_LAYOUT_IDS = frozenset({"wrap", "area", "query"})


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _hint(node: Mapping[str, Any]) -> tuple[str, str] | None:
    """``("id", …)`` or ``("class", …)`` naming an element that has no text."""
    element_id = str(node.get("id") or "")
    if element_id in _LAYOUT_IDS:
        return None
    if element_id and not element_id.startswith("ui-id-"):
        return "id", element_id
    classes = node.get("classes")
    if isinstance(classes, str):
        for name in classes.split():
            if not _NOISE_CLASS.match(name):
                return "class", name
    return None


@dataclass
class Element:
    """One element line of a state."""

    ref: str
    tag: str
    text: str = ""
    value: str | None = None
    options: list[str] | None = None
    hint: tuple[str, str] | None = None
    checked: bool = False
    focused: bool = False

    @property
    def is_text_field(self) -> bool:
        return self.tag in TEXT_INPUTS

    def line(self) -> str:
        parts = [f"[{self.ref}] {self.tag}"]
        if self.text:
            parts.append(_dumps(self.text))
        if self.value is not None:
            parts.append(f"value={_dumps(self.value)}")
        if self.options is not None:
            parts.append("options=" + json.dumps(self.options, ensure_ascii=False, separators=(",", ":")))
        if self.hint is not None:
            parts.append(f"{self.hint[0]}={_dumps(self.hint[1])}")
        if self.checked:
            parts.append("checked")
        if self.focused:
            parts.append("focused")
        return " ".join(parts)


def dom_elements(
    dom: Mapping[str, Any], selects: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Element]:
    """The listed elements of a MiniWoB DOM dump (``core.getDOMInfo()``), sorted by ref.

    Args:
        dom: the root of the dump.
        selects: for each ``<select>`` ref, ``{"value": selected text, "options": [texts]}``
            (closed selects hide their options from the dump).
    """
    selects = selects or {}
    out: list[Element] = []

    def visit(node: Mapping[str, Any]) -> None:
        tag = str(node.get("tag", "")).lower()
        children = node.get("children") or []
        if tag == "t" or _HIDDEN_CLASS in str(node.get("classes") or ""):
            return
        own_text = node.get("text")
        if own_text is None:  # mixed content: join its text nodes
            own_text = " ".join(str(c.get("text", "")) for c in children if str(c.get("tag", "")).lower() == "t")
        text = _clip(str(own_text or "")) if tag != "textarea" else ""  # its text is its value
        element_children = [c for c in children if str(c.get("tag", "")).lower() != "t"]
        interactive = tag.startswith(INTERACTIVE_TAGS)
        leaf = not element_children
        if tag not in SKIPPED_TAGS and (interactive or text or leaf):
            element = Element(ref=str(node["ref"]), tag=tag, text=text)
            value = node.get("value")
            if tag in ("input_checkbox", "input_radio"):
                element.checked = bool(value)
            elif tag.startswith("input") and tag not in ("input_button", "input_submit", "input_reset") or tag == "textarea":
                if value not in (None, ""):
                    element.value = _clip(str(value), 200)
            if tag == "select":
                info = selects.get(str(node["ref"])) or {}
                element.value = str(info.get("value", ""))
                element.options = [str(o) for o in info.get("options", [])]
            element.focused = bool(node.get("focused"))
            if not text:
                element.hint = _hint(node)
            if interactive or text or element.hint is not None or element.focused:
                out.append(element)
        for child in element_children:
            visit(child)

    visit(dom)
    out.sort(key=lambda e: int(e.ref))
    return out


def serialize_dom(dom: Mapping[str, Any], selects: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The state text of a MiniWoB DOM dump (see the module docstring for the format)."""
    return "\n".join(e.line() for e in dom_elements(dom, selects))


# -- parsing states back (text only) ------------------------------------------------------------

_HEAD = re.compile(r"^\s*\[(?P<ref>[^\]\s]+)\]\s+(?P<tag>[^\s\"]+)")
_KEY = re.compile(r"(?P<key>[A-Za-z_]+)=")
_DECODER = json.JSONDecoder()


def parse_line(line: str) -> Element | None:
    """The element of one state line, or None when the line is not ``[ref] tag ...``.

    Lenient: a predicted line with unknown attributes or broken JSON keeps what parses.
    """
    head = _HEAD.match(line)
    if head is None:
        return None
    element = Element(ref=head.group("ref"), tag=head.group("tag"))
    rest = line[head.end():]
    i = 0
    while i < len(rest):
        if rest[i].isspace():
            i += 1
            continue
        if rest[i] == '"':
            try:
                value, end = _DECODER.raw_decode(rest, i)
            except json.JSONDecodeError:
                break
            if not element.text and isinstance(value, str):
                element.text = value
            i = end
            continue
        key = _KEY.match(rest, i)
        if key is not None:
            try:
                value, end = _DECODER.raw_decode(rest, key.end())
            except json.JSONDecodeError:
                break
            name = key.group("key")
            if name == "value":
                element.value = str(value)
            elif name == "options" and isinstance(value, list):
                element.options = [str(v) for v in value]
            elif name in ("id", "class"):
                element.hint = (name, str(value))
            i = end
            continue
        word = re.match(r"\S+", rest[i:])
        assert word is not None
        if word.group(0) == "checked":
            element.checked = True
        elif word.group(0) == "focused":
            element.focused = True
        i += word.end()
    return element


def parse_state(state: str) -> list[Element]:
    """The elements of a state text, in order (lines that are not elements are skipped)."""
    return [e for e in (parse_line(l) for l in state.splitlines()) if e is not None]


# -- admissible actions ---------------------------------------------------------------------------

_QUOTED = re.compile(r"\"([^\"]+)\"")
_STOP_WORDS = frozenset(
    """a an and the to by in into of on with it them that this from or then your
    enter click select find press type submit focus expand close choose tab section button
    link list item text field fields box dialog email widget password username login
    ok cancel yes no""".split()
)


def type_candidates(goal: str, limit: int = 6) -> list[str]:
    """Strings worth typing for ``goal``: its quoted strings, then its capitalised names.

    E.g. ``Enter "Kasie" into the text field`` gives ``["Kasie"]``; ``Find the email by
    Cathrine and forward that email to Coletta.`` gives ``["Cathrine", "Coletta"]``.
    """
    found: list[str] = []

    def add(s: str) -> None:
        s = s.strip()
        if s and s not in found:
            found.append(s)

    for match in _QUOTED.finditer(goal):
        add(match.group(1))
    unquoted = _QUOTED.sub(" ", goal)
    for word in re.findall(r"[A-Za-z][A-Za-z'\-]+", unquoted):
        if word[0].isupper() and word.lower() not in _STOP_WORDS:
            add(word)
    return found[:limit]


_SELECT_ITEMS = re.compile(r"^Select (.+?)(?: from the list)? and click Submit\.?$")
_TAB_NAME = re.compile(r"\bTab #\d+")


def goal_targets(goal: str, limit: int = 6) -> list[str]:
    """The strings ``goal`` names as its targets, whole: what its success check compares the
    page with.

    :func:`type_candidates` plus what it cannot see: each item of a "Select A, b9, C and click
    Submit" list (any case, digits kept; "Select nothing" names none) and a "Tab #2". E.g.
    ``Select hYtWpy, GK, REe589N and click Submit.`` gives ``["hYtWpy", "GK", "REe589N"]``.
    """
    select = _SELECT_ITEMS.match(goal.strip())
    if select:
        items = [item.strip() for item in re.split(r",\s*", select.group(1)) if item.strip()]
        return [] if [item.lower() for item in items] == ["nothing"] else items[:limit]
    found = _TAB_NAME.findall(goal)
    found += [word for word in type_candidates(goal, limit=limit) if word not in found]
    return found[:limit]


def admissible_actions(state: str, goal: str = "", elements: Iterable[Element] | None = None) -> list[str]:
    """Every sensible action on ``state``: a click on each element (a ``select`` per option
    for lists), and for text fields a ``type`` of each string in :func:`type_candidates`."""
    candidates = type_candidates(goal) if goal else []
    actions: list[str] = []
    for element in elements if elements is not None else parse_state(state):
        if element.tag == "select":
            actions += [f"select [{element.ref}] {_dumps(o)}" for o in (element.options or [])]
            continue
        actions.append(f"click [{element.ref}]")
        if element.is_text_field:
            actions += [f"type [{element.ref}] {_dumps(c)}" for c in candidates]
    return actions


@dataclass
class StateDiff:
    """How two states differ, by ref (for statistics and tests)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def diff_states(before: str, after: str) -> StateDiff:
    a = {e.ref: e.line() for e in parse_state(before)}
    b = {e.ref: e.line() for e in parse_state(after)}
    return StateDiff(
        added=[r for r in b if r not in a],
        removed=[r for r in a if r not in b],
        changed=[r for r in b if r in a and a[r] != b[r]],
    )
