"""The text action grammar shared by synthetic and real environments.

An action is one line such as ``click [12]``, ``type [7] "hello"`` or ``stop [answer]``. Each
domain picks the verbs it supports; ``describe()`` builds the prompt text from their help.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class ActionVerb:
    """One verb of the grammar: its usage, help text and argument pattern."""

    name: str
    usage: str
    help: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class ParsedAction:
    """A well-formed action: its verb and arguments (``ref``, ``text``, ``value``...)."""

    verb: str
    args: dict[str, str]
    raw: str


class InvalidActionError(ValueError):
    """An action string that the grammar does not accept (reported to the agent, not raised
    out of the env)."""


_REF = r"\[(?P<ref>[^\]\s]+)\]"
_QUOTED = r'(?P<text>"(?:[^"\\]|\\.)*")'
_BRACKETED = r"\[(?P<value>.*)\]"

VERBS: dict[str, ActionVerb] = {
    v.name: v
    for v in [
        ActionVerb("click", "click [ref]", "click the element [ref]", re.compile(rf"click {_REF}")),
        ActionVerb(
            "type",
            'type [ref] "text"',
            "replace the text of the field [ref] with text (a JSON string)",
            re.compile(rf"type {_REF} {_QUOTED}(?P<enter> enter)?"),
        ),
        ActionVerb("hover", "hover [ref]", "hover over the element [ref]", re.compile(rf"hover {_REF}")),
        ActionVerb("select", 'select [ref] "option"', "choose option in the list [ref]", re.compile(rf"select {_REF} {_QUOTED}")),
        ActionVerb("press", "press [keys]", "press a key combination, e.g. press [Enter]", re.compile(rf"press {_BRACKETED}")),
        ActionVerb("scroll", "scroll [up|down]", "scroll the page", re.compile(r"scroll \[(?P<value>up|down)\]")),
        ActionVerb("goto", "goto [url]", "open the url in the current tab", re.compile(rf"goto {_BRACKETED}")),
        ActionVerb("go_back", "go_back", "go to the previous page", re.compile(r"go_back")),
        ActionVerb("go_forward", "go_forward", "go to the next page", re.compile(r"go_forward")),
        ActionVerb("new_tab", "new_tab", "open a new tab", re.compile(r"new_tab")),
        ActionVerb("tab_focus", "tab_focus [index]", "switch to tab index", re.compile(r"tab_focus \[(?P<value>\d+)\]")),
        ActionVerb("close_tab", "close_tab", "close the current tab", re.compile(r"close_tab")),
        ActionVerb("stop", "stop [answer]", "end the task, with the answer if one is asked for", re.compile(rf"stop {_BRACKETED}|stop")),
    ]
}


class ActionGrammar:
    """The verbs of one domain: parses action strings and describes them for prompts."""

    def __init__(self, verbs: Sequence[str]):
        unknown = [v for v in verbs if v not in VERBS]
        if unknown:
            raise ValueError(f"Unknown action verbs {unknown}; known: {sorted(VERBS)}")
        self.verbs = [VERBS[v] for v in verbs]

    def describe(self) -> str:
        """One line per verb, for the experience model's and the agent's prompts."""
        return "\n".join(f"{v.usage}: {v.help}" for v in self.verbs)

    def parse(self, action: str) -> ParsedAction:
        """Parse one action string.

        Raises:
            InvalidActionError: naming what is wrong and the accepted forms.
        """
        if not isinstance(action, str):
            raise InvalidActionError(f"action must be a string, got {type(action).__name__}")
        text = action.strip()
        verb_name = text.split(" ", 1)[0].split("[", 1)[0]
        verb = next((v for v in self.verbs if v.name == verb_name), None)
        if verb is None:
            raise InvalidActionError(
                f"unknown action {verb_name[:40]!r}; use one of: "
                + ", ".join(v.usage for v in self.verbs)
            )
        match = verb.pattern.fullmatch(text)
        if match is None:
            raise InvalidActionError(f"malformed {verb.name} action {text[:80]!r}; expected {verb.usage}")
        args = {k: v for k, v in match.groupdict().items() if v is not None}
        if "text" in args:
            try:
                args["text"] = json.loads(args["text"])
            except json.JSONDecodeError as exc:
                raise InvalidActionError(f"bad string in {text[:80]!r}: {exc.msg}") from exc
        if "enter" in args:
            args["enter"] = "true"
        return ParsedAction(verb.name, args, text)

    def examples(self, refs: Sequence[str] = ("1", "2", "3")) -> list[str]:
        """Well-formed example actions (used by the action space's ``sample()``)."""
        out = []
        for v in self.verbs:
            for ref in refs:
                usage = v.usage.replace("[ref]", f"[{ref}]")
                out.append(usage.replace('"text"', '"hello"').replace('"option"', '"A"')
                           .replace("[up|down]", "[down]").replace("[answer]", "[done]")
                           .replace("[keys]", "[Enter]").replace("[url]", "[http://localhost]")
                           .replace("[index]", "[0]"))
        return sorted(set(out))
